"""The ComfyUI backend's entry in the backend table: `comfyui:WORKFLOW.json`, reached at `--comfyui-url`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from refineloop.backends.image.comfyui.workflow import Placement, Workflow, WorkflowError, parse, place
from refineloop.backends.table import Backend, prefixed
from refineloop.errors import ModelError, SettingsError
from refineloop.redaction import reveal

if TYPE_CHECKING:
    from refineloop.backends.image.comfyui.model import ComfyImageModel
    from refineloop.settings import RunSettings

DEFAULT_URL = "http://127.0.0.1:8188"


def read_workflow(spec: str) -> tuple[Path, str, Workflow, Placement]:
    """The workflow file a spec names, its text, its nodes and where each value goes (SettingsError otherwise)."""
    name = spec.removeprefix("comfyui:").strip()
    if not name:
        raise SettingsError("needs an API-format workflow after comfyui: (e.g. comfyui:workflow_api.json)")
    path = Path(name).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError("names a workflow file that does not exist: check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"names a workflow file that cannot be read ({type(exc).__name__})") from None
    try:
        workflow = parse(text, path.name)
        return path, text, workflow, place(workflow)
    except WorkflowError as exc:
        raise SettingsError(f"is a workflow refineloop cannot fill in: {exc}") from None


def _check(spec: str) -> None:
    read_workflow(spec)


def _load(spec: str, settings: RunSettings) -> ComfyImageModel:
    from refineloop.backends.image.comfyui.client import ComfyClient
    from refineloop.backends.image.comfyui.model import ComfyImageModel

    try:
        path, text, workflow, placement = read_workflow(spec)
    except SettingsError as exc:
        raise ModelError(f"--image-model '{spec}' {exc}") from None
    for flag, value, slot in (
        ("--steps", settings.steps, placement.steps),
        ("--guidance", settings.guidance, placement.guidance),
        ("--draft-steps", settings.draft_steps or None, placement.steps),
    ):
        if value is not None and slot is None:
            raise ModelError(f"{flag} has no place in {path.name} (sampler {placement.sampler}): drop {flag}")
    if settings.draft_size and placement.size is None:
        raise ModelError(f"--draft-size has no place in {path.name} (it starts from a picture): drop --draft-size")
    if placement.size is None and (settings.width is None or settings.height is None):
        raise ModelError(
            f"{path.name} starts from a picture (node {placement.image.node if placement.image else '?'}): pass "
            "--width and --height for the images refineloop draws from text"
        )
    client = ComfyClient(reveal(settings.comfyui_url) or DEFAULT_URL)
    client.check()
    return ComfyImageModel(path, text, workflow, placement, client)


COMFYUI_BACKEND = Backend(
    name="comfyui",
    kind="image",
    syntax="comfyui:<workflow.json>",
    summary="your own ComfyUI workflow (API format), drawn by the ComfyUI server at --comfyui-url",
    claims=prefixed("comfyui"),
    check=_check,
    load=_load,
    options=("comfyui_url",),
)
