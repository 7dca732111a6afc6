"""The CLI in real subprocesses: the demo, Ctrl-C, SIGKILL, resume, locks and run listings."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

from refineloop.apps.reading import read_values
from tests.conftest import OutputWatch, images_in, refineloop, wait_for

pytestmark = pytest.mark.slow

# A goal with no heat words keeps the demo critic from ever saying DONE, so a run makes exactly N images.
STEADY = ["--goal", "a quiet blue teapot on a table", "--strategy", "greedy", "--seed", "3"]


def history(run: Path) -> list[int]:
    meta = json.loads((run / "run.json").read_text())
    return [h["iteration"] for h in read_values(str(run), meta["thread_id"])["history"]]


def test_demo_writes_every_artifact(tmp_path):
    done = refineloop("demo", "--seed", "2", "--output-dir", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "out"
    images = images_in(run)
    assert images and images[0] == "01.png"
    assert "[ 1/10] score" in done.stdout and "best:" in done.stdout
    summary = (run / "summary.txt").read_text()
    for name in images:
        assert f"[{name[:-4]}] score" in summary
    assert "negative prompt:" in summary and "judge instructions:" in summary
    collage = Image.open(run / "collage.png")
    cols = math.ceil(math.sqrt(len(images)))
    assert collage.size == (cols * 192, math.ceil(len(images) / cols) * 192)
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    assert sum(t["kind"] == "image" for t in trace) == len(images)
    assert all("seconds" in t for t in trace if t["kind"] in ("image", "chat"))
    # best.png is a copy of the image summary.txt crowns (after the final pick: tests/test_best_image.py).
    crowned = re.search(r"^best: image \d+ \((\d+\.png)\)", summary, re.M).group(1)
    assert (run / "best.png").read_bytes() == (run / crowned).read_bytes()

    listing = refineloop("runs", cwd=tmp_path)
    assert "no runs in runs/" in listing.stdout
    listing = refineloop("runs", ".", cwd=tmp_path)
    assert "out" in listing.stdout and "done" in listing.stdout


def test_first_ctrl_c_finishes_the_step_then_resume_reaches_the_planned_total(tmp_path, start_cli):
    proc = start_cli("demo", *STEADY, "--max-iterations", "6", "--image-model", "sketch:delay=0.4", "--output-dir", "r")
    run = tmp_path / "r"
    wait_for(lambda: (run / "02.png").exists())
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "finishing the current step" in out and f"resume with: refineloop resume {run}" in out
    assert "Traceback" not in out
    assert (run / "summary.txt").exists() and (run / "collage.png").exists() and (run / "best.png").exists()
    made = images_in(run)
    assert len(made) < 6

    listing = refineloop("runs", str(tmp_path), cwd=tmp_path)
    assert "interrupted" in listing.stdout

    again = refineloop("resume", str(run), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert images_in(run) == [f"{i:02d}.png" for i in range(1, 7)]
    assert history(run) == [1, 2, 3, 4, 5, 6]


def test_second_ctrl_c_stops_at_once(tmp_path, start_cli):
    proc = start_cli("demo", *STEADY, "--max-iterations", "2", "--image-model", "sketch:delay=4", "--output-dir", "r")
    run = tmp_path / "r"
    output = OutputWatch(proc)
    output.wait_for_line("[ 1/2] score")  # image 1 is judged: image 2, 4 s long, starts within milliseconds
    time.sleep(0.3)  # not a wait for anything: it only places the stops well inside image 2's 4 s
    proc.send_signal(signal.SIGINT)
    # Two signals sent before the first is handled arrive as one: wait for the first one's line.
    output.wait_for_line("finishing the current step")
    proc.send_signal(signal.SIGINT)
    out = output.finish(timeout=20)
    assert proc.returncode == 130 and "Traceback" not in out, out
    # A drain would have finished image 2 and kept it; the second Ctrl-C left it unmade.
    assert not (run / "02.png").exists(), out
    assert images_in(run) == ["01.png"]
    assert "resume with:" in out
    resumed = refineloop("resume", str(run), cwd=tmp_path, timeout=120)
    assert resumed.returncode == 0
    assert history(run) == [1, 2]


def test_sigkill_mid_generation_then_resume_loses_and_duplicates_nothing(tmp_path, start_cli):
    proc = start_cli("demo", *STEADY, "--max-iterations", "5", "--image-model", "sketch:delay=0.5", "--output-dir", "r")
    run = tmp_path / "r"
    wait_for(lambda: (run / "03.png").exists())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = refineloop("resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert images_in(run) == [f"{i:02d}.png" for i in range(1, 6)]
    assert history(run) == [1, 2, 3, 4, 5]
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    judged = [t["iteration"] for t in trace if t.get("role") == "judge#1"]
    assert sorted(set(judged)) == [1, 2, 3, 4, 5]


def test_a_second_process_on_the_same_folder_is_refused(tmp_path, start_cli):
    # Far more images than the second process needs to start, however loaded the machine: the first one is still
    # running (and holds the folder) when the second one looks; it is stopped right after.
    proc = start_cli("demo", *STEADY, "--max-iterations", "60", "--image-model", "sketch:delay=1", "--output-dir", "r")
    run = tmp_path / "r"
    wait_for(lambda: (run / "01.png").exists())
    second = refineloop("resume", str(run), cwd=tmp_path)
    assert proc.poll() is None, "the first process ended before the second one looked"
    assert second.returncode == 2, second.stdout + second.stderr
    assert "is in use by refineloop" in second.stderr and second.stderr.count("\n") == 1
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    assert refineloop("demo", *STEADY, "--max-iterations", "2", "--output-dir", "r", cwd=tmp_path).returncode == 0
    run = tmp_path / "r"
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    again = refineloop("resume", str(run), cwd=tmp_path)
    assert again.returncode == 0 and "already finished" in again.stdout
    after = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name != ".lock"}
    assert after == {k: v for k, v in before.items() if k != ".lock"}


def test_resuming_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "junk").mkdir()
    result = refineloop("resume", "junk", cwd=tmp_path)
    assert result.returncode == 2 and "is not a refineloop run" in result.stderr
    missing = refineloop("resume", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_damaged_best_image_stops_resume_with_one_line(tmp_path, start_cli, damage):
    proc = start_cli("demo", *STEADY, "--max-iterations", "6", "--image-model", "sketch:delay=0.4", "--output-dir", "r")
    run = tmp_path / "r"
    wait_for(lambda: (run / "03.png").exists())
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    meta = json.loads((run / "run.json").read_text())
    best = Path(read_values(str(run), meta["thread_id"])["best"]["path"])
    if damage == "delete":
        best.unlink()
    else:
        best.write_bytes(b"not a png")
    kept = sorted(p.name for p in run.iterdir())
    result = refineloop("resume", str(run), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert best.name in result.stderr and "restore the file" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == kept


def test_a_new_run_refuses_a_folder_that_holds_a_run(tmp_path):
    assert refineloop("demo", *STEADY, "--max-iterations", "1", "--output-dir", "r", cwd=tmp_path).returncode == 0
    result = refineloop("demo", "--output-dir", "r", cwd=tmp_path)
    assert result.returncode == 2 and "refineloop resume" in result.stderr
