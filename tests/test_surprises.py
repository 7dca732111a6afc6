"""The smaller surprises: the DONE image in the final pick, a second batch driver, an --output-dir under a file,
and a damaged database that SQLite calls read-only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from refineloop.cli.main import main
from refineloop.cli.run_commands import start_run
from tests.conftest import cli_env, judge_reply, refineloop, wait_for


def test_the_image_whose_done_stopped_the_run_takes_part_in_the_final_pick(scripted, run_settings, quiet) -> None:
    """Five images level at 8, the fifth saying DONE: a pool of 2 widened over the tie stops at 4 images, yet the
    fifth, whose word ended the run, meets the others."""
    cache, _ = scripted([judge_reply(8)] * 4 + [judge_reply(8, "DONE")])
    settings = run_settings(strategy="greedy", max_iterations=8, confirm_done=False, final_pick=2)
    outcome = start_run(settings, models=cache, out=quiet)
    assert outcome.values["iteration"] == 5 and "DONE" in outcome.values["stop_reason"]
    assert 5 in outcome.values["final_pick"]["pool"], outcome.values["final_pick"]


def test_an_output_dir_under_a_file_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes").write_text("a file")
    code = main(["demo", "--output-dir", str(tmp_path / "notes" / "deeper" / "r"), "--max-iterations", "1"])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / 'notes'} is a file" in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_a_damaged_database_is_not_called_a_permissions_problem(tmp_path: Path) -> None:
    made = refineloop("demo", "--max-iterations", "1", "--output-dir", "r", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    database = tmp_path / "r" / "checkpoints.sqlite"
    data = bytearray(database.read_bytes())
    data[18:20] = b"\x05\x05"  # file format versions SQLite cannot write: it answers "readonly database"
    database.write_bytes(bytes(data))
    resumed = refineloop("resume", str(tmp_path / "r"), "--max-iterations", "2", cwd=tmp_path)
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr, resumed.stderr
    assert "read-only" not in resumed.stderr and "chmod" not in resumed.stderr, resumed.stderr


@pytest.mark.slow
def test_a_second_driver_of_the_same_batch_is_refused(tmp_path: Path) -> None:
    # Five goals of three 1 s images: the first driver holds the batch for 15 s, far longer than the second one
    # takes to start and look, even on a loaded machine.
    goals = ["a quiet blue teapot", "a calm green lamp", "a plain grey mug", "a still white vase", "a flat brown box"]
    (tmp_path / "goals.txt").write_text("\n".join(goals) + "\n")
    args = [sys.executable, "-m", "refineloop", "batch", "goals.txt", "--max-iterations", "3"]
    first = subprocess.Popen(
        [*args, "--image-model", "sketch:delay=1"], cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: any((tmp_path / "runs" / "goals-batch").glob("001-*/01.png")))
        second = refineloop("batch", "goals.txt", "--max-iterations", "3", "--image-model", "sketch", cwd=tmp_path)
        assert second.returncode == 2 and "driven by another process" in second.stderr, second.stdout + second.stderr
        assert first.poll() is None, "the first driver had already finished: the test proves nothing"
    finally:
        out, _ = first.communicate(timeout=120)
    assert first.returncode == 0, out
    assert out.count(" done ") == len(goals), out


def test_the_patience_message_with_candidates_counts_rounds(scripted, run_settings, quiet) -> None:
    cache, _ = scripted([judge_reply(5), judge_reply(4), judge_reply(3), judge_reply(2)])
    settings = run_settings(strategy="climbing", max_iterations=8, candidates=2, patience=1, final_pick=0)
    outcome = start_run(settings, models=cache, out=quiet)
    assert outcome.values["iteration"] == 4, outcome.values["stop_reason"]
    assert outcome.values["stop_reason"].startswith("1 round (2 images each) did not beat"), outcome.values[
        "stop_reason"
    ]
