"""`load_diffusers`: a spec (hub id or folder) to a placed, ready `DiffusersImageModel`.

The order matters: resolve the source and find every LoRA first (fast, one-line failures), then the slow
`from_pretrained`, then the LoRAs, then placement, so the adapters move (or offload) with the weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from refineloop.backends.image.diffusers.log_filters import quiet_library_output, quiet_torchvision_fallback
from refineloop.backends.image.diffusers.loras import find_lora, load_loras, lora_weight_file
from refineloop.backends.image.diffusers.messages import one_line
from refineloop.backends.image.diffusers.model import DiffusersImageModel
from refineloop.backends.image.diffusers.placement import Placement, plan_placement
from refineloop.backends.image.diffusers.sources import (
    Source,
    cached_snapshot,
    component_names,
    hub_cache_dir,
    read_index,
    remote_index,
    resolve_source,
    weight_bytes,
)
from refineloop.backends.image.diffusers.traits import call_params
from refineloop.errors import ModelError

log = logging.getLogger(__name__)


def load_diffusers(
    spec: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    name: str | None = None,
    progress: bool = False,
    loras: Sequence[str] = (),
) -> DiffusersImageModel:
    """Load a diffusers pipeline from a hub id (`org/name`, `hf:` optional) or a local folder.

    `device` (`cpu`, `cuda`, `cuda:N`, `mps`) and `dtype` (`bf16`, `fp16`, `fp32`) override the automatic
    placement; `loras` (`PATH_OR_ID[:SCALE]`) are loaded into it through diffusers' LoRA loader. Every
    failure a user can fix raises a one-line ModelError.
    """
    source = resolve_source(spec)
    shown = name or (f"hf:{source.repo_id}" if source.repo_id else spec.strip())
    index = read_index(source.folder, shown) if source.folder else remote_index(source.target)
    components = component_names(index) if index else None
    total, largest = weight_bytes(source.folder, components) if source.folder else (0, 0)
    plan = plan_placement(device, dtype, total, largest or None)
    # Every LoRA is found (or refused) before the pipeline's slow load, not after it.
    found = [find_lora(lora) for lora in loras]

    quiet_torchvision_fallback()
    if not progress:
        quiet_library_output()
    import torch

    kwargs: dict[str, Any] = {"dtype": getattr(torch, plan.dtype), **pipeline_kwargs(index)}
    if source.local_only:
        kwargs["local_files_only"] = True
    else:
        # The cache as the environment names it now (huggingface_hub fixed its default at import).
        kwargs["cache_dir"] = hub_cache_dir()
    pipe = _from_pretrained(source, kwargs)

    if source.folder is None and source.repo_id:
        # Downloaded just now: size it from the snapshot, and re-plan, since the first plan knew no size.
        snapshot = cached_snapshot(source.repo_id)
        if snapshot is not None:
            total, largest = weight_bytes(snapshot, components)
            plan = plan_placement(device, dtype, total, largest or None)
    # Before placement: the adapters then move (or offload) with the weights they patch.
    load_loras(pipe, found, shown)
    apply_placement(pipe, plan)
    model = DiffusersImageModel(pipe, name=shown, placement=plan, progress=progress)
    where = source.folder or (cached_snapshot(source.repo_id) if source.repo_id else None)
    model.weights_path = str(where) if where else None
    model.lora_files = [(lora.source, lora.scale, lora_weight_file(lora)) for lora in found]
    log.info("%s on %s", shown, model.placement)
    return model


def _from_pretrained(source: Source, kwargs: dict[str, Any]) -> Any:
    """The pipeline, through AutoPipeline where it knows the family, else generically; one-line failures."""
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    try:
        try:
            return AutoPipelineForText2Image.from_pretrained(source.target, **kwargs)
        except ValueError as exc:
            # AutoPipeline only knows text-to-image families it maps; anything else loads generically.
            if "AutoPipeline" not in str(exc):
                raise
            return DiffusionPipeline.from_pretrained(source.target, **kwargs)
    except ModelError:
        raise
    except Exception as exc:
        where = f"folder '{source.target}'" if source.repo_id is None else f"hf model '{source.repo_id}'"
        if isinstance(exc, KeyError):  # model_index.json without the keys every pipeline folder has
            raise ModelError(
                f"cannot load the diffusers pipeline from {where}: its model_index.json lacks {exc}; "
                "point --image-model at a folder written by save_pretrained"
            ) from exc
        raise ModelError(f"cannot load the diffusers pipeline from {where}: {one_line(exc)}") from exc


def pipeline_kwargs(index: dict[str, Any] | None) -> dict[str, Any]:
    """`safety_checker=None` and friends, only for pipelines whose constructor takes them (SD1.x)."""
    if not index:
        return {}
    import diffusers

    cls = getattr(diffusers, str(index.get("_class_name", "")), None)
    params = call_params(cls.__init__) if cls is not None else {}
    takes = "safety_checker" in params if params else "safety_checker" in index
    if not takes:
        return {}
    kwargs: dict[str, Any] = {"safety_checker": None}
    if "requires_safety_checker" in params or not params:
        kwargs["requires_safety_checker"] = False
    return kwargs


def apply_placement(pipe: Any, plan: Placement) -> None:
    """Move the pipeline where the plan says, or install the offload hooks it chose."""
    gpu = int(plan.device.split(":", 1)[1]) if plan.device.startswith("cuda:") else 0
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(gpu_id=gpu)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(gpu_id=gpu)
    elif plan.device != "cpu":
        pipe.to(plan.device)
