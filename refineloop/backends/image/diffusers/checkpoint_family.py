"""Which model family a single-file checkpoint holds, read from its weights' names and shapes, and where the
family's diffusers configuration is found without the network.

A `.safetensors` file starts with a JSON header naming every tensor and its shape, so the family is read from
the header alone (no weights, no torch). The names are the original training code's (`model.diffusion_model.*`,
`first_stage_model.*`, `cond_stage_model.*`, `conditioner.embedders.*`, `joint_blocks.*`, `double_blocks.*`),
and diffusers' own `infer_diffusers_model_type` turns them into a model type, which also names the hub
repository diffusers takes that family's configuration from.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refineloop.backends.image.diffusers.messages import one_line
from refineloop.backends.image.diffusers.sources import cached_snapshot, read_index
from refineloop.errors import ModelError

#: The families refineloop draws with, by diffusers' model type, as users know them.
FAMILIES: dict[str, str] = {
    "v1": "SD 1.x",
    "v2": "SD 2.x",
    "xl_base": "SDXL",
    "xl_refiner": "SDXL refiner",
    "playground-v2-5": "Playground v2.5 (SDXL)",
    "sd3": "SD 3",
    "sd35_medium": "SD 3.5 Medium",
    "sd35_large": "SD 3.5 Large",
    "flux-dev": "FLUX.1 dev",
    "flux-schnell": "FLUX.1 schnell",
}
#: Families whose single files usually hold the transformer alone: their text encoders and VAE load from the
#: configuration repository, so its download keeps those weights and skips only the transformer's.
TRANSFORMER_ONLY = ("sd3", "sd35_medium", "sd35_large", "flux-dev", "flux-schnell")
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.ckpt", "*.pt", "*.pth", "*.onnx", "*.pb", "*.msgpack", "*.h5")
#: A name every original-layout UNet checkpoint has (SD 1.x, 2.x, XL); diffusers calls any unknown file SD 1.x.
_UNET_KEY = "model.diffusion_model.input_blocks.0.0.weight"
_HEADER_LIMIT = 100 * 2**20


@dataclass(frozen=True)
class Shape:
    """A tensor as the family test sees it: only its shape (the weights stay on disk)."""

    shape: tuple[int, ...]


@dataclass(frozen=True)
class Family:
    """A checkpoint's family and the hub repository holding its diffusers configuration."""

    model_type: str
    """diffusers' name for it (`v1`, `xl_base`, `flux-dev`)."""
    label: str
    """How users call it (`SD 1.x`, `SDXL`)."""
    repo: str
    """The hub repository diffusers configures this family from."""

    def download_line(self) -> str:
        """The one command that puts this family's configuration into the local Hugging Face cache."""
        if self.model_type in TRANSFORMER_ONLY:
            skipped = ["transformer/*.safetensors", "transformer/*.bin", "*.ckpt", "*.pth", "*.onnx", "*.pb"]
            # The repository's own single files sit at its root beside the folders; the folders' files are kept.
            skipped += ["flux1-*.safetensors", "ae.safetensors", "sd3*.safetensors"]
        else:
            skipped = list(_WEIGHT_FILES)
        return f"hf download {self.repo} --exclude " + " ".join(f'"{p}"' for p in skipped)


def tensor_shapes(path: Path) -> dict[str, Shape]:
    """Every tensor's name and shape in a single-file checkpoint, without loading a weight."""
    if path.suffix.lower() == ".ckpt":
        return _pickle_shapes(path)
    try:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if not 0 < size <= _HEADER_LIMIT:
                raise ValueError(f"header size {size}")
            header = json.loads(fh.read(size))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"'{path.name}' is not a readable safetensors file ({one_line(exc)}): re-download it"
        ) from None
    if not isinstance(header, dict):
        raise ModelError(f"'{path.name}' has a damaged safetensors header: re-download it")
    return {
        name: Shape(tuple(int(n) for n in info.get("shape", ())))
        for name, info in header.items()
        if name != "__metadata__" and isinstance(info, dict)
    }


def _pickle_shapes(path: Path) -> dict[str, Shape]:
    """A `.ckpt`'s tensors, through torch's weights-only unpickler (the caller has already let pickles in)."""
    import torch

    data: Any = None
    for mapped in (True, False):  # only zip-format pickles (torch >= 1.6) can be memory-mapped
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
            break
        except Exception as exc:  # torch raises many kinds for a damaged or foreign pickle
            if not mapped:
                raise ModelError(f"'{path.name}' is not a readable checkpoint ({one_line(exc)})") from None
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelError(f"'{path.name}' holds no state dict: it is not a model checkpoint")
    return {str(k): Shape(tuple(v.shape)) for k, v in data.items() if hasattr(v, "shape")}


def family_of(path: Path, shapes: dict[str, Shape]) -> Family:
    """The family a checkpoint's tensors belong to; a one-line ModelError for any other file."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_DEFAULT_PIPELINE_PATHS, infer_diffusers_model_type

    if not shapes:
        raise ModelError(f"'{path.name}' holds no tensors: it is not a model checkpoint")
    try:
        model_type = str(infer_diffusers_model_type(shapes))
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise ModelError(f"'{path.name}' has a key layout diffusers cannot read ({one_line(exc)})") from None
    if model_type == "v1" and _UNET_KEY not in shapes:
        raise ModelError(f"'{path.name}' has an unknown key layout ({_hint(shapes)}): {_wanted()}")
    if model_type not in FAMILIES:
        raise ModelError(
            f"'{path.name}' holds a model of kind '{model_type}', which refineloop does not draw with: {_wanted()}"
        )
    repo = str(DIFFUSERS_DEFAULT_PIPELINE_PATHS[model_type]["pretrained_model_name_or_path"])
    return Family(model_type, FAMILIES[model_type], repo)


def _wanted() -> str:
    return "pass a full SD 1.x, SD 2.x, SDXL, SD 3.x or FLUX.1 checkpoint, or a diffusers folder"


def _hint(shapes: dict[str, Shape]) -> str:
    """What the file looks like instead: a LoRA, a lone VAE, diffusers' own component layout, or its first key."""
    names = list(shapes)
    if any("lora" in name for name in names):
        return "it looks like a LoRA: pass it with --lora"
    if all(name.startswith(("encoder.", "decoder.", "quant_conv", "post_quant_conv")) for name in names):
        return "it looks like a VAE alone"
    if any(name.startswith(("down_blocks.", "transformer_blocks.", "text_model.")) for name in names):
        return "it looks like one diffusers component, not a whole checkpoint"
    return f"its first key is {sorted(names)[0][:80]!r}"


def config_folder(family: Family, chosen: str, file_name: str) -> Path:
    """The diffusers folder whose configuration the checkpoint loads with: `chosen` (a folder, or a hub id in
    the local cache), else the family's repository in the local cache. Never the network: a missing one is a
    one-line ModelError with the command that fetches it once."""
    if chosen:
        return _chosen_folder(chosen, family)
    snapshot = cached_snapshot(family.repo)
    if snapshot is not None and (snapshot / "model_index.json").is_file():
        read_index(snapshot, f"the cached {family.repo}")
        return snapshot
    raise ModelError(
        f"'{file_name}' is {family.label}, and its configuration ({family.repo}) is not in the local Hugging Face "
        f"cache: run `{family.download_line()}` once, or pass --single-file-config DIR"
    )


def _chosen_folder(chosen: str, family: Family) -> Path:
    """--single-file-config: a diffusers folder on disk, else a hub id already in the cache."""
    folder = Path(chosen).expanduser()
    if folder.is_dir():
        read_index(folder, f"--single-file-config folder '{chosen}'")
        return folder
    hub_id = chosen.removeprefix("hf:")
    snapshot = cached_snapshot(hub_id) if hub_id.count("/") == 1 else None
    if snapshot is not None and (snapshot / "model_index.json").is_file():
        read_index(snapshot, f"the cached {hub_id}")
        return snapshot
    fetch = family.download_line().replace(family.repo, hub_id, 1) if hub_id.count("/") == 1 else ""
    how = f"run `{fetch}` once" if fetch else "pass a diffusers folder"
    raise ModelError(
        f"--single-file-config '{chosen}' is neither a diffusers folder nor a hub id in the local Hugging Face "
        f"cache: {how}"
    )
