"""Provenance inside every image: what made it, written into the PNG itself and read back.

Each NN.png (and best.png, a byte copy of one) carries two kinds of PNG text chunk:

- `parameters`: the convention of the Stable Diffusion web UIs, which image viewers, galleries and model sites
  read back: the prompt, a `Negative prompt:` line, then one line of `Key: value` pairs (Steps, CFG scale, Seed,
  Size, Model, Denoising strength, ...). A value holding a comma, colon or line break is JSON-quoted, as those
  tools do.
- `refineloop`: one JSON object with the full record (the prompt as sent and without the subject anchor, the
  task, the LoRAs, the run id and the image's number), which `refineloop show` prints and `refineloop run --from`
  starts from.

Nothing time-dependent goes in: a step re-run after a crash must write the very same bytes again.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refineloop.backends.builtin import BACKENDS
from refineloop.backends.chat.text_safety import clean_model_text
from refineloop.backends.checks import validated
from refineloop.errors import RefineError
from refineloop.files.safe_io import NotAFile
from refineloop.run_folder.parameters_text import (
    a1111_text,
    image_identity,
    lora_label,
    lora_text,
    model_label,
    remake_command,
    scheduler_of,
    unused_fields,
)
from refineloop.run_folder.png_text import PngTextError, read_png_texts, typed_record
from refineloop.version import __version__
from refineloop.visible_text import visible

if TYPE_CHECKING:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from refineloop.backends.image.protocol import ImageModel, ImageRequest
    from refineloop.settings import RunSettings
    from refineloop.tasks import Task

RECORD_KEY = "refineloop"
PARAMETERS_KEY = "parameters"
FORMAT = "refineloop-provenance/1"


class ProvenanceError(RefineError):
    """An image cannot be read, or carries no provenance."""


class NoProvenanceError(ProvenanceError):
    """A readable picture that carries no provenance at all (a photo, a drawing, another tool's export)."""


def image_record(
    *,
    request: ImageRequest,
    image: Image.Image,
    seed: int,
    model: ImageModel,
    run_id: str,
    iteration: int,
    base_prompt: str,
    idea: str,
    task: Task,
    loras: list[str],
    scheduler: str = "",
) -> dict[str, Any]:
    """The provenance of one generated image (plain builtins, in a fixed key order). The model and LoRAs are
    named without their paths (refineloop.run_folder.parameters_text.image_identity); `loras` is what the run
    asked for, used where the model cannot say which LoRAs it carries."""
    from refineloop.settings import lora_scale

    identity = image_identity(model, scheduler)
    if not identity["loras"] and loras:
        identity["loras"] = [
            {"source": lora_label(source), "scale": scale, "hash": None} for source, scale in map(lora_scale, loras)
        ]
    defaults = _call_defaults(model, img2img=request.init_image is not None)
    task_fields = {k: v for k, v in task.to_dict().items() if k != "start_prompt"}
    return {
        "format": FORMAT,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "base_prompt": base_prompt,
        "idea": idea,
        "seed": seed,
        "steps": request.steps if request.steps is not None else defaults.get("steps"),
        "guidance": request.guidance if request.guidance is not None else defaults.get("guidance"),
        "width": image.width,
        "height": image.height,
        "strength": request.strength,
        # The name only: the folder may be moved, and the file sits next to this one.
        "init_image": Path(request.init_image).name if request.init_image else None,
        **identity,
        "run_id": run_id,
        "iteration": iteration,
        "task": task_fields,
        "software": f"refineloop {__version__}",
        **_server_part(model, request, seed),
    }


def _server_part(model: Any, request: ImageRequest, seed: int) -> dict[str, Any]:
    """A server backend's own record of an image (ComfyUI: the workflow's hash and the values filled in)."""
    probe = getattr(model, "provenance", None)
    return {"server": probe(request, seed)} if callable(probe) else {}


def _call_defaults(model: Any, *, img2img: bool) -> dict[str, Any]:
    """Steps and guidance the model uses when the run leaves them empty, where the backend can tell."""
    probe = getattr(model, "call_defaults", None)
    try:
        return dict(probe(img2img=img2img)) if callable(probe) else {}
    except (TypeError, ValueError, AttributeError):
        return {}


def parameters_text(record: dict[str, Any]) -> str:
    """The record in the `parameters` convention: prompt, negative prompt line, one line of settings (A1111's
    form: refineloop.run_folder.parameters_text)."""
    return a1111_text(record)


def png_info(record: dict[str, Any]) -> PngInfo:
    """The PNG text chunks for a record, to hand to Pillow's `save(..., pnginfo=...)`."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters_text(record))
    info.add_itxt(RECORD_KEY, json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    info.add_text("Software", str(record.get("software") or f"refineloop {__version__}"))
    return info


# --------------------------------------------------------------------------------------------- reading


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The record an image carries: refineloop's own JSON chunk, else one rebuilt from a `parameters` text.

    ProvenanceError (one line, saying what to do) for a missing or unreadable file, or one without either.
    """
    texts = untrusted_texts(path)
    raw = texts.get(RECORD_KEY)
    if raw is not None:
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("prompt"), str):
            return typed_record(record)
        raise ProvenanceError(f"{path} has a damaged refineloop record: use another image of the run (or its NN.json)")
    if PARAMETERS_KEY in texts:
        return parse_parameters(str(texts[PARAMETERS_KEY]))
    raise NoProvenanceError(
        f"{path} carries no provenance (no refineloop or parameters text): show an NN.png or best.png that "
        "refineloop wrote, or an image from a tool that writes a parameters text"
    )


def untrusted_texts(path: str | Path) -> dict[str, str]:
    """The text chunks of an image from anywhere, read without decoding its pixels and with size limits
    (refineloop.run_folder.png_text); ProvenanceError (one line) when it cannot be read."""
    where = Path(path).expanduser()
    try:
        return read_png_texts(where)
    except FileNotFoundError:
        raise ProvenanceError(f"{path} not found: check the path (e.g. runs/<run>/best.png)") from None
    except IsADirectoryError:
        raise ProvenanceError(f"{path} is a folder: name an image in it, such as {path}/best.png") from None
    except NotAFile:
        raise ProvenanceError(f"{path} is not a regular file (a FIFO or a device?): pass a PNG file") from None
    except PngTextError as exc:
        raise ProvenanceError(f"{path} is not a readable PNG ({exc}): pass a PNG file") from None
    except OSError as exc:
        raise ProvenanceError(f"{path} cannot be read ({exc.strerror or exc}): pass a readable PNG file") from None


def parse_parameters(text: str) -> dict[str, Any]:
    """A record rebuilt from a `parameters` text (the prompt, the negative prompt and the settings line)."""
    lines = text.strip("\n").split("\n")
    settings_line = ""
    # The settings line is the last one, and it starts with a `Key: value` pair (Steps, usually).
    if len(lines) > 1 and _looks_like_settings(lines[-1]):
        settings_line = lines.pop()
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    into_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            into_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative_lines if into_negative else prompt_lines).append(line)
    pairs = _split_pairs(settings_line)
    record: dict[str, Any] = {
        "format": PARAMETERS_KEY,
        "prompt": "\n".join(prompt_lines).strip(),
        "negative_prompt": "\n".join(negative_lines).strip(),
        "seed": _number(pairs.get("Seed"), int),
        "steps": _number(pairs.get("Steps"), int),
        "guidance": _number(pairs.get("CFG scale"), float),
        "strength": _number(pairs.get("Denoising strength"), float),
        "model": pairs.get("Model"),
        "model_hash": pairs.get("Model hash"),
        "sampler": pairs.get("Sampler"),
        "schedule_type": pairs.get("Schedule type"),
        "scheduler": scheduler_of(pairs.get("Sampler"), pairs.get("Schedule type")),
        "run_id": pairs.get("Run"),
        "iteration": _number(pairs.get("Image"), int),
        "software": pairs.get("Version"),
        "fields": pairs,
    }
    width, _, height = (pairs.get("Size") or "").partition("x")
    record["width"], record["height"] = _number(width, int), _number(height, int)
    return record


def _looks_like_settings(line: str) -> bool:
    head = line.split(",", 1)[0]
    key, colon, _ = head.partition(":")
    return bool(colon) and 0 < len(key) <= 40 and not key.startswith(" ")


def _split_pairs(line: str) -> dict[str, str]:
    """`Key: value, Key: "quoted, value", ...` into a mapping (quoted values are JSON strings)."""
    pairs: dict[str, str] = {}
    rest = line.strip()
    while rest:
        key, colon, rest = rest.partition(":")
        if not colon:
            break
        rest = rest.lstrip()
        if rest.startswith('"'):
            try:
                value, end = json.JSONDecoder().raw_decode(rest)
            except ValueError:
                value, end = rest, len(rest)
            rest = rest[end:]
            rest = rest.split(",", 1)[1] if "," in rest else ""
        else:
            value, _, rest = rest.partition(",")
        pairs[key.strip()] = str(value).strip()
        rest = rest.strip()
    return pairs


def _number(text: Any, kind: type) -> Any:
    """`text` as an int or a finite float, or None when it is neither."""
    if text is None:
        return None
    try:
        value = kind(float(text)) if kind is int else kind(text)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if kind is int or math.isfinite(value) else None


def shown_value(value: Any) -> str:
    """A value read from an untrusted image, as one visible line, cut with a note past 2000 characters."""
    return visible(value, limit=2000, one_line=True)


def describe(record: dict[str, Any], path: str, local: dict[str, Any] | None = None) -> str:
    """The record as aligned lines for a person (control characters removed: the file is not trusted).
    `local` is the settings of the run the image sits in, for the paths its remake command names."""

    def fmt(value: Any) -> str:
        if value is None or value == "" or value == []:
            return "-"
        return f"{value:g}" if isinstance(value, float) else shown_value(value)

    loras = record.get("loras") or []
    strength = record.get("strength")
    if strength is not None:
        start = f" (image-to-image from {record['init_image']})" if record.get("init_image") else ""
        strength_text = f"{fmt(strength)}{start}"
    else:
        strength_text = "- (text-to-image)"
    run = fmt(record.get("run_id"))
    if record.get("iteration") is not None:
        run += f", image {record['iteration']}"
    rows = [
        ("image", path),
        ("prompt", fmt(record.get("prompt"))),
        ("negative prompt", fmt(record.get("negative_prompt"))),
        ("seed", fmt(record.get("seed"))),
        ("steps", fmt(record.get("steps"))),
        ("guidance", fmt(record.get("guidance"))),
        ("size", f"{record['width']}x{record['height']}" if record.get("width") else "-"),
        ("strength", strength_text),
        ("sampler", _sampler_text(record)),
        ("model", fmt(record.get("model")) + (f" (hash {record['model_hash']})" if record.get("model_hash") else "")),
        ("LoRAs", ", ".join(_lora_shown(x) for x in loras if isinstance(x, dict)) or "-"),
        ("run", run),
    ]
    task = record.get("task")
    if isinstance(task, dict) and task.get("goal"):
        rows.append(("goal", fmt(task.get("goal"))))
    if record.get("format") == PARAMETERS_KEY:
        rows.append(("read from", "its parameters text (not written by refineloop)"))
        rows.append(("cannot use", "; ".join(unused_fields(record)) or "-"))
    rows.append(("remake it", remake_command(record, path, local)))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name + ':':<{width + 2}}{clean_model_text(' '.join(str(v).split()))}" for name, v in rows)


def _sampler_text(record: dict[str, Any]) -> str:
    """`DPM++ 2M, Karras (--scheduler dpm++_2m_karras)`, or `-`."""
    words = ", ".join(str(w) for w in (record.get("sampler"), record.get("schedule_type")) if w)
    if not words:
        return "-"
    name = record.get("scheduler")
    if name:
        return f"{words} (--scheduler {name})"
    return f"{words} (the model's own)" if record.get("format") == FORMAT else words


def _lora_shown(lora: dict[str, Any]) -> str:
    text = lora_text(lora.get("source"), lora.get("scale"))
    return f"{text} (hash {lora['hash']})" if lora.get("hash") else text


# --------------------------------------------------------------------------------------------- run --from


def start_from_image(settings: RunSettings) -> Task:
    """The task of a run started with `--from IMAGE`, with the settings that remake the image filled in.

    The image's prompt (without its subject anchor) becomes the start prompt and its seed the first image's
    seed (`first_seed`); its steps, guidance and size fill in those left empty. Its recorded task is reused,
    unless --task or --goal names another. Values read from the file are checked like flags.
    """
    from refineloop.errors import SettingsError, TaskError
    from refineloop.settings import RunSettings
    from refineloop.tasks import Task, resolve_task, task_from_goal

    path = Path(settings.from_image).expanduser()
    try:
        record = read_provenance(path)
    except NoProvenanceError:
        raise ProvenanceError(
            f"{path} carries no provenance, so --from cannot remake it: to refine a picture of your own, start from "
            f"it with --init-image {path}"
        ) from None
    prompt = str(record.get("prompt") or "").strip()
    if not prompt:
        raise ProvenanceError(f"{path} records no prompt: start a run from another image")
    source = f"the task recorded in {path}"
    chosen = settings.goal.strip() or settings.task != RunSettings.__dataclass_fields__["task"].default
    base = str(record.get("base_prompt") or "").strip()
    if chosen:
        task = resolve_task(settings.task, settings.goal)
        task = replace(task, start_prompt=base or prompt)
    elif isinstance(record.get("task"), dict) and base:
        try:
            task = Task.from_dict({**record["task"], "start_prompt": base}, source)
        except TaskError as exc:
            raise ProvenanceError(f"{exc} (edit nothing: pass --task or --goal to use another task)") from None
    else:
        # Another tool's image: its first phrase anchors the subject, the rest is the start prompt, so the
        # first image is drawn from the same prompt text.
        subject, _, rest = prompt.partition(", ")
        try:
            goal_task = task_from_goal(prompt)
        except TaskError as exc:
            raise ProvenanceError(
                f"{path} records a prompt refineloop cannot use ({exc}): pick another image"
            ) from None
        task = replace(
            goal_task,
            subject=subject.strip() or prompt,
            start_prompt=rest.strip() or subject.strip() or prompt,
            negative_prompt=str(record.get("negative_prompt") or ""),
        )
    seed = record.get("seed")
    if settings.first_seed is None and isinstance(seed, int) and not isinstance(seed, bool):
        settings.first_seed = seed
    fill_scheduler(settings, record)
    for knob in ("steps", "guidance", "width", "height"):
        value = record.get(knob)
        if getattr(settings, knob) is None and isinstance(value, int | float) and not isinstance(value, bool):
            setattr(settings, knob, float(value) if knob == "guidance" else int(value))
    settings.from_image = str(path.resolve())
    try:
        validated(settings)
    except SettingsError as exc:
        raise ProvenanceError(f"{path} records a value refineloop cannot use ({exc}): set that flag yourself") from None
    return task


def fill_scheduler(settings: RunSettings, record: dict[str, Any]) -> None:
    """A `--from` run draws with the image's sampler unless --scheduler names one, where its image backend takes
    a sampler at all (the sketch painter has none; a ComfyUI workflow keeps its own)."""
    entry = BACKENDS.find("image", settings.image_model)
    if settings.scheduler or entry is None or not entry.samplers:
        return
    name = record.get("scheduler")
    if isinstance(name, str) and name:
        settings.scheduler = name


def from_image_notes(settings: RunSettings, model_name: str) -> list[str]:
    """Warnings for a `--from` run whose first image cannot be the same picture: another model or LoRAs."""
    if not settings.from_image:
        return []
    try:
        record = read_provenance(settings.from_image)
    except ProvenanceError as exc:
        return [f"warning: {exc}"]
    notes = []
    if record.get("init_image"):
        notes.append(
            f"warning: {Path(settings.from_image).name} was drawn image-to-image from {record['init_image']}: the new "
            "run's first image is drawn from text, so it is a new picture from the same prompt and seed"
        )
    drawn_by = record.get("model")
    if drawn_by and drawn_by not in (model_name, model_label(model_name)):
        notes.append(
            f"warning: {Path(settings.from_image).name} was drawn by {clean_model_text(str(drawn_by))}, this run "
            f"uses {model_name}: the first image will not be the same picture (pass --image-model to match)"
        )
    from refineloop.settings import lora_scale

    recorded = [lora_text(x.get("source"), x.get("scale")) for x in record.get("loras") or [] if isinstance(x, dict)]
    asked = [lora_text(lora_label(source), scale) for source, scale in map(lora_scale, settings.lora)]
    if record.get("format") == FORMAT and sorted(recorded) != sorted(asked):
        notes.append(
            f"warning: {Path(settings.from_image).name} was drawn with LoRAs [{', '.join(recorded)}], this run has "
            f"[{', '.join(asked)}]: pass the same --lora flags to remake it"
        )
    return notes
