"""The diffusers backend: a diffusers pipeline behind the ImageModel protocol.

One module per concept: `sources` (local folder or hub id, checked before the load), `placement` (device,
dtype and CPU offload), `traits` (what the pipeline can do, read from it), `log_filters` (library log noise),
`loras` (`--lora` adapters), `model` (`DiffusersImageModel`: tokens and generation) and `loading`
(`load_diffusers`, which ties them together).

Torch, diffusers and huggingface_hub are imported inside functions: importing them costs seconds, and this
package is also imported by code paths (CLI help, tests of the pure placement logic) that never load a model.
"""

from __future__ import annotations

from refineloop.backends.image.diffusers.loading import load_diffusers
from refineloop.backends.image.diffusers.model import DiffusersImageModel
from refineloop.backends.image.diffusers.placement import Placement, decide_placement, plan_placement
from refineloop.backends.image.diffusers.sources import weight_bytes

__all__ = ["DiffusersImageModel", "Placement", "decide_placement", "load_diffusers", "plan_placement", "weight_bytes"]
