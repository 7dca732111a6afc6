"""The diffusers backend's entry in the backend table: `hf:<hub id>` or a local diffusers folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from refineloop.backends.table import Backend
from refineloop.errors import SettingsError

if TYPE_CHECKING:
    from refineloop.backends.image.protocol import ImageModel
    from refineloop.settings import RunSettings


def _claims(spec: str) -> bool:
    return spec.startswith("hf:") or Path(spec).expanduser().is_dir()


def _check(spec: str) -> None:
    hub_id = spec.removeprefix("hf:")
    if spec.startswith("hf:") and (not hub_id.strip() or any(ch.isspace() for ch in hub_id)):
        raise SettingsError("needs a hub id after hf: (e.g. hf:stabilityai/sdxl-turbo)")


def _load(spec: str, settings: RunSettings) -> ImageModel:
    from refineloop.backends.image.diffusers.loading import load_diffusers

    source = spec.removeprefix("hf:")
    return load_diffusers(
        source, device=settings.device or None, dtype=settings.dtype or None, loras=tuple(settings.lora)
    )


DIFFUSERS_BACKEND = Backend(
    name="diffusers",
    kind="image",
    syntax="hf:<hub id> | DIR",
    summary="a diffusers pipeline by hub id (from the local cache when offline) or a local diffusers folder",
    claims=_claims,
    check=_check,
    load=_load,
    loras=True,
    samplers=True,
)
