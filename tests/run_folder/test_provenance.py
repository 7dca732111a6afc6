"""Provenance inside every image: PNG text chunks in the `parameters` convention plus a JSON record, read back
by `refineloop show`, and `refineloop run --from IMAGE` starting a new run that remakes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from refineloop.cli.main import main
from refineloop.run_folder.provenance import parse_parameters, read_provenance
from tests.conftest import images_in

FIELDS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "width", "height", "strength", "model", "run_id")


def chunks(path: Path) -> dict[str, str]:
    with Image.open(path) as img:
        img.load()
        return dict(img.text)


@pytest.fixture(scope="module")
def diffusers_run(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> Path:
    """A 3-image img2img run of the tiny SD pipeline with the demo critic, made through the CLI."""
    root = tmp_path_factory.mktemp("prov")
    args = ["run", "--image-model", str(tiny_sd_dir), "--eval-model", "demo", "--strategy", "img2img"]
    args += ["--steps", "3", "--guidance", "6.5", "--max-iterations", "3", "--seed", "8"]
    assert main([*args, "--output-dir", str(root / "run")]) == 0
    return root / "run"


def test_every_image_carries_its_parameters_and_full_record(diffusers_run: Path, tiny_sd_dir: Path) -> None:
    for name in images_in(diffusers_run):
        texts = chunks(diffusers_run / name)
        record = json.loads(texts["refineloop"])
        sidecar = json.loads((diffusers_run / name.replace(".png", ".json")).read_text())
        assert record["prompt"] == sidecar["prompt"] and record["seed"] == sidecar["seed"]
        assert (record["steps"], record["guidance"], record["width"], record["height"]) == (3, 6.5, 64, 64)
        assert record["model"] == tiny_sd_dir.name and record["run_id"] == "run", "the folder's name, not its path"
        assert record["negative_prompt"].startswith("multiple, two")
        assert record["task"]["goal"] == "make a single hotdog look as visually hot as possible"
        # The parameters text: prompt, the negative prompt line, then the settings line tools split on ", ".
        lines = texts["parameters"].split("\n")
        assert lines[0] == record["prompt"] and lines[1] == f"Negative prompt: {record['negative_prompt']}"
        assert lines[2].startswith(
            f"Steps: 3, Sampler: DDIM, Schedule type: Automatic, CFG scale: 6.5, Seed: {record['seed']}, "
            f"Size: 64x64, Model hash: {record['model_hash']}, Model: {tiny_sd_dir.name}, "
        )
        assert "Run: run" in lines[2]
        read_back = parse_parameters(texts["parameters"])
        assert {k: read_back[k] for k in FIELDS} == {k: record[k] for k in FIELDS}
    second = read_provenance(diffusers_run / "02.png")
    assert second["strength"] == 0.8 and second["init_image"] == "01.png"
    assert "Denoising strength: 0.8" in chunks(diffusers_run / "02.png")["parameters"]
    # best.png is a byte copy of the best image, chunks and all.
    best = json.loads(chunks(diffusers_run / "best.png")["refineloop"])["iteration"]
    assert (diffusers_run / "best.png").read_bytes() == (diffusers_run / f"{best:02d}.png").read_bytes()


def test_show_prints_the_record(diffusers_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(diffusers_run / "02.png")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    record = read_provenance(diffusers_run / "02.png")
    assert f"prompt: {' '.join(record['prompt'].split())}" in out
    assert f"seed: {record['seed']}" in out
    assert "steps: 3" in out and "guidance: 6.5" in out and "size: 64x64" in out
    assert "strength: 0.8 (image-to-image from 01.png)" in out and "run: run, image 2" in out
    assert f"remake it: refineloop run --from {diffusers_run / '02.png'} --image-model " in out
    assert main(["show", "--json", str(diffusers_run / "02.png")]) == 0
    assert json.loads(capsys.readouterr().out) == record


def test_run_from_an_image_remakes_it_first(tiny_sd_dir: Path, tmp_path: Path, capsys) -> None:
    model = ["--image-model", str(tiny_sd_dir), "--eval-model", "demo"]
    made = ["run", *model, "--steps", "2", "--guidance", "4", "--strategy", "greedy", "--max-iterations", "2"]
    assert main([*made, "--seed", "5", "--output-dir", str(tmp_path / "first")]) == 0
    source = tmp_path / "first" / "02.png"
    # No --steps, --guidance or --seed: the image's own steps, guidance and seed draw the first image again.
    args = ["run", "--from", str(source), *model]
    assert main([*args, "--max-iterations", "2", "--output-dir", str(tmp_path / "again")]) == 0
    assert "warning" not in capsys.readouterr().out
    first = tmp_path / "again" / "01.png"
    with Image.open(source) as a, Image.open(first) as b:
        assert a.tobytes() == b.tobytes(), "the same pixels: same prompt, seed, steps, guidance and size"
    old, new = read_provenance(source), read_provenance(first)
    assert {k: new[k] for k in ("prompt", "negative_prompt", "seed", "steps", "guidance")} == {
        k: old[k] for k in ("prompt", "negative_prompt", "seed", "steps", "guidance")
    }
    assert new["run_id"] == "again" and new["task"] == old["task"]


def test_run_from_with_another_goal_or_model_warns_and_keeps_the_prompt(diffusers_run: Path, tmp_path: Path, capsys):
    source = diffusers_run / "03.png"
    args = ["run", "--from", str(source), "--goal", "a calm blue teapot", "--max-iterations", "1"]
    assert main([*args, "--output-dir", str(tmp_path / "other")]) == 0
    out = capsys.readouterr().out
    assert "was drawn by" in out and "the first image will not be the same picture" in out
    assert "was drawn image-to-image from 02.png" in out
    record = read_provenance(tmp_path / "other" / "01.png")
    assert record["task"]["goal"] == "a calm blue teapot"
    assert read_provenance(source)["base_prompt"] in record["prompt"]
    assert record["seed"] == read_provenance(source)["seed"]


def test_show_reads_another_tools_parameters_and_refuses_what_has_none(tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "webui.png"
    info = PngInfo()
    info.add_text(
        "parameters",
        "a lighthouse at dusk, oil painting\nNegative prompt: blurry\n"
        'Steps: 28, Sampler: Euler a, CFG scale: 5, Seed: 1234, Size: 64x64, Model: "sdxl, v1"',
    )
    Image.new("RGB", (64, 64), (10, 20, 30)).save(foreign, pnginfo=info)
    assert main(["show", str(foreign)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "prompt: a lighthouse at dusk, oil painting" in out and "seed: 1234" in out
    assert "model: sdxl, v1" in out and "not written by refineloop" in out

    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    for path, words in ((plain, "carries no provenance"), (tmp_path / "nope.png", "not found")):
        assert main(["show", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and "Traceback" not in err

    # A starting image from another tool: its first phrase anchors the subject, so image 1 has its prompt.
    assert main(["demo", "--from", str(foreign), "--max-iterations", "1", "--output-dir", str(tmp_path / "r")]) == 0
    record = read_provenance(tmp_path / "r" / "01.png")
    assert record["prompt"] == "a lighthouse at dusk, oil painting" and record["seed"] == 1234


def test_a_hostile_record_is_shown_without_control_characters(tmp_path: Path, capsys) -> None:
    evil = tmp_path / "evil.png"
    info = PngInfo()
    info.add_text("refineloop", json.dumps({"prompt": "red\x1b]0;pwned\x07 hotdog\x1b[2J", "seed": "x"}))
    Image.new("RGB", (8, 8)).save(evil, pnginfo=info)
    assert main(["show", str(evil)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "red hotdog" in out
    # Starting a run from it is refused in one line that names the file, and makes nothing.
    assert main(["demo", "--from", str(evil), "--max-iterations", "1", "--output-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{evil} records a prompt refineloop cannot use" in err
    assert not (tmp_path / "r").exists()
