"""The Python API, used as a notebook would: run, resume, fork, and the errors a caller sees."""

from __future__ import annotations

import io

import pytest

import refineloop
from refineloop.errors import SettingsError


def test_run_returns_the_outcome_a_caller_needs(tmp_path):
    result = refineloop.run(goal="a quiet blue teapot", max_iterations=3, seed=2, output_dir=str(tmp_path / "r"))
    assert result.ok and result.status == "done"
    assert result.folder == tmp_path / "r" and result.best_image == tmp_path / "r" / "best.png"
    assert len(result.scores) == 3 and result.best_score == max(s for s in result.scores if s is not None)
    assert result.stop_reason == "reached --max-iterations 3"


def test_progress_goes_where_the_caller_says(tmp_path):
    lines = io.StringIO()
    refineloop.run(max_iterations=1, output_dir=str(tmp_path / "r"), progress=lines)
    text = lines.getvalue()
    assert "[ 1/1] score" in text and f"files: {tmp_path / 'r'}" in text


def test_resume_of_a_finished_run_only_reads(tmp_path):
    first = refineloop.run(max_iterations=2, output_dir=str(tmp_path / "r"))
    again = refineloop.resume(first.folder)
    assert again.status == "done" and again.scores == first.scores and again.best_score == first.best_score


def test_fork_starts_a_new_run_from_an_image(tmp_path):
    first = refineloop.run(max_iterations=3, seed=4, output_dir=str(tmp_path / "r"))
    fork = refineloop.fork(first.folder, 2, strategy="annealing", max_iterations=4)
    assert fork.ok and fork.folder == tmp_path / "r-fork-2"
    assert fork.scores[:2] == first.scores[:2] and len(fork.scores) == 4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda tmp: refineloop.run(max_iteration=3, output_dir=str(tmp)), "unknown setting max_iteration"),
        (lambda tmp: refineloop.run(candidates=40, output_dir=str(tmp)), "--candidates must be between 1 and 16"),
        (lambda tmp: refineloop.resume(tmp, strategy="greedy"), "resume cannot change strategy"),
    ],
)
def test_bad_knobs_raise_one_line_before_any_folder(call, message, tmp_path):
    with pytest.raises(SettingsError, match=message):
        call(tmp_path / "r")
    assert not (tmp_path / "r").exists()
