"""`--init-image`: the user's own picture is fitted, judged first as image 0, starts the first round as img2img, and
the summary, report and final pick show whether the run improved on it; with every strategy, through the CLI."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refineloop.apps.reading import read_values
from refineloop.backends.builtin import BACKENDS
from refineloop.backends.demo.sketch import SketchImageModel
from refineloop.backends.image.protocol import ImageTraits
from refineloop.backends.table import Backend, prefixed
from refineloop.cli.main import main
from refineloop.cli.run_commands import start_run
from refineloop.strategies import strategy_names
from tests.conftest import images_in, judge_reply, refineloop, wait_for

# A goal with no heat words keeps the demo critic from saying DONE, so a run makes exactly the images asked for.
STEADY = ("--goal", "a quiet blue teapot on a table", "--seed", "3")


def _three_bands(path: Path, size: tuple[int, int] = (300, 100)) -> Path:
    """A wide picture: red left third, green middle, blue right third (a centre crop keeps only green)."""
    width, height = size
    bands = np.zeros((height, width, 3), np.uint8)
    bands[:, : width // 3] = (220, 30, 30)
    bands[:, width // 3 : 2 * width // 3] = (30, 200, 40)
    bands[:, 2 * width // 3 :] = (30, 30, 220)
    Image.fromarray(bands).save(path)
    return path


def _sidecar(run: Path, n: int) -> dict:
    return json.loads((run / f"{n:02d}.json").read_text())


@pytest.mark.parametrize("strategy", strategy_names())
def test_every_strategy_judges_the_picture_first_and_draws_from_it(tmp_path, strategy, capsys):
    picture = _three_bands(tmp_path / "holiday.png")
    run = tmp_path / "run"
    args = ["run", "--init-image", str(picture), "--strategy", strategy, "--initial-strength", "0.6", *STEADY]
    assert main([*args, "--max-iterations", "2", "--output-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "[ 0/2] score" in out and "baseline" in out, "the terminal shows the picture's judgement first"
    assert images_in(run)[0] == "00.png"
    with Image.open(run / "00.png") as kept:
        assert kept.size == (256, 256), "fitted to the sketch painter's default size"
    baseline = _sidecar(run, 0)
    assert baseline["decision"] == "baseline" and baseline["score"] is not None and baseline["source"] == "holiday.png"
    first = _sidecar(run, 1)
    assert Path(first["init_image"]).name == "00.png" and first["strength"] == 0.6
    summary = (run / "summary.txt").read_text()
    assert "[00] score" in summary and "your picture holiday.png" in summary
    assert "started from holiday.png (image 0, " in summary
    assert "started from" in (run / "report.html").read_text()
    assert "final_pick" in baseline, "the picture meets the drawn images again at the final pick"
    meta = json.loads((run / "run.json").read_text())
    values = read_values(str(run), meta["thread_id"])
    assert [h["iteration"] for h in values["history"]][0] == 0


def test_a_picture_no_drawn_image_beats_stays_best(tmp_path, scripted, run_settings, quiet):
    picture = _three_bands(tmp_path / "mine.jpg")
    cache, critic = scripted([judge_reply(9), judge_reply(4), judge_reply(5)])
    settings = run_settings(init_image=str(picture), strategy="greedy", max_iterations=2, final_pick=0)
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert outcome.values["best"]["iteration"] == 0
    assert (run / "best.png").read_bytes() == (run / "00.png").read_bytes()
    summary = (run / "summary.txt").read_text()
    assert "started from mine.jpg (image 0, 9/10): no drawn image beat it, so best.png is your picture" in summary
    assert [h["iteration"] for h in outcome.values["history"]] == [0, 1, 2]


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP"])
def test_the_picture_is_centre_cropped_to_the_runs_aspect_then_resized(tmp_path, kind, capsys):
    picture = _three_bands(tmp_path / "source.png")
    with Image.open(picture) as img:
        img.save(tmp_path / f"wide.{kind.lower()}", format=kind)
    run = tmp_path / "run"
    args = ["run", "--init-image", str(tmp_path / f"wide.{kind.lower()}"), "--width", "64", "--height", "96"]
    assert main([*args, *STEADY, "--max-iterations", "1", "--output-dir", str(run)]) == 0
    with Image.open(run / "00.png") as kept:
        assert kept.size == (64, 96)
        pixels = np.asarray(kept.convert("RGB"), dtype=float)
    red, green, blue = pixels[:, 4:-4].reshape(-1, 3).mean(axis=0)
    assert green > 150 and red < 80 and blue < 80, "only the middle (green) band is kept: nothing is stretched"
    with Image.open(run / "01.png") as drawn:
        assert drawn.size == (64, 96)


def test_pictures_that_cannot_start_a_run_are_one_line(tmp_path, capsys):
    photo = _three_bands(tmp_path / "photo.png")
    gif = tmp_path / "anim.gif"
    Image.new("RGB", (8, 8)).save(gif)
    cases = [
        (["--init-image", str(tmp_path / "missing.png")], "--init-image", "no such file"),
        (["--init-image", str(gif)], "is a GIF file", "convert it to PNG, JPEG or WebP"),
        (["--init-image", str(tmp_path)], "is a folder", "name a picture"),
        (["--from", str(photo)], "carries no provenance", f"--init-image {photo}"),
    ]
    for flags, *words in cases:
        assert main(["run", *flags, "--output-dir", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and all(w in err for w in words), err
        assert not (tmp_path / "r").exists()


def test_a_picture_too_large_to_open_safely_is_one_line(tmp_path, capsys, monkeypatch):
    photo = _three_bands(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's decompression-bomb limit, lowered for a small file
    assert main(["run", "--init-image", str(photo), "--output-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("has too many pixels to open safely: scale it down first") and "\n" not in err


class TextOnly(SketchImageModel):
    """A painter that cannot start from a picture (as a text-to-image-only backend would say)."""

    traits = ImageTraits(prompt_budget=77, negative_prompt=True, img2img=False, strength=False)


def test_backends_that_cannot_start_from_a_picture_refuse_in_one_line(tmp_path, capsys, scripted, run_settings):
    entry = Backend(
        name="flat",
        kind="image",
        syntax="flat:<any>",
        summary="a test backend without img2img",
        claims=prefixed("flat"),
        load=lambda spec, settings: TextOnly(),
        img2img=False,
    )
    saved = list(BACKENDS.entries)
    BACKENDS.register(entry)
    photo = _three_bands(tmp_path / "photo.png")
    try:
        assert (
            main(["run", "--image-model", "flat:x", "--init-image", str(photo), "--output-dir", str(tmp_path / "r")])
            == 2
        )
    finally:
        BACKENDS.entries[:] = saved
    err = capsys.readouterr().err.strip()
    assert err == "refineloop: error: --init-image starts images from a picture, which flat models cannot do"
    # A model whose own traits say so (the table cannot know before it loads) is refused before any image.
    cache, _ = scripted([judge_reply(5)])
    cache.register_image("sketch", TextOnly())
    with pytest.raises(Exception, match="cannot start from a picture") as refused:
        start_run(run_settings(init_image=str(photo)), models=cache, out=io.StringIO())
    assert "\n" not in str(refused.value)


@pytest.mark.slow
def test_a_crash_after_the_baseline_resumes_without_judging_it_again(tmp_path, start_cli):
    photo = _three_bands(tmp_path / "photo.png")
    args = ("run", *STEADY, "--init-image", str(photo), "--image-model", "sketch:delay=0.5", "--max-iterations", "4")
    proc = start_cli(*args, "--final-pick", "0", "--output-dir", "r")
    run = tmp_path / "r"
    wait_for(lambda: (run / "02.png").exists())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = refineloop("resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert images_in(run) == [f"{i:02d}.png" for i in range(5)]
    meta = json.loads((run / "run.json").read_text())
    assert [h["iteration"] for h in read_values(str(run), meta["thread_id"])["history"]] == [0, 1, 2, 3, 4]
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    assert sum(t["kind"] == "baseline" for t in trace) == 1
    assert [t["iteration"] for t in trace if t.get("role") == "judge#1"].count(0) == 1, "judged once"


@pytest.mark.slow
def test_a_diffusers_model_starts_from_the_picture_at_its_own_default_size(tmp_path, tiny_sd_dir, capsys):
    photo = _three_bands(tmp_path / "photo.webp", size=(90, 30))
    run = tmp_path / "run"
    args = ["run", "--image-model", str(tiny_sd_dir), "--init-image", str(photo), "--steps", "4", *STEADY]
    assert main([*args, "--strategy", "img2img", "--max-iterations", "2", "--output-dir", str(run)]) == 0
    with Image.open(run / "00.png") as kept, Image.open(run / "01.png") as drawn:
        assert kept.size == drawn.size == (64, 64), "fitted to the pipeline's default size, which it draws at"
    first, second = _sidecar(run, 1), _sidecar(run, 2)
    assert Path(first["init_image"]).name == "00.png" and first["strength"] == 0.8
    assert second["init_image"] is not None, "img2img walks on from the best image"
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    assert [Path(t["init_image"]).name for t in trace if t["kind"] == "image"][0] == "00.png"


def test_a_phone_photos_rotation_is_applied_before_fitting(tmp_path):
    wide = _three_bands(tmp_path / "bands.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned, viewers rotate the stored pixels 90 degrees
    with Image.open(wide) as img:
        img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    run = tmp_path / "run"
    args = ["run", "--init-image", str(tmp_path / "phone.jpg"), "--width", "64", "--height", "192", *STEADY]
    assert main([*args, "--max-iterations", "1", "--output-dir", str(run)]) == 0
    with Image.open(run / "00.png") as kept:
        pixels = np.asarray(kept.convert("RGB"), dtype=float)
    top, bottom = pixels[:40].reshape(-1, 3).mean(axis=0), pixels[-40:].reshape(-1, 3).mean(axis=0)
    # Upright, the bands run top to bottom: the picture is 1:3 like the run, so nothing is cropped.
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0], (top, bottom)
