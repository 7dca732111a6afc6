"""Where a diffusers pipeline runs: device, dtype and CPU offload, decided from free GPU memory and model size.

`decide_placement` is pure (no torch), so every branch is unit-tested without a GPU; `plan_placement` probes
the hardware and applies the caller's `--device` / `--dtype` overrides on top of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from refineloop.errors import ModelError

FIT_MARGIN = 1.3
"""Weights need headroom on the GPU for activations and the VAE decode: pin only when size * margin fits."""

_GB = 1e9
_DTYPE_NAMES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}
_DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "float32"}


@dataclass(frozen=True)
class Placement:
    """Where a pipeline runs and why."""

    device: str
    """`cuda:N`, `mps` or `cpu`; with offload, the GPU that executes."""
    dtype: str
    """`bfloat16`, `float16` or `float32`."""
    offload: str
    """`none`, `model` (whole components swap in) or `sequential` (layer by layer, slowest)."""
    reason: str
    """One human line: where, and why."""


def _gb(n: int) -> str:
    return f"{n / _GB:.1f} GB"


def short_dtype(name: str) -> str:
    """How a placement line writes a dtype (`bf16`, `fp16`, `float32`); unknown names as they are."""
    return _DTYPE_SHORT.get(name, name)


def decide_placement(
    free_bytes: Sequence[int],
    model_bytes: int,
    mps: bool,
    *,
    largest_part_bytes: int | None = None,
    bf16: bool = True,
) -> Placement:
    """Choose device, dtype and offload from free memory per GPU and the model's size.

    `free_bytes` lists free memory per CUDA GPU (empty: none). `largest_part_bytes` is the biggest single
    component (model offload keeps one at a time on the GPU); unknown means the whole model counts as one.
    Pure: no torch, so every branch is unit-tested on a machine without a GPU.
    """
    if free_bytes:
        index = max(range(len(free_bytes)), key=lambda i: free_bytes[i])
        free = free_bytes[index]
        device = f"cuda:{index}"
        dtype = "bfloat16" if bf16 else "float16"
        short = _DTYPE_SHORT[dtype]
        if model_bytes * FIT_MARGIN <= free:
            why = f"{_gb(model_bytes)} model fits in {_gb(free)} free"
            return Placement(device, dtype, "none", f"{device} ({short}): {why}")
        part = model_bytes if largest_part_bytes is None else largest_part_bytes
        if part * FIT_MARGIN <= free:
            why = f"{_gb(model_bytes)} model does not fit in {_gb(free)} free, its largest part ({_gb(part)}) does"
            return Placement(device, dtype, "model", f"{device} ({short}, model CPU offload): {why}")
        why = f"not even the largest part ({_gb(part)}) fits in {_gb(free)} free; expect slow steps"
        return Placement(device, dtype, "sequential", f"{device} ({short}, sequential CPU offload): {why}")
    if mps:
        return Placement("mps", "float16", "none", "mps (fp16): Apple GPU found, no CUDA GPU")
    return Placement("cpu", "float32", "none", "cpu (float32): no GPU found")


def dtype_name(dtype: str) -> str:
    """Normalise a user's dtype spelling (`bf16`, `float16`, ...) or raise a one-line ModelError."""
    name = _DTYPE_NAMES.get(dtype.strip().lower())
    if name is None:
        raise ModelError(f"unknown dtype '{dtype}': use one of bf16, fp16 or fp32")
    return name


def probe_hardware() -> tuple[list[int], bool, bool]:
    """Free bytes per CUDA GPU, whether Apple MPS is usable, whether the GPUs take bf16."""
    import torch

    free: list[int] = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free.append(int(torch.cuda.mem_get_info(i)[0]))
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    bf16 = bool(free) and torch.cuda.is_bf16_supported()
    return free, mps, bf16


def plan_placement(
    device: str | None,
    dtype: str | None,
    model_bytes: int,
    largest_part: int | None,
) -> Placement:
    """The automatic decision, with the caller's `device` / `dtype` overrides taking precedence."""
    if device is not None and device.strip().lower() in ("cpu", "cpu:0"):
        # Asked for the CPU: no need to wake every GPU up just to measure its free memory.
        name = dtype_name(dtype) if dtype is not None else "float32"
        return Placement("cpu", name, "none", f"cpu ({_DTYPE_SHORT[name]}): device set by caller")
    free, mps, bf16 = probe_hardware()
    if device is None:
        auto = decide_placement(free, model_bytes, mps, largest_part_bytes=largest_part, bf16=bf16)
        return auto if dtype is None else _with_dtype(auto, dtype_name(dtype))
    kind, _, index_text = device.strip().lower().partition(":")
    if kind == "cuda":
        return _on_cuda(device, index_text, dtype, free, bf16, model_bytes, largest_part)
    if kind == "mps":
        if not mps:
            raise ModelError(f"device '{device}' asked but Apple MPS is not available: pass --device cpu")
        name = dtype_name(dtype) if dtype is not None else "float16"
        return Placement("mps", name, "none", f"mps ({_DTYPE_SHORT[name]}): device set by caller")
    raise ModelError(f"unknown device '{device}': use cpu, cuda, cuda:N or mps")


def _on_cuda(
    device: str,
    index_text: str,
    dtype: str | None,
    free: list[int],
    bf16: bool,
    model_bytes: int,
    largest_part: int | None,
) -> Placement:
    """The caller's `cuda` or `cuda:N`, checked against the GPUs torch sees."""
    if not free:
        raise ModelError(
            f"device '{device}' asked but torch sees no CUDA GPU: pass --device cpu, or install a CUDA build of torch"
        )
    if index_text and (not index_text.isdigit() or int(index_text) >= len(free)):
        raise ModelError(
            f"device '{device}' asked but torch sees {len(free)} CUDA GPU(s): use cuda:0 to cuda:{len(free) - 1}"
        )
    # A bare `cuda` means "a GPU": take the freest one rather than whatever is current.
    index = int(index_text) if index_text else max(range(len(free)), key=lambda i: free[i])
    # The caller picks the GPU; how much to offload onto the CPU is still decided from its free memory.
    one = decide_placement([free[index]], model_bytes, False, largest_part_bytes=largest_part, bf16=bf16)
    target = f"cuda:{index}"
    plan = replace(one, device=target, reason=one.reason.replace("cuda:0", target, 1) + "; GPU set by caller")
    return plan if dtype is None else _with_dtype(plan, dtype_name(dtype))


def _with_dtype(plan: Placement, name: str) -> Placement:
    """`plan` with the caller's dtype, its line saying so."""
    old, new = _DTYPE_SHORT[plan.dtype], _DTYPE_SHORT[name]
    reason = plan.reason.replace(f"({old}", f"({new}", 1) + "; dtype set by caller"
    return replace(plan, dtype=name, reason=reason)
