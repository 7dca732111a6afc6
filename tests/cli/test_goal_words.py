"""The goal given as plain words after the command, as people type it: `refineloop run "a cosy cabin in snow"`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refineloop.cli.main import main
from refineloop.prompt_text import compose_prompt

QUICK = ["--max-iterations", "2", "--strategy", "greedy", "--seed", "4"]


def first_prompt(folder: Path) -> str:
    return str(json.loads((folder / "01.json").read_text())["prompt"])


def test_words_after_the_command_are_the_goal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["demo", *QUICK, "--output-dir", str(out), "a blue sailing boat at dawn"]) == 0
    assert "goal: a blue sailing boat at dawn" in capsys.readouterr().out
    # A task built from a goal starts from the goal itself: the prompt says it once.
    assert first_prompt(out) == "a blue sailing boat at dawn"


def test_unquoted_words_are_joined_and_flags_may_follow(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["demo", "a", "red", "fox", *QUICK, "--output-dir", str(out)]) == 0
    assert first_prompt(out) == "a red fox"


def test_the_same_goal_written_twice_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--goal", "a teapot", "a kettle", "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0] == 'refineloop: error: the goal is given twice (--goal and "a kettle"): keep one of them'
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("subject", "idea", "prompt"),
    [
        ("a hotdog", "", "a hotdog"),
        ("a hotdog", "on a grill", "a hotdog, on a grill"),
        ("a hotdog", "A hotdog on a grill", "A hotdog on a grill"),  # the critic restated the anchor
        ("a hotdog", "a hotdogs' parade", "a hotdog, a hotdogs' parade"),  # another word, not the anchor
        ("a (big) hotdog", "a (big) hotdog, glowing", "a (big) hotdog, glowing"),  # weights syntax is literal
    ],
)
def test_the_anchor_is_said_once(subject: str, idea: str, prompt: str) -> None:
    assert compose_prompt(subject, idea) == prompt
