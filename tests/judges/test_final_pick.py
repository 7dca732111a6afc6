"""Crowning honestly: the final pick re-judges the top images before best.png is written, and a DONE stops a run
only after a second look agrees."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from refineloop.cli.main import build_parser, main
from refineloop.cli.run_commands import start_run
from tests.conftest import judge_reply, refineloop
from tests.fake_ollama import FakeOllama, detect_role, message_text
from tests.judges.test_best_image import check_agreement


def roles(critic, role: str) -> list[dict]:
    return [c for c in critic.calls if c["role"] == role]


def sidecar(run: Path, iteration: int) -> dict:
    return json.loads((run / f"{iteration:02d}.json").read_text())


# The loop (climbing, 3 images): 5, 7, 6, so image 2 is the loop's best. Then the pick's fresh looks (two each,
# in pool order #2, #3, #1) and its duels, pair by pair in both orders: #3 beats #2 twice, #2 beats #1 twice,
# #3 beats #1 twice.
LOOP = [judge_reply(5), judge_reply(7), judge_reply(6)]
LOOKS = [judge_reply(s) for s in (7, 7, 6, 7, 5, 5)]
DUELS = ["WINNER: B", "WINNER: A", "WINNER: A", "WINNER: B", "WINNER: A", "WINNER: B"]


def test_the_final_pick_crowns_the_image_that_wins_its_duels(scripted, run_settings, quiet):
    cache, critic = scripted(LOOP + LOOKS, compare_replies=list(DUELS))
    outcome = start_run(
        run_settings(strategy="climbing", max_iterations=3, confirm_done=False), models=cache, out=quiet
    )
    run = Path(outcome.run_dir)
    pick = outcome.values["final_pick"]
    assert pick["pool"] == [2, 3, 1] and pick["previous"] == 2 and pick["winner"] == 3
    assert [(e["iteration"], e["points"], e["samples"]) for e in pick["entries"]] == [
        (3, 4, [6.0, 7.0]),
        (2, 2, [7.0, 7.0]),
        (1, 0, [5.0, 5.0]),
    ]
    # best.png, the state, summary.txt and report.html all name the winner, with the score its sidecar holds.
    best, records = check_agreement(run)
    assert best == 3 and outcome.values["best"]["score"] == 6
    assert records[3]["final_pick"] == {"rank": 1, "points": 4, "most": 4, "samples": [6.0, 7.0], "mean": 6.5}
    assert records[2]["final_pick"]["rank"] == 2 and records[1]["final_pick"]["rank"] == 3
    # The pick's looks are warm samples of the run's judge; its duels use the cold judge copy, in both orders.
    assert [c["temperature"] for c in roles(critic, "judge")[3:]] == [0.3] * 6
    assert len(roles(critic, "compare")) == 6 and {c["temperature"] for c in roles(critic, "compare")} == {0.0}
    assert outcome.values["critic_calls"] == len(critic.calls)
    summary = (run / "summary.txt").read_text()
    assert "final pick among #2, #3, #1: #3 won (the best before it was #2)" in summary
    assert "1. #3: duel points 4 of 4, fresh looks 6, 7 (mean 6.5)" in summary
    # The duels were measured in passing: no flips, and one of three decided duels went against the scores.
    assert re.search(r"duel position flips +0% \(3 duels\)", summary)
    assert re.search(r"scores agree with duels +67% \(3 decided duels\)", summary)
    report = (run / "report.html").read_text()
    assert 'id="final-pick"' in report and "final pick: rank 1, duel points 4 of 4" in report
    # An ordered list numbers each place once: its items carry no number of their own.
    assert "<ol><li>#3: duel points 4 of 4, fresh looks 6, 7 (mean 6.5)</li><li>#2: " in report
    assert not re.search(r"<li>\d+\. ", report)
    # The progress line says why a lower-scored image now holds the title.
    assert "final pick among #2, #3, #1: #3 takes the title from #2 (4 of 4 duel points against 2)" in quiet.getvalue()


def test_a_final_pick_of_zero_keeps_the_loops_best_and_asks_nothing_more(scripted, run_settings, quiet):
    cache, critic = scripted(list(LOOP))
    outcome = start_run(
        run_settings(strategy="climbing", max_iterations=3, final_pick=0, confirm_done=False), models=cache, out=quiet
    )
    assert outcome.values["best"]["iteration"] == 2 and not outcome.values.get("final_pick")
    assert len(critic.calls) == outcome.values["critic_calls"] and not roles(critic, "compare")
    assert "final pick" not in (Path(outcome.run_dir) / "summary.txt").read_text()


def test_the_final_pick_stays_within_the_critic_call_budget(scripted, run_settings, quiet):
    cache, critic = scripted(LOOP + LOOKS, compare_replies=list(DUELS))
    settings = run_settings(strategy="climbing", max_iterations=3, max_critic_calls=6, confirm_done=False)
    outcome = start_run(settings, models=cache, out=quiet)
    assert len(critic.calls) == outcome.values["critic_calls"] == 6
    # Three calls were left: fresh looks for #2 and half of #3's; no duel. It decided on what it measured.
    pick = outcome.values["final_pick"]
    assert [e["samples"] for e in sorted(pick["entries"], key=lambda e: e["iteration"])] == [[], [7.0, 7.0], [6.0]]
    assert pick["duels"] == [] and pick["winner"] == 2
    check_agreement(Path(outcome.run_dir))


def test_one_judged_image_has_nothing_to_pick_from(scripted, run_settings, quiet):
    cache, critic = scripted([judge_reply(5)])
    outcome = start_run(run_settings(strategy="greedy", max_iterations=1), models=cache, out=quiet)
    assert not outcome.values.get("final_pick") and len(critic.calls) == 1


@pytest.mark.parametrize("value", ["1", "11", "-2"])
def test_a_final_pick_out_of_range_is_one_line(value, capsys):
    assert main(["demo", "--final-pick", value]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("refineloop: error: --final-pick must be 0 (off) or between 2 and 10") and err.count("\n") == 1
    )


# --- DONE, confirmed by a second look ---


def test_a_done_the_second_look_does_not_share_goes_on(scripted, run_settings, quiet):
    replies = [judge_reply(5), judge_reply(8, "DONE"), judge_reply(7, idea="add roaring flames"), judge_reply(6)]
    cache, critic = scripted(replies)
    outcome = start_run(run_settings(strategy="greedy", max_iterations=3, final_pick=0), models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert outcome.values["stop_reason"] == "reached --max-iterations 3"
    second = sidecar(run, 2)
    assert second["verdict"] == "CONTINUE" and second["next_idea"] == "add roaring flames"
    assert second["confirm"]["upheld"] is False and second["confirm"]["sample"] == 7
    # The second look was warm, and a duel with the best (image 1) checked the DONE's claim in both orders.
    assert roles(critic, "judge")[2]["temperature"] == 0.3 and len(roles(critic, "compare")) == 2
    assert "DONE overturned, the run went on (second look: 7.0/10 CONTINUE" in (run / "summary.txt").read_text()
    assert re.search(r"DONE upheld by a second look +0% \(1 DONE\)", (run / "summary.txt").read_text())
    assert "DONE overturned by a second look" in (run / "report.html").read_text()


def test_a_done_the_second_look_upholds_stops_the_run(scripted, run_settings, quiet):
    # The duel with image 1: the DONE image is A in the first order and B in the second, and wins both.
    cache, _ = scripted(
        [judge_reply(5), judge_reply(8, "DONE"), judge_reply(9, "DONE")], compare_replies=["WINNER: A", "WINNER: B"]
    )
    outcome = start_run(run_settings(strategy="greedy", max_iterations=5, final_pick=0), models=cache, out=quiet)
    assert outcome.values["stop_reason"] == "the critic said DONE at image 2"
    confirm = sidecar(Path(outcome.run_dir), 2)["confirm"]
    assert confirm["upheld"] is True and confirm["duel"]["wins"] == 2


def test_no_confirm_done_stops_on_the_first_done_as_the_seed_does(scripted, run_settings, quiet):
    assert build_parser().parse_args(["run", "--no-confirm-done"]).confirm_done is False
    assert build_parser().parse_args(["run"]).confirm_done is True
    cache, critic = scripted([judge_reply(5), judge_reply(8, "DONE")])
    settings = run_settings(strategy="greedy", max_iterations=5, final_pick=0, confirm_done=False)
    outcome = start_run(settings, models=cache, out=quiet)
    assert outcome.values["stop_reason"] == "the critic said DONE at image 2" and len(critic.calls) == 2


@pytest.mark.slow
def test_the_demo_reports_its_judge_measured_in_passing(tmp_path):
    result = refineloop("demo", "--seed", "3", "--judge-samples", "2", "--output-dir", "r", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "r" / "summary.txt").read_text()
    assert "judge, measured in passing" in summary
    for label in ("warm sample spread", "duel position flips", "duel ties and abstentions"):
        assert label in summary
    report = (tmp_path / "r" / "report.html").read_text()
    assert 'id="judge-measures"' in report and "warm sample spread" in report


def _role(body: dict) -> str:
    """Duels, proposals and judge calls each take their own queue of the fake."""
    text = message_text(body)
    return "text" if "WINNER:" in text else "vision" if "IDEA:" in text else detect_role(body)


@pytest.mark.slow
def test_duels_use_the_cold_judge_copy_with_thinking_off(run_settings, quiet):
    judged = [{"score": s, "critique": "warm", "verdict": "CONTINUE", "next_idea": "more flames"} for s in (4, 6, 5)]
    duels = ["WINNER: A\nWHY: hotter", "WINNER: B\nWHY: hotter"] * 8
    with FakeOllama(replies={"judge": judged, "text": duels}, role_of=_role) as fake:
        settings = run_settings(
            eval_model="ollama:llava:7b", ollama_url=fake.url, strategy="climbing", judge="pairwise", max_iterations=3
        )
        outcome = start_run(settings, out=quiet)
        asked = fake.chat_requests("text")
    assert outcome.status == "done", quiet.getvalue()
    # Two duels of the loop and three of the final pick: each at temperature 0, thinking off, both images attached.
    assert len(asked) == 2 * 2 + 3 * 2
    assert all(b["options"]["temperature"] == 0 and b["think"] is False for b in asked)
    assert all("format" not in b and len(b["messages"][1]["images"]) == 2 for b in asked)


def test_a_cut_inside_a_tie_of_scores_widens_the_pool():
    from refineloop.judges.final_pick import pool_size

    scores = {1: 9, 2: 8, 3: 7, 4: 7, 5: 7, 6: 7, 7: 7, 8: 7, 9: 7, 10: 6}
    sidecars = {it: {"score": s} for it, s in scores.items()}
    ranked = sorted(scores, key=lambda it: (-scores[it], it))
    assert pool_size(ranked, sidecars, 2) == 2, "the 2nd place (8) ties with nothing after it"
    assert pool_size(ranked, sidecars, 3) == 6, "the 7s tied with the 3rd place join, up to twice K"
    assert pool_size(ranked, sidecars, 5) == 9, "every tied 7, and not the 6"
    assert pool_size(ranked[:3], sidecars, 4) == 3, "fewer images than K: all of them"
    assert pool_size([1, *ranked[1:]], {**sidecars, 1: {"score": None}}, 1) == 1
