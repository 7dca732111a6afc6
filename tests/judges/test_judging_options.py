"""Beyond one score per image: pairwise duels, averaged samples with re-scores, best-of-N, and budgets."""

from __future__ import annotations

import json
from pathlib import Path

from refineloop.cli.run_commands import start_run
from tests.conftest import images_in, judge_reply


def roles(critic, role: str) -> list[dict]:
    return [c for c in critic.calls if c["role"] == role]


def test_pairwise_split_is_a_tie_and_a_double_win_is_adopted(scripted, run_settings, quiet):
    cache, critic = scripted(
        [judge_reply(6), judge_reply(5), judge_reply(4)],
        compare_replies=["WINNER: A", "WINNER: A", "WINNER: A", "WINNER: B"],
    )
    # final_pick=0: this test counts the duels of acceptance alone (tests/test_final_pick.py has the final pick's).
    settings = run_settings(strategy="climbing", judge="pairwise", max_iterations=3, final_pick=0)
    outcome = start_run(settings, models=cache, out=quiet)
    first, second, third = outcome.values["history"]
    # Image 2 wins in the first order and loses in the second: a split, a tie, so climbing walks onto it sideways
    # and image 1 stays the best, the one image 3 must beat.
    assert second["decision"] == "sideways" and second["best_iteration"] == 1
    # Image 3 wins both orders against the best: adopted although its absolute score is lower.
    assert third["decision"] == "accepted" and outcome.values["best"]["iteration"] == 3
    duels = [json.loads((Path(outcome.run_dir) / f"0{i}.json").read_text())["pairwise"] for i in (2, 3)]
    assert duels == [
        {"against": 1, "wins": 1, "ties": 0, "flipped": True},
        {"against": 1, "wins": 2, "ties": 0, "flipped": False},
    ]
    compares = roles(critic, "compare")
    assert len(compares) == 4 and all(c["image"] for c in compares)
    summary = (Path(outcome.run_dir) / "summary.txt").read_text()
    assert "pairwise comparisons: 2, order flips: 1 (50%" in summary


def test_a_pairwise_loss_in_both_orders_is_a_miss_and_a_double_tie_is_level(scripted, run_settings, quiet):
    cache, _ = scripted(
        [judge_reply(6), judge_reply(9), judge_reply(9)],
        compare_replies=["WINNER: B", "WINNER: A", "WINNER: TIE", "WINNER: TIE"],
    )
    settings = run_settings(strategy="climbing", judge="pairwise", max_iterations=3, final_pick=0)
    outcome = start_run(settings, models=cache, out=quiet)
    # Image 2 loses both orders to image 1 whatever its score; image 3's duel names no winner in either order.
    assert [h["decision"] for h in outcome.values["history"]] == ["accepted", "rejected", "sideways"]
    assert outcome.values["best"]["iteration"] == 1 and outcome.values["current"]["iteration"] == 3


def test_pairwise_drives_annealing_steps(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(6), judge_reply(9)], compare_replies=["WINNER: B", "WINNER: A"])
    outcome = start_run(
        run_settings(strategy="annealing", judge="pairwise", max_iterations=2, seed=3), models=cache, out=quiet
    )
    # Losing both orders is a step of -1 whatever the absolute scores say; the seeded draw decides.
    entry = outcome.values["history"][1]
    assert entry["decision"] in ("accepted-worse", "rejected") and entry["draw"] is not None


def test_averaged_samples_and_a_tie_rescores_the_incumbent(scripted, run_settings, quiet):
    replies = [judge_reply(s) for s in (6, 6, 6, 6, 5, 5)]
    cache, critic = scripted(replies)
    settings = run_settings(
        strategy="climbing", judge_samples=2, max_iterations=2, final_pick=0
    )  # counts the loop's calls
    outcome = start_run(settings, models=cache, out=quiet)
    judges = roles(critic, "judge")
    assert len(judges) == 6 and {c["temperature"] for c in judges} == {0.3}
    best = outcome.values["best"]
    # Image 2 tied image 1 at 6.0, so image 1 was judged twice more (5, 5) and fell to 5.5: image 2 wins.
    assert best["iteration"] == 2 and best["score"] == 6.0
    # The incumbent's sidecar says what it was re-scored to, and keeps the score it was first given.
    first = json.loads((Path(outcome.run_dir) / "01.json").read_text())
    assert first["samples"] == [6, 6, 5, 5] and first["score"] == 5.5 and first["first_score"] == 6.0
    assert outcome.values["history"][1]["decision"] == "accepted"
    assert outcome.values["critic_calls"] == 6


def test_best_of_n_judges_every_image_and_counts_each_against_the_budget(scripted, run_settings, quiet):
    cache, critic = scripted([judge_reply(s) for s in (3, 7, 5, 4, 6)])
    outcome = start_run(
        run_settings(strategy="climbing", candidates=3, max_iterations=4, max_images=5, final_pick=0),
        models=cache,
        out=quiet,
    )
    run = Path(outcome.run_dir)
    assert images_in(run) == [f"0{i}.png" for i in range(1, 6)]
    assert [h["iteration"] for h in outcome.values["history"]] == [2, 5]
    assert json.loads((run / "01.json").read_text())["decision"] == "not chosen (best of 3)"
    assert json.loads((run / "04.json").read_text())["decision"] == "not chosen (best of 2)"
    assert outcome.values["best"]["iteration"] == 2
    assert "image budget (--max-images 5)" in outcome.values["stop_reason"]
    assert len(roles(critic, "judge")) == 5


def test_critic_call_budget_is_never_exceeded(scripted, run_settings, quiet):
    cache, critic = scripted([judge_reply(s) for s in (5, 4, 3, 6, 2, 7, 1, 8)])
    outcome = start_run(
        run_settings(strategy="climbing", max_iterations=10, patience=9, max_critic_calls=7), models=cache, out=quiet
    )
    assert len(critic.calls) == outcome.values["critic_calls"] <= 7
    assert "critic-call budget (--max-critic-calls 7" in outcome.values["stop_reason"]


def test_image_budget_stops_exactly(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(3)] * 10)
    outcome = start_run(run_settings(strategy="greedy", max_iterations=10, max_images=4), models=cache, out=quiet)
    assert images_in(Path(outcome.run_dir)) == ["01.png", "02.png", "03.png", "04.png"]
    assert outcome.values["stop_reason"] == "reached the image budget (--max-images 4)"


def test_time_budget_stops_the_run_and_says_so(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(3)] * 20)
    from refineloop.backends.demo.sketch import SketchImageModel

    cache.register_image("slow", SketchImageModel(size=32, delay=0.15))
    outcome = start_run(
        run_settings(strategy="greedy", image_model="slow", max_iterations=20, max_seconds=0.5), models=cache, out=quiet
    )
    made = len(outcome.values["history"])
    assert 3 <= made <= 5
    assert outcome.values["stop_reason"].startswith("reached the time budget (--max-seconds 0.5;")
    assert outcome.values["seconds"] >= 0.5


def test_progress_columns_line_up_when_scores_have_decimals(scripted, run_settings, quiet):
    # Means of two samples: 6, 6.5 and 7.33-style fractions must not push the best column about.
    replies = [judge_reply(s) for s in (6, 6, 7, 6, 8, 7, 9, 9)]
    cache, _ = scripted(replies)
    settings = run_settings(strategy="greedy", judge_samples=2, max_iterations=4, final_pick=0)
    start_run(settings, models=cache, out=quiet)
    lines = [line for line in quiet.getvalue().splitlines() if line.startswith("[")]
    assert len(lines) == 4, quiet.getvalue()
    assert len({line.index("/10  best") for line in lines}) == 1, lines
    assert len({line.index(" accepted") for line in lines}) == 1, lines
    assert "score   6.5/10" in lines[1] and "best 6.5 (#2)" in lines[1]
