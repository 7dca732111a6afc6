"""`--compile`: torch.compile of the image model's denoiser, where most of an image's time goes.

Regional compilation first: when the denoiser declares its repeated blocks (the UNet's transformer blocks,
FLUX's double and single blocks), diffusers compiles one block and reuses it for every copy, which takes a
fraction of a whole-model compile for nearly the same speed-up. Otherwise the whole denoiser is compiled.
Either way compiling happens lazily, during the first image, and its cost shows there; later images run the
compiled code. The bench (bench/gpu.py) prints both the compile seconds and the steady-state speed-up.

`REFINELOOP_COMPILE_BACKEND` picks another torch.compile backend (`eager` traces without generating kernels:
the tests use it to check the wiring in seconds instead of a minute of kernel compilation on a CPU).
"""

from __future__ import annotations

import os
from typing import Any

from refineloop.errors import ModelError


def compile_denoiser(model: Any) -> str:
    """Compile the denoiser of a diffusers image model in place; returns what was compiled."""
    pipe = getattr(model, "pipe", None)
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if denoiser is None:
        raise ModelError(f"--compile needs a diffusers image model with a UNet or transformer, not {model.name}")
    backend = os.environ.get("REFINELOOP_COMPILE_BACKEND", "inductor")
    blocks = getattr(denoiser, "_repeated_blocks", None)
    if blocks and hasattr(denoiser, "compile_repeated_blocks"):
        denoiser.compile_repeated_blocks(fullgraph=True, backend=backend)
        return f"compiled {type(denoiser).__name__}'s repeated blocks ({', '.join(blocks)}) with {backend}"
    denoiser.compile(backend=backend)
    return f"compiled {type(denoiser).__name__} with {backend}"
