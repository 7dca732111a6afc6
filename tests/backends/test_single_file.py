"""Single-file checkpoints (`--image-model FILE.safetensors`): the tiny SD 1.x pipeline written back in the original
key layout loads offline and draws the folder's own pixels; a pickle, an unknown layout and a missing configuration
are one line each; the file's AutoV2 hash is recorded and computed once."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from refineloop.backends.image.diffusers.loading import load_diffusers
from refineloop.backends.image.diffusers.single_file import load_single_file
from refineloop.backends.image.file_hash import autov2_hash, cache_file
from refineloop.backends.image.protocol import ImageRequest
from refineloop.cli.main import main
from refineloop.run_folder.provenance import read_provenance
from tests.ldm_checkpoint import write_ldm_checkpoint

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
REQUEST = ImageRequest(prompt="a red cat", negative_prompt="", seeds=(3, 4), steps=2, width=64, height=64)


@pytest.fixture(scope="session")
def ldm_file(tiny_sd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD 1.x pipeline as one original-layout checkpoint, the way model sites ship them."""
    return write_ldm_checkpoint(tiny_sd_dir, tmp_path_factory.mktemp("checkpoints") / "tinymix_v2.safetensors")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network, an empty hub cache and a hash cache of this test's own."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return hub


def _run(out: Path, model: str, *extra: str) -> int:
    args = ["run", "--image-model", model, "--steps", "2", "--width", "64", "--height", "64", "--seed", "5"]
    return main([*args, "--max-iterations", "1", "--final-pick", "0", "--output-dir", str(out), *extra])


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.slow
def test_a_single_file_draws_the_folders_pixels_and_records_name_and_hash(ldm_file, tiny_sd_dir, tmp_path, capsys):
    assert _run(tmp_path / "file", str(ldm_file), "--single-file-config", str(tiny_sd_dir)) == 0
    assert _run(tmp_path / "folder", str(tiny_sd_dir)) == 0
    with Image.open(tmp_path / "file" / "01.png") as a, Image.open(tmp_path / "folder" / "01.png") as b:
        assert a.tobytes() == b.tobytes(), "the converted checkpoint draws exactly what its source folder draws"
        text = " ".join(str(v) for v in a.text.values())
    record = read_provenance(tmp_path / "file" / "01.png")
    expected = hashlib.sha256(ldm_file.read_bytes()).hexdigest()[:10]
    assert record["model"] == "tinymix_v2" and record["model_hash"] == expected
    assert str(ldm_file.parent) not in text, "provenance names the file, never its folder"
    assert "tinymix_v2.safetensors" in capsys.readouterr().out


@pytest.mark.slow
def test_the_familys_config_comes_from_the_hub_cache_and_img2img_shares_the_weights(ldm_file, tiny_sd_dir, offline):
    # The family's own repository, as `hf download` leaves it in the cache (here: the tiny pipeline's files).
    repo = offline / f"models--{SD15_REPO.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(tiny_sd_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model = load_single_file(str(ldm_file))
    folder = load_diffusers(str(tiny_sd_dir))
    assert model.img2img_pipe is not None and model.img2img_pipe.unet is model.pipe.unet
    for a, b in zip(model.generate(REQUEST), folder.generate(REQUEST), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_a_pickle_is_refused_unless_the_user_opts_in(ldm_file, tiny_sd_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": load_file(str(ldm_file))}, ckpt)
    assert _run(tmp_path / "r", str(ckpt), "--single-file-config", str(tiny_sd_dir)) == 2
    err = _one_error_line(capsys)
    assert "'old.ckpt' is a pickle" in err and "--allow-pickle" in err and ".safetensors" in err
    assert not (tmp_path / "r").exists(), "nothing is left behind"
    model = load_single_file(str(ckpt), config=str(tiny_sd_dir), allow_pickle=True)
    reference = load_single_file(str(ldm_file), config=str(tiny_sd_dir))
    assert np.array_equal(np.asarray(model.generate(REQUEST)[0]), np.asarray(reference.generate(REQUEST)[0]))


def test_an_unknown_key_layout_is_one_line(tmp_path, capsys):
    odd = tmp_path / "mystery.safetensors"
    save_file({"blocks.0.weight": torch.zeros(2, 2)}, str(odd))
    assert _run(tmp_path / "r", str(odd)) == 2
    err = _one_error_line(capsys)
    assert "'mystery.safetensors' has an unknown key layout" in err and "'blocks.0.weight'" in err
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(2, 2)}, str(lora))
    assert _run(tmp_path / "r", str(lora)) == 2
    assert "looks like a LoRA: pass it with --lora" in _one_error_line(capsys)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\xff" * 64)
    assert _run(tmp_path / "r", str(broken)) == 2
    assert "'broken.safetensors' is not a readable safetensors file" in _one_error_line(capsys)


def test_a_missing_configuration_names_the_repository_to_download(tmp_path, capsys):
    ldm_file = _header_only(tmp_path / "tinymix_v2.safetensors", UNET)
    assert _run(tmp_path / "r", str(ldm_file)) == 2
    err = _one_error_line(capsys)
    assert f"'tinymix_v2.safetensors' is SD 1.x, and its configuration ({SD15_REPO}) is not in the local" in err
    assert f'`hf download {SD15_REPO} --exclude "*.safetensors" "*.bin" "*.ckpt"' in err
    assert "--single-file-config DIR" in err
    assert _run(tmp_path / "r", str(ldm_file), "--single-file-config", "someone/sd15-configs") == 2
    err = _one_error_line(capsys)
    assert "--single-file-config 'someone/sd15-configs' is neither a diffusers folder nor a hub id in the local" in err
    assert "`hf download someone/sd15-configs --exclude" in err


def test_a_missing_file_and_unused_options_are_said(tmp_path, capsys):
    assert _run(tmp_path / "r", str(tmp_path / "nowhere.safetensors")) == 2
    assert _one_error_line(capsys).endswith("is not a file: check the path of the checkpoint")
    assert main(["run", "--allow-pickle", "--max-iterations", "1", "--output-dir", str(tmp_path / "s")]) == 0
    assert "warning: --allow-pickle only serves FILE.safetensors models" in capsys.readouterr().out


def _bytes_read() -> int:
    """Bytes this process has read through system calls so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts bytes read through /proc/self/io")
def test_the_hash_is_computed_once_per_file_version(tmp_path):
    weights = tmp_path / "big.safetensors"
    weights.write_bytes(np.random.default_rng(0).bytes(16 * 2**20))
    before = _bytes_read()
    first = autov2_hash(weights)
    read_first = _bytes_read() - before
    before = _bytes_read()
    again = autov2_hash(weights)
    read_again = _bytes_read() - before
    assert first == again == hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    assert read_first >= 16 * 2**20 and read_again < 2**20, (read_first, read_again)
    assert cache_file().is_relative_to(tmp_path / "xdg"), "the cache is the user's, here the test's own"
    with weights.open("r+b") as fh:  # same size, new content and modification time: hashed again
        fh.write(b"changed")
    assert autov2_hash(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()[:10] != first


def _header_only(path: Path, shapes: dict[str, list[int]]) -> Path:
    """A safetensors file whose header names these tensors (the family test reads nothing past the header)."""
    header = json.dumps(
        {name: {"dtype": "F16", "shape": shape, "data_offsets": [0, 0]} for name, shape in shapes.items()}
    )
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode())
    return path


UNET = {"model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3]}
FAMILIES = {
    "SD 2.x": (
        {**UNET, "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": [320, 1024]},
        "stabilityai/stable-diffusion-2-1",
    ),
    "SDXL": (
        {**UNET, "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": [1280]},
        "stabilityai/stable-diffusion-xl-base-1.0",
    ),
    "SD 3.5 Medium": (
        {
            "model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias": [9216],
            "model.diffusion_model.pos_embed": [1, 147456, 1536],
        },
        "stabilityai/stable-diffusion-3.5-medium",
    ),
    "FLUX.1 dev": (
        {
            "double_blocks.0.img_attn.norm.key_norm.scale": [128],
            "guidance_in.in_layer.bias": [3072],
            "img_in.weight": [3072, 64],
        },
        "black-forest-labs/FLUX.1-dev",
    ),
    "FLUX.1 schnell": ({"double_blocks.0.img_attn.norm.key_norm.scale": [128]}, "black-forest-labs/FLUX.1-schnell"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_read_from_the_header_and_names_its_configuration(tmp_path, family, capsys):
    shapes, repo = FAMILIES[family]
    weights = _header_only(tmp_path / "model.safetensors", shapes)
    assert _run(tmp_path / "r", str(weights)) == 2
    err = _one_error_line(capsys)
    assert f"'model.safetensors' is {family}, and its configuration ({repo}) is not in the local" in err
    if family.startswith(("SD 3", "FLUX")):  # the file lacks the text encoders and VAE: only the transformer is skipped
        assert f'`hf download {repo} --exclude "transformer/*.safetensors"' in err
    else:
        assert f'`hf download {repo} --exclude "*.safetensors"' in err


def test_a_checkpoint_of_another_kind_is_named(tmp_path, capsys):
    inpainting = _header_only(
        tmp_path / "inpaint.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": [320, 9, 3, 3]}
    )
    assert _run(tmp_path / "r", str(inpainting)) == 2
    assert "holds a model of kind 'inpainting', which refineloop does not draw with" in _one_error_line(capsys)
