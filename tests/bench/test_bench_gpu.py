"""bench/gpu.py builds the real SDXL and SD3.5-medium shapes on CUDA: check those configs here, on the meta device
(no memory, no weights), so a GPU run never starts with a pipeline that does not construct."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module
    spec.loader.exec_module(module)
    return module


def billions(pipe) -> dict[str, float]:
    import torch

    return {
        name: sum(p.numel() for p in part.parameters()) / 1e9
        for name, part in pipe.components.items()
        if isinstance(part, torch.nn.Module)
    }


def test_the_sdxl_shape_has_sdxl_base_sizes(gpu_bench) -> None:
    import torch

    with torch.device("meta"):
        sizes = billions(gpu_bench._sdxl())
    assert sizes["unet"] == pytest.approx(2.567, abs=0.01)  # SDXL base's UNet
    assert sizes["text_encoder_2"] == pytest.approx(0.63, abs=0.02)  # OpenCLIP bigG, small vocabulary
    assert 3.3 < sum(sizes.values()) < 3.5


def test_the_sd35_medium_shape_has_its_sizes(gpu_bench) -> None:
    import torch

    with torch.device("meta"):
        sizes = billions(gpu_bench._sd3())
    assert sizes["transformer"] == pytest.approx(2.24, abs=0.05)  # MMDiT-X, 24 layers
    assert sizes["text_encoder_3"] == pytest.approx(4.63, abs=0.05)  # T5-XXL encoder, small vocabulary
