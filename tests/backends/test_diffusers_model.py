"""The diffusers backend, driven through the real loader on tiny random-weight pipelines saved to disk."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from refineloop.backends.image.diffusers import DiffusersImageModel, Placement, load_diffusers, weight_bytes
from refineloop.backends.image.diffusers.log_filters import DropBenignTruncation
from refineloop.backends.image.protocol import ImageModel, ImageRequest
from refineloop.errors import ModelError

MODEL_LOGGER = DiffusersImageModel.__module__

# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sd(tiny_sd_dir: Path) -> DiffusersImageModel:
    return load_diffusers(str(tiny_sd_dir))


@pytest.fixture(scope="module")
def sd3(tiny_sd3_dir: Path) -> DiffusersImageModel:
    return load_diffusers(str(tiny_sd3_dir))


@pytest.fixture
def diffusers_records() -> Iterator[list[logging.LogRecord]]:
    """Records reaching diffusers' library logger (it does not propagate to root, so caplog misses them)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.WARNING)
    root = logging.getLogger("diffusers")
    old_level = root.level
    root.setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _pixels(image: Image.Image) -> bytes:
    return image.convert("RGB").tobytes()


def _request(seeds: tuple[int, ...], **extra: Any) -> ImageRequest:
    return ImageRequest(prompt="a red cat on the sea", negative_prompt="dark", seeds=seeds, steps=2, **extra)


# ---------------------------------------------------------------------------------------------- traits


def test_sd_traits_come_from_the_pipeline(sd: DiffusersImageModel) -> None:
    assert isinstance(sd, ImageModel)
    assert sd.traits.prompt_budget == 77
    assert sd.traits.negative_prompt is True
    assert sd.traits.img2img is True
    assert sd.traits.strength is True
    assert sd.placement.startswith(("cpu (float32)", "cuda:", "mps"))
    assert "\n" not in sd.placement


def test_sd3_budget_is_the_t5_budget(sd3: DiffusersImageModel) -> None:
    assert sd3.traits.prompt_budget == 256
    assert sd3.traits.prompt_budget > 77
    assert sd3.traits.negative_prompt is True
    assert sd3.traits.img2img is True
    assert sd3.traits.strength is True


def test_img2img_shares_the_text_to_image_weights(sd: DiffusersImageModel, sd3: DiffusersImageModel) -> None:
    assert sd.img2img_pipe is not None and sd.img2img_pipe is not sd.pipe
    assert sd.img2img_pipe.unet is sd.pipe.unet
    assert sd.img2img_pipe.vae is sd.pipe.vae
    a = next(sd.img2img_pipe.unet.parameters())
    b = next(sd.pipe.unet.parameters())
    assert a.data_ptr() == b.data_ptr()
    assert sd3.img2img_pipe.transformer is sd3.pipe.transformer
    assert sd3.img2img_pipe.text_encoder_3 is sd3.pipe.text_encoder_3


# ---------------------------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("which", ["sd", "sd3"])
def test_same_seed_same_pixels_different_seed_different(which: str, request: pytest.FixtureRequest) -> None:
    model: DiffusersImageModel = request.getfixturevalue(which)
    first = model.generate(_request((7,)))
    again = model.generate(_request((7,)))
    other = model.generate(_request((8,)))
    assert len(first) == len(again) == len(other) == 1
    assert _pixels(first[0]) == _pixels(again[0])
    assert _pixels(first[0]) != _pixels(other[0])


def test_batch_returns_one_image_per_seed_in_order(sd: DiffusersImageModel) -> None:
    import numpy as np

    batch = sd.generate(_request((3, 4, 5)))
    assert len(batch) == 3
    assert all(img.size == (64, 64) for img in batch)
    alone = sd.generate(_request((4,)))[0]
    # One generator per image: seed 4 gives the same picture alone or second in a batch (up to the
    # rounding a batched matmul may bring).
    diff = np.abs(np.asarray(alone, dtype=int) - np.asarray(batch[1], dtype=int)).max()
    assert diff <= 2
    assert sd.generate(_request(())) == []


def test_generate_many_draws_each_request_as_generate_would(sd: DiffusersImageModel) -> None:
    import numpy as np

    requests = [
        ImageRequest(prompt="a red cat", negative_prompt="dark", seeds=(1, 2), steps=2),
        ImageRequest(prompt="a blue boat", negative_prompt="", seeds=(3,), steps=2),
    ]
    drawn = sd.generate_many(requests)
    assert [len(images) for images in drawn] == [2, 1]
    for request, images in zip(requests, drawn, strict=True):
        # The same seed gives the same picture alone or in a merged call, up to batched rounding.
        for image, alone in zip(images, sd.generate(request), strict=True):
            assert np.abs(np.asarray(alone, dtype=int) - np.asarray(image, dtype=int)).max() <= 2
    assert sd.generate_many([_request(())]) == [[]]
    with pytest.raises(ValueError, match="batch keys"):
        sd.generate_many([_request((1,)), _request((2,), width=96)])


def test_size_override(sd: DiffusersImageModel) -> None:
    (img,) = sd.generate(_request((1,), width=96, height=64))
    assert img.size == (96, 64)


# ---------------------------------------------------------------------------------------------- img2img


def test_img2img_with_too_little_strength_warns_and_still_runs(
    sd: DiffusersImageModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    init = tmp_path / "init.png"
    sd.generate(_request((1,)))[0].resize((80, 48)).convert("L").save(init)  # wrong size and mode on purpose
    with caplog.at_level(logging.WARNING, logger=MODEL_LOGGER):
        out = sd.generate(_request((1, 2), init_image=str(init), strength=0.1))
    assert len(out) == 2
    assert all(img.size == (64, 64) and img.mode == "RGB" for img in out)
    warned = [r.getMessage() for r in caplog.records if r.name == MODEL_LOGGER]
    assert any("raised to 0.5" in m for m in warned), warned


def test_img2img_on_sd3_runs(sd3: DiffusersImageModel, tmp_path: Path) -> None:
    init = tmp_path / "init.png"
    sd3.generate(_request((1,)))[0].save(init)
    (img,) = sd3.generate(_request((1,), init_image=str(init), strength=0.6))
    assert img.size == (64, 64)


def test_unreadable_init_image_is_a_model_error(sd: DiffusersImageModel, tmp_path: Path) -> None:
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello", encoding="utf-8")
    with pytest.raises(ModelError) as err:
        sd.generate(_request((1,), init_image=str(bad)))
    assert "\n" not in str(err.value) and "not-an-image.png" in str(err.value)


# ---------------------------------------------------------------------------------------------- tokens


def test_count_tokens_on_clip_counts_as_the_pipeline_does(sd: DiffusersImageModel) -> None:
    # BOS + three word tokens + EOS: counted the way the pipeline counts, so <= budget means nothing is cut.
    assert sd.count_tokens("a red cat") == 5
    assert sd.traits.prompt_budget == 77
    assert sd.count_tokens("a red cat on the sea " * 15) > 77


def test_count_tokens_on_sd3_uses_t5(sd3: DiffusersImageModel) -> None:
    assert sd3.count_tokens("a red cat") == 4  # T5 adds only </s>
    medium = "a red cat on the sea " * 20  # > 77 CLIP tokens, < 256 T5 tokens
    assert 77 < sd3.count_tokens(medium) <= 256 == sd3.traits.prompt_budget


# ---------------------------------------------------------------------------------------------- logs


def test_clip_truncation_warning_hidden_only_when_t5_reads_the_prompt(
    sd: DiffusersImageModel,
    sd3: DiffusersImageModel,
    diffusers_records: list[logging.LogRecord],
    caplog: pytest.LogCaptureFixture,
) -> None:
    medium = "a red cat on the sea " * 20  # cut by CLIP, whole for T5

    def clip_warnings() -> list[str]:
        return [r.getMessage() for r in diffusers_records if "because CLIP can only handle" in r.getMessage()]

    def length_warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "Token indices sequence length" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="transformers"):
        sd3.generate(ImageRequest(prompt=medium, negative_prompt="", seeds=(1,), steps=1))
        assert clip_warnings() == []
        assert length_warnings() == []
        sd.generate(ImageRequest(prompt=medium, negative_prompt="", seeds=(1,), steps=1))
        assert len(clip_warnings()) >= 1
        assert any("> 77)" in m for m in length_warnings())
    # The filter lives only for the duration of a call.
    names = {type(sd3.pipe).__module__, type(sd3.img2img_pipe).__module__, "transformers.tokenization_utils_base"}
    for name in names:
        assert not any(isinstance(f, DropBenignTruncation) for f in logging.getLogger(name).filters)


# ---------------------------------------------------------------------------------------------- errors


def _assert_one_line(err: pytest.ExceptionInfo[ModelError]) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


def test_empty_folder_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_diffusers(str(tmp_path))
    text = _assert_one_line(err)
    assert str(tmp_path) in text and "model_index.json" in text


def test_folder_missing_a_component_names_it(tiny_sd_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd_dir, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ModelError) as err:
        load_diffusers(str(broken))
    text = _assert_one_line(err)
    assert str(broken) in text and "unet" in text


def test_folder_missing_weights_is_a_model_error(tiny_sd_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "no-weights"
    shutil.copytree(tiny_sd_dir, broken)
    for weights in (broken / "vae").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelError) as err:
        load_diffusers(str(broken))
    assert str(broken) in _assert_one_line(err)


def test_missing_path_and_file_are_model_errors(tiny_sd_dir: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_diffusers("./no/such/folder")
    assert "neither an existing folder" in _assert_one_line(err)
    with pytest.raises(ModelError) as err:
        load_diffusers(str(tiny_sd_dir / "model_index.json"))
    assert "is a file" in _assert_one_line(err)


def test_uncached_hub_id_offline_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    start = time.perf_counter()
    with pytest.raises(ModelError) as err:
        load_diffusers("hf:nobody/does-not-exist")
    assert time.perf_counter() - start < 5
    text = _assert_one_line(err)
    assert "nobody/does-not-exist" in text and "hf download nobody/does-not-exist" in text


def test_uncached_hub_id_with_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import socket

    # A loopback port nobody listens on: the probe is refused at once, deterministically.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(ModelError) as err:
        load_diffusers("nobody/does-not-exist")
    assert time.perf_counter() - start < 5
    assert "cannot be reached" in _assert_one_line(err)


def test_out_of_memory_retries_once_with_offload_then_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    class StubPipe:
        """Just enough pipeline for the OOM path: no tokenizer, no img2img twin; fails `failures` times."""

        offloaded: list[int] = []
        failures = 1

        def __call__(self, prompt: str, **kwargs: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise torch.OutOfMemoryError("CUDA out of memory")
            return SimpleNamespace(images=["image"] * len(kwargs["generator"]))

        def enable_model_cpu_offload(self, gpu_id: int = 0) -> None:
            self.offloaded.append(gpu_id)

    class AnyDeviceGenerator:
        """torch.Generator on a device this machine may lack (cuda:1)."""

        def __init__(self, device: str) -> None:
            self.device = device

        def manual_seed(self, seed: int) -> AnyDeviceGenerator:
            return self

    monkeypatch.setattr(torch, "Generator", AnyDeviceGenerator)
    plan = Placement("cuda:1", "bfloat16", "none", "cuda:1 (bf16): test")
    pipe = StubPipe()
    model = DiffusersImageModel(pipe, name="stub", placement=plan)
    assert model.traits.img2img is False and model.traits.prompt_budget is None
    assert model.generate(_request((1,))) == ["image"]
    assert StubPipe.offloaded == [1] and "offload" in model.placement

    pipe.failures = 2
    with pytest.raises(ModelError) as err:
        model.generate(_request((1, 2), width=1024, height=1024))
    text = _assert_one_line(err)
    assert "smaller size" in text and "--device cpu" in text and "1024x1024" in text


def test_weight_bytes_counts_component_weights(tiny_sd_dir: Path) -> None:
    total, largest = weight_bytes(tiny_sd_dir)
    files = sorted(tiny_sd_dir.rglob("*.safetensors"))
    assert total == sum(f.stat().st_size for f in files) > 0
    assert largest == max(f.stat().st_size for f in files)
