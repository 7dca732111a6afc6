"""PNGs written off the critical path: a process killed before an image's file lands resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import images_in, refineloop, start_cli_in

pytestmark = pytest.mark.slow

# Big, so each PNG takes a moment to encode on the writer thread; no heat words, so no DONE.
FLAGS = ["--goal", "a quiet blue teapot", "--strategy", "greedy", "--seed", "11", "--max-iterations", "4"]
FLAGS += ["--image-model", "sketch:size=4096", "--judge-image-size", "256"]


def drawn_but_not_written(run: Path) -> int | None:
    """An image whose generate step is checkpointed while its PNG has not landed. The critic's first call
    after the image's trace line shows `evaluate` has begun, so the checkpoint naming the image is committed;
    killing at the trace line alone could land before that commit, and the resume would simply draw again."""
    trace = run / "trace.jsonl"
    if not trace.exists():
        return None
    drawn = None
    for line in trace.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("kind") == "image":
            drawn = int(record["iteration"])
        elif record.get("kind") == "chat" and drawn is not None and not (run / f"{drawn:02d}.png").exists():
            return drawn
    return None


def pixels(path: Path) -> bytes:
    with Image.open(path) as picture:
        return picture.convert("RGB").tobytes()


@pytest.mark.parametrize("walk", [(), ("--draft-walk", "--draft-size", "2048")], ids=["images", "walk"])
def test_killed_before_the_png_lands_the_resume_remakes_it_exactly(tmp_path: Path, walk: tuple[str, ...]) -> None:
    # On a walk the lost image is a draft: it is remade as a draft (its size), and the stop's full image follows.
    whole = refineloop("demo", *FLAGS, *walk, "--output-dir", "whole", cwd=tmp_path, timeout=300)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    run = tmp_path / "cut"
    proc = start_cli_in(tmp_path, "demo", *FLAGS, *walk, "--output-dir", "cut")
    lost = None
    deadline = time.time() + 120
    while lost is None and time.time() < deadline and proc.poll() is None:
        lost = drawn_but_not_written(run)
        time.sleep(0.005)
    assert lost is not None, "never caught an image between its generate step and its file"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / f"{lost:02d}.png").exists()

    resumed = refineloop("resume", str(run), cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "remade" and lost in r["images"] for r in trace), "the lost image was not remade"
    assert images_in(run) == images_in(tmp_path / "whole")
    for name in [*images_in(run), "best.png"]:
        assert pixels(run / name) == pixels(tmp_path / "whole" / name), name
    # The critic saw each image at its working size, and the trace says how many bytes went out.
    sent = [r["sent"]["image_bytes"] for r in trace if r["kind"] == "chat" and r["sent"].get("image")]
    assert sent and all(0 < size < 60_000 for size in sent), sent
