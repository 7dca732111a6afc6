"""Placement of a diffusers pipeline: device, dtype and CPU offload from free GPU memory, and the caller's
overrides. Pure logic: the hardware probe is replaced, so every branch runs on a machine without a GPU."""

from __future__ import annotations

import pytest

from refineloop.backends.image.diffusers import placement
from refineloop.backends.image.diffusers.placement import decide_placement, plan_placement
from refineloop.errors import ModelError

GB = 10**9


def _assert_one_line(err: pytest.ExceptionInfo[ModelError]) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


def test_placement_pins_the_freest_gpu_when_the_model_fits() -> None:
    plan = decide_placement([10 * GB, 70 * GB], 5 * GB, False)
    assert (plan.device, plan.dtype, plan.offload) == ("cuda:1", "bfloat16", "none")
    assert plan.reason == "cuda:1 (bf16): 5.0 GB model fits in 70.0 GB free"
    # Exactly size * margin still fits.
    assert decide_placement([13 * GB], 10 * GB, False).offload == "none"


def test_placement_offloads_whole_components_when_too_big() -> None:
    plan = decide_placement([20 * GB, 8 * GB], 30 * GB, False, largest_part_bytes=9 * GB)
    assert (plan.device, plan.offload) == ("cuda:0", "model")
    assert "model CPU offload" in plan.reason and "30.0 GB" in plan.reason


def test_placement_goes_sequential_when_far_too_big() -> None:
    plan = decide_placement([8 * GB], 30 * GB, False, largest_part_bytes=20 * GB)
    assert (plan.device, plan.offload) == ("cuda:0", "sequential")
    assert "sequential CPU offload" in plan.reason
    # Unknown part sizes: the whole model counts as one part.
    assert decide_placement([8 * GB], 30 * GB, False).offload == "sequential"


def test_placement_without_gpu_and_with_mps() -> None:
    cpu = decide_placement([], 5 * GB, False)
    assert (cpu.device, cpu.dtype, cpu.offload) == ("cpu", "float32", "none")
    assert cpu.reason == "cpu (float32): no GPU found"
    mps = decide_placement([], 5 * GB, True)
    assert (mps.device, mps.dtype) == ("mps", "float16")
    assert decide_placement([40 * GB], 5 * GB, True).device == "cuda:0"  # CUDA wins over MPS
    assert decide_placement([40 * GB], 5 * GB, False, bf16=False).dtype == "float16"


def test_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "probe_hardware", lambda: ([10 * GB, 50 * GB], False, True))
    assert plan_placement("cuda", None, 5 * GB, None).device == "cuda:1"
    pinned = plan_placement("cuda:0", "fp16", 5 * GB, None)
    assert (pinned.device, pinned.dtype, pinned.offload) == ("cuda:0", "float16", "none")
    assert pinned.reason.startswith("cuda:0 (fp16): 5.0 GB model fits in 10.0 GB free")
    # The caller's GPU is too small for the whole model: still offloaded, on that GPU.
    offloaded = plan_placement("cuda:0", None, 9 * GB, 3 * GB)
    assert (offloaded.device, offloaded.offload) == ("cuda:0", "model")
    auto_fp32 = plan_placement(None, "fp32", 5 * GB, None)
    assert (auto_fp32.device, auto_fp32.dtype) == ("cuda:1", "float32")
    assert auto_fp32.reason.startswith("cuda:1 (float32)") and "dtype set by caller" in auto_fp32.reason
    with pytest.raises(ModelError) as err:
        plan_placement("cuda:2", None, 5 * GB, None)
    assert "cuda:0 to cuda:1" in _assert_one_line(err)
    cpu = plan_placement("cpu", None, 5 * GB, None)
    assert (cpu.device, cpu.dtype) == ("cpu", "float32")
    with pytest.raises(ModelError):
        plan_placement("mps", None, 5 * GB, None)
    with pytest.raises(ModelError):
        plan_placement("tpu", None, 5 * GB, None)
    with pytest.raises(ModelError):
        plan_placement(None, "int3", 5 * GB, None)
    monkeypatch.setattr(placement, "probe_hardware", lambda: ([], False, False))
    with pytest.raises(ModelError) as err:
        plan_placement("cuda", None, 5 * GB, None)
    assert "--device cpu" in _assert_one_line(err)
