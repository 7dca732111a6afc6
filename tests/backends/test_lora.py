"""`--lora PATH_OR_ID[:SCALE]`: a tiny LoRA trained for nothing, built for the tiny SD pipeline, loaded through
diffusers' LoRA loader by the CLI; its scale visibly changes the images, and it is recorded where a run is."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from refineloop.cli.main import main
from refineloop.run_folder.provenance import read_provenance

pytestmark = pytest.mark.slow


def pixels(path: Path) -> bytes:
    with Image.open(path) as img:
        return img.convert("RGB").tobytes()


def test_a_lora_changes_the_images_with_its_scale_and_is_recorded(tiny_sd_dir, tiny_lora, tmp_path, capsys):
    common = ["run", "--image-model", str(tiny_sd_dir), "--eval-model", "demo", "--steps", "2"]
    common += ["--max-iterations", "1", "--seed", "3"]
    runs = {}
    for name, flags in (
        ("plain", []),
        ("zero", ["--lora", f"{tiny_lora}:0"]),
        ("full", ["--lora", f"{tiny_lora}:1.5"]),
    ):
        assert main([*common, *flags, "--output-dir", str(tmp_path / name)]) == 0, capsys.readouterr()
        runs[name] = tmp_path / name
    out = capsys.readouterr().out
    assert f"LoRAs: {tiny_lora}:1.5" in out
    # Scale 0 leaves the model as it was; scale 1.5 draws another picture from the same prompt and seed.
    assert pixels(runs["zero"] / "01.png") == pixels(runs["plain"] / "01.png")
    assert pixels(runs["full"] / "01.png") != pixels(runs["plain"] / "01.png")
    record = read_provenance(runs["full"] / "01.png")
    # Named by the file's stem, never its path; hashed as A1111 does (AutoV3: the tensor data after the header).
    data = tiny_lora.read_bytes()
    autov3 = hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]
    assert record["loras"] == [{"source": "tiny", "scale": 1.5, "hash": autov3}]
    with Image.open(runs["full"] / "01.png") as img:
        text = img.text["parameters"] + img.text["refineloop"]
        assert f"Lora hashes: {json.dumps(f'tiny: {autov3}')}" in text and 'LoRA: "tiny:1.5"' in text
        assert str(tiny_lora.parent) not in text and str(tiny_sd_dir) not in text
    assert json.loads((runs["full"] / "run.json").read_text())["loras"] == [f"{tiny_lora}:1.5"]
    assert "loras" not in json.loads((runs["plain"] / "run.json").read_text())


def test_a_lora_folder_loads_too_and_the_scale_defaults_to_one(tiny_sd_dir, tiny_lora, tmp_path, capsys):
    common = ["run", "--image-model", str(tiny_sd_dir), "--eval-model", "demo", "--steps", "2"]
    common += ["--max-iterations", "1", "--seed", "3"]
    assert main([*common, "--lora", str(tiny_lora.parent), "--output-dir", str(tmp_path / "dir")]) == 0
    assert main([*common, "--lora", f"{tiny_lora}:1", "--output-dir", str(tmp_path / "one")]) == 0
    assert pixels(tmp_path / "dir" / "01.png") == pixels(tmp_path / "one" / "01.png")
    (lora,) = read_provenance(tmp_path / "dir" / "01.png")["loras"]
    assert lora["source"] == tiny_lora.parent.name and lora["scale"] == 1.0
    assert lora["hash"] == read_provenance(tmp_path / "one" / "01.png")["loras"][0]["hash"], "the same file inside"


def test_lora_mistakes_are_one_line_and_make_nothing(tiny_sd_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    cases = [
        (["--lora", "style.safetensors:99"], "must be a number from -10 to 10"),
        (["--lora", "x.safetensors", "--image-model", "sketch"], "--lora needs an image model that takes LoRAs"),
        (["--lora", "nobody/no-such-lora", "--image-model", str(tiny_sd_dir)], "not in the local Hugging Face cache"),
        (
            ["--lora", "./missing.safetensors", "--image-model", str(tiny_sd_dir)],
            "LoRA './missing.safetensors' not found",
        ),
        (["--lora", str(junk), "--image-model", str(tiny_sd_dir)], "cannot load LoRA"),
    ]
    for flags, words in cases:
        assert main(["run", "--eval-model", "demo", *flags, "--output-dir", str(tmp_path / "r")]) == 2, flags
        err = capsys.readouterr().err
        # The last line is the error (a LoRA that fails to load does so after the pipeline's progress bars).
        assert words in err.strip().splitlines()[-1] and "Traceback" not in err, err
        assert not (tmp_path / "r").exists()
