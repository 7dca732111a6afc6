"""The judge contract: a tolerant parser, retries with a reminder, and 'unknown' instead of a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refineloop.backends.chat.replies import JudgeReply
from refineloop.cli.run_commands import start_run
from refineloop.judges.verdicts import from_structured, parse_idea, parse_judge_text
from tests.conftest import judge_reply


@pytest.mark.parametrize(
    ("reply", "score", "verdict"),
    [
        ("SCORE: 7\nCRITIQUE: nice glow\nCONTINUE: add flames", 7, "CONTINUE"),
        ("Score - 9\nDONE: it is an inferno", 9, "DONE"),
        ("I would rate this 8/10. CONTINUE: add a jet of blue flame", 8, "CONTINUE"),
        ("score:7\ncontinue: sparks and smoke, much hotter", 7, "CONTINUE"),
        ("**SCORE:** 6 out of 10\n\nCONTINUE: more steam", 6, "CONTINUE"),
        ("SCORE: 10", 10, "DONE"),
        ("SCORE: 4\nsome stray prose without a verdict", 4, "CONTINUE"),
    ],
)
def test_parser_reads_what_models_actually_write(reply, score, verdict):
    parsed = parse_judge_text(reply)
    assert parsed is not None
    assert (parsed.score, parsed.verdict) == (score, verdict)


@pytest.mark.parametrize("reply", ["", "Sorry, I cannot judge images.", "SCORE: 11/10", "SCORE: 0", "   "])
def test_parser_refuses_replies_without_a_valid_score(reply):
    assert parse_judge_text(reply) is None


def test_both_done_and_continue_counts_as_continue_when_an_idea_is_offered():
    parsed = parse_judge_text("SCORE: 8\nDONE: perfect.\nCONTINUE: more flames around the bun")
    assert parsed.verdict == "CONTINUE"
    assert parsed.next_idea == "more flames around the bun"
    bare = parse_judge_text("SCORE: 8\nDONE: perfect.\nCONTINUE:")
    assert bare.verdict == "DONE"


def test_structured_reply_outside_range_is_refused():
    assert from_structured(JudgeReply(score=11, critique="", verdict="DONE", next_idea="")) is None
    ok = from_structured(JudgeReply(score=6, critique="warm", verdict="CONTINUE", next_idea="flames"))
    assert (ok.score, ok.next_idea) == (6, "flames")


def test_idea_parser_takes_the_idea_line_or_the_whole_reply():
    assert parse_idea("Sure!\nIDEA: a blazing hotdog on lava") == "a blazing hotdog on lava"
    assert parse_idea("a plain description") == "a plain description"


def test_garbage_judge_is_retried_with_a_reminder_then_recorded_as_unknown(scripted, run_settings, quiet):
    garbage = ["Sorry, I cannot judge images.", "SCORE: 11/10", ""]
    cache, critic = scripted([*garbage, judge_reply(6)])
    outcome = start_run(run_settings(strategy="climbing", max_iterations=2), models=cache, out=quiet)
    judge_calls = [c for c in critic.calls if c["role"] == "judge"]
    assert [c["messages"] for c in judge_calls[:3]] == [2, 3, 3], "retries carry a format reminder"
    first, second = outcome.values["history"]
    assert (first["score"], first["verdict"], first["decision"]) == (None, "unknown", "rejected")
    assert (second["score"], second["decision"]) == (6, "accepted")
    trace = [json.loads(line) for line in (Path(outcome.run_dir) / "trace.jsonl").read_text().splitlines()]
    assert [t["role"] for t in trace if t.get("role", "").startswith("judge")][:3] == ["judge#1", "judge#2", "judge#3"]
    assert "score ?/10" in (Path(outcome.run_dir) / "summary.txt").read_text()


def test_judge_call_carries_the_image_at_temperature_zero(scripted, run_settings, quiet):
    cache, critic = scripted([judge_reply(5)])
    start_run(run_settings(max_iterations=1), models=cache, out=quiet)
    judge = next(c for c in critic.calls if c["role"] == "judge")
    assert judge["image"] and judge["temperature"] == 0.0
