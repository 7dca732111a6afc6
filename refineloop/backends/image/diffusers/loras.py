"""`--lora PATH_OR_ID[:SCALE]`: LoRAs found (or refused) before the pipeline's slow load, then loaded into it
as named adapters through diffusers' LoRA loader, each at its scale."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refineloop.backends.image.diffusers.messages import one_line
from refineloop.backends.image.diffusers.sources import cached_snapshot, hub_cache_dir, hub_offline, hub_reachable
from refineloop.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSource:
    """One `--lora` as found on disk or on the hub, ready for `load_lora_weights`."""

    source: str
    """The file, folder or hub id the user named (scale removed)."""
    scale: float
    """How strongly the adapter applies."""
    target: str
    """What `load_lora_weights` gets: a folder or a hub id."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Its keyword arguments (weight file name, offline or cache folder)."""


def find_lora(spec: str) -> LoraSource:
    """`PATH_OR_ID[:SCALE]` found, failing fast (offline too) with a one-line ModelError."""
    from refineloop.settings import lora_scale

    source, scale = lora_scale(spec)
    if scale is None:
        raise ModelError(f"--lora '{spec}': the scale after ':' must be a number from -10 to 10")
    target, kwargs = _lora_target(source)
    return LoraSource(source, scale, target, kwargs)


def load_loras(pipe: Any, loras: Sequence[LoraSource], shown: str) -> None:
    """Load each LoRA as a named adapter and activate them all at their scales."""
    if not loras:
        return
    if not hasattr(pipe, "load_lora_weights"):
        raise ModelError(f"{shown} ({type(pipe).__name__}) has no LoRA loader in diffusers: drop --lora")
    names, scales = [], []
    for index, lora in enumerate(loras):
        name = f"lora{index + 1}"
        try:
            pipe.load_lora_weights(lora.target, adapter_name=name, **lora.kwargs)
        except ModelError:
            raise
        except Exception as exc:
            if "PEFT backend is required" in str(exc):
                raise ModelError("LoRAs need the peft package: pip install peft, then run again") from exc
            raise ModelError(
                f"cannot load LoRA '{lora.source}' into {shown} ({one_line(exc, 160)}): check that it was trained "
                "for this model family and is a diffusers or kohya .safetensors LoRA"
            ) from exc
        names.append(name)
        scales.append(lora.scale)
    pipe.set_adapters(names, adapter_weights=scales)
    log.info("%s: LoRAs %s", shown, ", ".join(f"{lora.source}={lora.scale:g}" for lora in loras))


def lora_weight_file(lora: LoraSource) -> str | None:
    """The weight file a found LoRA loads from, where it is on this machine (for its hash); None otherwise."""
    folder = Path(lora.target)
    if not folder.is_dir():
        return None
    named = lora.kwargs.get("weight_name")
    if named:
        return str(folder / named) if (folder / named).is_file() else None
    files = sorted(folder.glob("*.safetensors"))
    return str(files[0]) if len(files) == 1 else None


def _lora_target(source: str) -> tuple[str, dict[str, Any]]:
    """What `load_lora_weights` gets for a LoRA file, folder or hub id, failing fast offline."""
    raw = source.removeprefix("hf:")
    path = Path(raw).expanduser()
    if path.is_file():
        return str(path.parent), {"weight_name": path.name, "local_files_only": True}
    if path.is_dir():
        return str(path), {"local_files_only": True}
    parts = raw.split("/")
    looks_like_id = len(parts) >= 2 and not raw.startswith((".", "/", "~")) and "\\" not in raw
    if not looks_like_id or (len(parts) > 2 and not raw.endswith(".safetensors")):
        raise ModelError(f"LoRA '{source}' not found: pass a .safetensors file, a folder, or a hub id (org/name)")
    repo_id = "/".join(parts[:2])
    kwargs: dict[str, Any] = {"weight_name": "/".join(parts[2:])} if len(parts) > 2 else {}
    snapshot = cached_snapshot(repo_id)
    if snapshot is not None:
        return str(snapshot), {**kwargs, "local_files_only": True}
    if hub_offline() or not hub_reachable():
        raise ModelError(
            f"LoRA '{repo_id}' is not in the local Hugging Face cache and the hub cannot be reached: "
            f"run `hf download {repo_id}` on a machine with internet, or pass a local file"
        )
    return repo_id, {**kwargs, "cache_dir": hub_cache_dir()}
