"""Writing an image's `parameters` text the way A1111 does, so other tools read it; and what `show` makes of it.

The text is the prompt, a `Negative prompt:` line, and one settings line that starts with `Steps:` (readers
such as sd-prompt-reader find the line by that word, and sd-parsers needs a `Sampler:` on it):

    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x512,
    Model hash: 0123456789, Model: tiny-sd, Denoising strength: 0.5, Lora hashes: "style: 0123456789ab",
    Version: refineloop 0.1.0, Run: ..., Image: 3, Hashes: {"model": "0123456789", "lora:style": "0123456789ab"}

Models and LoRAs are named by their folder's or file's base name (a hub id stays as it is), never by a path:
a shared image must not tell where its maker keeps files. The hashes (refineloop.backends.image.weight_hashes)
let a model site or a person find the same weights. The run's own folder keeps the full paths, and `show`
uses them for the remake command when the image sits in its run folder.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from refineloop.backends.image.weight_hashes import lora_hash, model_hash
from refineloop.samplers import SAMPLERS


def model_label(name: str) -> str:
    """How a model is named in metadata: `sketch`, a hub id's own name, a folder's or file's base name."""
    text = name.strip()
    if text.startswith("sketch"):
        return "sketch"
    if text.startswith("hf:"):
        return text[3:].rstrip("/").split("/")[-1]
    path = Path(text.rstrip("/\\") or text)
    return path.stem if path.suffix in (".safetensors", ".ckpt", ".bin", ".gguf") else path.name or text


def model_source(name: str) -> str | None:
    """The spec that loads the model again anywhere (a hub id), or None when it lives at a local path."""
    return name.strip() if name.strip().startswith("hf:") else None


def lora_label(source: str) -> str:
    """How a LoRA is named in metadata: its file's stem, its folder's name, or its hub id as given."""
    raw = source.strip()
    path = Path(raw).expanduser()
    if raw.startswith(("/", ".", "~")) or path.exists() or "\\" in raw:
        return path.stem if path.suffix else path.name
    return raw.removeprefix("hf:")


def image_identity(model: Any, scheduler: str) -> dict[str, Any]:
    """What names the model, its sampler and its LoRAs in an image's record (no paths; hashes where the weights
    are on this machine)."""
    words = getattr(model, "sampler_words", None)
    sampler, schedule = words(scheduler) if callable(words) else ("", "")
    weights = getattr(model, "weights_path", None)
    loras = [
        {"source": lora_label(source), "scale": scale, "hash": lora_hash(path) if path else None}
        for source, scale, path in getattr(model, "lora_files", None) or []
    ]
    return {
        "model": model_label(str(model.name)),
        "model_source": model_source(str(model.name)),
        # A backend that hashed its own weights (a single-file checkpoint, AutoV2) says so; others are hashed here.
        "model_hash": getattr(model, "model_hash", None) or (model_hash(weights) if weights else None),
        "scheduler": scheduler,
        "sampler": sampler or None,
        "schedule_type": schedule or None,
        "loras": loras,
    }


def lora_text(source: Any, scale: Any) -> str:
    """`source:scale`, the way --lora takes it."""
    number = isinstance(scale, int | float) and not isinstance(scale, bool)
    return f"{source}:{scale:g}" if number else f"{source}:{scale}"


def _quote(value: Any) -> str:
    """A settings value: as is, or JSON-quoted when it holds a separator the readers split on."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return json.dumps(text, ensure_ascii=False) if any(ch in text for ch in ",:\n") else text


#: The settings line's keys, in A1111's order, and the record fields they show.
SETTINGS_KEYS = (
    ("Steps", "steps"),
    ("Sampler", "sampler"),
    ("Schedule type", "schedule_type"),
    ("CFG scale", "guidance"),
    ("Seed", "seed"),
    ("Size", "size"),
    ("Model hash", "model_hash"),
    ("Model", "model"),
    ("Denoising strength", "strength"),
    ("Lora hashes", "lora_hashes"),
    ("LoRA", "lora_scales"),
    ("Version", "software"),
    ("Run", "run_id"),
    ("Image", "iteration"),
)


def a1111_text(record: dict[str, Any]) -> str:
    """The record as A1111's `parameters` text (see the module notes)."""
    shown = dict(record)
    shown["size"] = f"{record.get('width')}x{record.get('height')}" if record.get("width") else None
    loras = [x for x in record.get("loras") or [] if isinstance(x, dict)]
    hashed = [x for x in loras if x.get("hash")]
    shown["lora_hashes"] = ", ".join(f"{x.get('source')}: {x['hash']}" for x in hashed) or None
    shown["lora_scales"] = "; ".join(lora_text(x.get("source"), x.get("scale")) for x in loras) or None
    pairs = [f"{key}: {_quote(shown[field])}" for key, field in SETTINGS_KEYS if shown.get(field) not in (None, "")]
    hashes = {"model": record["model_hash"]} if record.get("model_hash") else {}
    hashes.update({f"lora:{x.get('source')}": x["hash"] for x in hashed})
    if hashes:
        # Civitai's form, which sd-parsers reads as a table; last, so no reader's plain split trips over it.
        pairs.append(f"Hashes: {json.dumps(hashes, ensure_ascii=False)}")
    lines = [str(record.get("prompt", ""))]
    if record.get("negative_prompt"):
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    lines.append(", ".join(pairs))
    return "\n".join(lines)


def scheduler_of(sampler: str | None, schedule: str | None) -> str | None:
    """The `--scheduler` name for A1111's (`Sampler`, `Schedule type`) words, None when the table has none.
    Older A1111 versions wrote the schedule into the sampler's name (`DPM++ 2M Karras`)."""
    if not sampler:
        return None
    name, kind = sampler.strip(), (schedule or "Automatic").strip()
    if name.endswith(" Karras"):
        name, kind = name.removesuffix(" Karras"), "Karras"
    for entry in SAMPLERS.values():
        if entry.a1111.lower() == name.lower() and entry.schedule.lower() == kind.lower():
            return entry.name
    return None


def remake_command(record: dict[str, Any], image: str, local: dict[str, Any] | None = None) -> str:
    """The shell command that draws the image again as the first image of a new run: the prompt, seed, steps,
    guidance and size come from the file (`--from`), the model, LoRAs, scheduler and negative prompt are named.
    `local` is the settings of the run the image sits in, whose paths the file itself does not carry."""
    local = local or {}
    model = local.get("image_model") or record.get("model_source") or record.get("model") or "sketch"
    words = ["refineloop", "run", "--from", image, "--image-model", str(model)]
    loras = local.get("lora") if local else None
    if loras is None:
        loras = [lora_text(x.get("source"), x.get("scale")) for x in record.get("loras") or [] if isinstance(x, dict)]
    for lora in loras:
        words += ["--lora", str(lora)]
    scheduler = record.get("scheduler") or scheduler_of(record.get("sampler"), record.get("schedule_type"))
    if scheduler and model_label(str(model)) != "sketch":
        words += ["--scheduler", str(scheduler)]
    words += ["--negative-prompt", str(record.get("negative_prompt") or "")]
    return shlex.join(words)


#: Keys of another tool's settings line that `--from` uses, and what each becomes.
USED_KEYS = ("Steps", "CFG scale", "Seed", "Size", "Sampler", "Schedule type", "Model", "Model hash")


def unused_fields(record: dict[str, Any]) -> list[str]:
    """What refineloop cannot use from another tool's parameters text: each key it ignores, and a sampler or
    model it cannot follow (a model is named by its file only: pass --image-model)."""
    fields = record.get("fields") or {}
    unused = [key for key in fields if key not in USED_KEYS]
    if fields.get("Sampler") and not scheduler_of(fields.get("Sampler"), fields.get("Schedule type")):
        unused.insert(0, f"Sampler ({fields['Sampler']}: no such --scheduler)")
    if fields.get("Model"):
        unused.insert(0, f"Model ({fields['Model']}: named by its file only, pass --image-model)")
    return unused
