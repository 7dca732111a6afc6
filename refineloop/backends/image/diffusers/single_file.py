"""The single-file checkpoint backend: `--image-model FILE.safetensors`, the way model sites hand out SD 1.x,
SD 2.x, SDXL, SD 3.x and FLUX.1 fine-tunes.

The family is read from the file's tensor names (refineloop.backends.image.diffusers.checkpoint_family), its
diffusers configuration comes from a local folder or the hub cache (never the network), and diffusers'
`from_single_file` builds the pipeline from both. Everything after that is the diffusers backend's: LoRAs,
placement, traits and the img2img twin made with `from_pipe` (sharing the weights). A `.ckpt` is a Python
pickle and loads only with `--allow-pickle`. The model is named by the file's name (never its folder) and
carries the file's AutoV2 hash for provenance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refineloop.backends.image.diffusers.model import DiffusersImageModel
from refineloop.backends.table import Backend
from refineloop.errors import ModelError, SettingsError

if TYPE_CHECKING:
    from refineloop.backends.image.diffusers.placement import Placement
    from refineloop.settings import RunSettings

log = logging.getLogger(__name__)

#: What a single-file checkpoint's name ends in (.ckpt only with --allow-pickle).
SUFFIXES = (".safetensors", ".ckpt")


class SingleFileImageModel(DiffusersImageModel):
    """A diffusers pipeline built from one checkpoint file."""

    def __init__(self, pipe: Any, *, name: str, placement: Placement, model_hash: str) -> None:
        super().__init__(pipe, name=name, placement=placement)
        self.model_hash = model_hash
        """The file's AutoV2 hash (first 10 hex digits of its SHA-256), as model sites show it."""


def _claims(spec: str) -> bool:
    # `hf:` specs stay the diffusers entry's, whatever they end in.
    return spec.lower().endswith(SUFFIXES) and not spec.startswith("hf:") and not Path(spec).expanduser().is_dir()


def _check(spec: str) -> None:
    if not Path(spec).expanduser().is_file():
        raise SettingsError("is not a file: check the path of the checkpoint")


def _load(spec: str, settings: RunSettings) -> SingleFileImageModel:
    return load_single_file(
        spec,
        config=settings.single_file_config,
        allow_pickle=settings.allow_pickle,
        device=settings.device or None,
        dtype=settings.dtype or None,
        loras=tuple(settings.lora),
    )


def load_single_file(
    spec: str,
    *,
    config: str = "",
    allow_pickle: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    loras: tuple[str, ...] = (),
) -> SingleFileImageModel:
    """Load a single-file checkpoint offline; every failure a user can fix is a one-line ModelError."""
    from refineloop.backends.image.diffusers.checkpoint_family import config_folder, family_of, tensor_shapes
    from refineloop.backends.image.diffusers.loading import apply_placement, pipeline_kwargs
    from refineloop.backends.image.diffusers.log_filters import quiet_torchvision_fallback
    from refineloop.backends.image.diffusers.loras import find_lora, load_loras
    from refineloop.backends.image.diffusers.placement import plan_placement
    from refineloop.backends.image.diffusers.sources import read_index
    from refineloop.backends.image.file_hash import autov2_hash

    quiet_torchvision_fallback()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelError(f"'{spec}' is not a file: check the path of the checkpoint")
    if path.suffix.lower() == ".ckpt" and not allow_pickle:
        raise ModelError(
            f"'{path.name}' is a pickle (.ckpt), which can run code while it loads: use a .safetensors version of "
            "it, or pass --allow-pickle if you trust where it came from"
        )
    family = family_of(path, tensor_shapes(path))
    folder = config_folder(family, config, path.name)
    index = read_index(folder, f"configuration folder '{folder}'")
    size = path.stat().st_size
    # The largest single part is not known before the load; the whole file bounds it.
    plan = plan_placement(device, dtype, size, size)
    found = [find_lora(lora) for lora in loras]  # refused before the slow load, not after it
    pipe = _from_single_file(path, folder, index, plan.dtype, pipeline_kwargs(index))
    load_loras(pipe, found, path.name)
    apply_placement(pipe, plan)
    model = SingleFileImageModel(pipe, name=path.name, placement=plan, model_hash=autov2_hash(path))
    log.info("%s (%s, hash %s) on %s", path.name, family.label, model.model_hash, model.placement)
    return model


def _from_single_file(path: Path, folder: Path, index: dict[str, Any], dtype: str, extra: dict[str, Any]) -> Any:
    """The pipeline class the configuration names, built from the file with local files only."""
    import diffusers
    import torch

    from refineloop.backends.image.diffusers.log_filters import filtered
    from refineloop.backends.image.diffusers.messages import one_line

    name = str(index.get("_class_name", ""))
    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_single_file"):
        raise ModelError(
            f"configuration folder '{folder}' names {name or 'no pipeline'}, which cannot load a single file"
        )
    try:
        with filtered({"diffusers.models.modeling_utils"}, _DropEmptyFloat32Note()):
            return cls.from_single_file(
                str(path), config=str(folder), local_files_only=True, dtype=getattr(torch, dtype), **extra
            )
    except Exception as exc:  # diffusers raises many kinds; each becomes one readable line
        raise ModelError(
            f"cannot load '{path.name}' with the configuration in '{folder}': {one_line(exc)} (is that folder of the "
            "same family, with the weights of the parts the file lacks?)"
        ) from exc


class _DropEmptyFloat32Note(logging.Filter):
    """diffusers' single-file loader casts each model to the dtype asked for, and then warns that modules "should
    be kept in float32" even when it lists none: with an empty list the line says nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


SINGLE_FILE_BACKEND = Backend(
    name="single-file",
    kind="image",
    syntax="FILE.safetensors",
    summary="a single-file SD 1.x, SD 2.x, SDXL, SD 3.x or FLUX.1 checkpoint, configured offline from the hub cache "
    "or --single-file-config (.ckpt pickles need --allow-pickle)",
    claims=_claims,
    check=_check,
    load=_load,
    options=("single_file_config", "allow_pickle"),
    loras=True,
    samplers=True,
)
