"""Each strategy's acceptance sequence, driven through the real graph and runner with a scripted critic."""

from __future__ import annotations

import json
import math
from contextlib import closing
from pathlib import Path
from typing import Any

from refineloop.cli.run_commands import resume_run, start_run
from refineloop.graph_build import build_graph
from refineloop.run_folder.checkpoints import connect, run_saver
from refineloop.run_folder.folder import read_meta
from refineloop.schedules import draw, temperature
from tests.conftest import judge_reply


def decisions(outcome) -> list[tuple[int, int | None, str]]:
    return [(h["iteration"], h["score"], h["decision"]) for h in outcome.values["history"]]


def test_greedy_adopts_a_drop_but_best_stays_highest(scripted, run_settings, quiet):
    cache, critic = scripted([judge_reply(6), judge_reply(3), judge_reply(5)])
    outcome = start_run(run_settings(strategy="greedy", max_iterations=3), models=cache, out=quiet)
    assert decisions(outcome) == [(1, 6, "accepted"), (2, 3, "accepted"), (3, 5, "accepted")]
    assert outcome.values["current"]["iteration"] == 3
    assert outcome.values["best"]["iteration"] == 1
    run = Path(outcome.run_dir)
    assert (run / "best.png").read_bytes() == (run / "01.png").read_bytes()
    assert outcome.values["stop_reason"] == "reached --max-iterations 3"


def test_climbing_without_sideways_reverts_on_a_tie_and_hands_failed_ideas_to_the_proposer(
    scripted, run_settings, quiet
):
    cache, critic = scripted(
        [judge_reply(5, idea="idea from one"), judge_reply(5), judge_reply(4), judge_reply(7), judge_reply(6)]
    )
    settings = run_settings(strategy="climbing", max_iterations=5, patience=3, sideways=False)
    outcome = start_run(settings, models=cache, out=quiet)
    assert decisions(outcome) == [
        (1, 5, "accepted"),
        (2, 5, "rejected"),
        (3, 4, "rejected"),
        (4, 7, "accepted"),
        (5, 6, "rejected"),
    ]
    proposals = [c for c in critic.calls if c["role"] == "propose"]
    # After image 2 (a tie) the proposer sees its idea as failed; after image 3 it sees both.
    assert "idea from one" in proposals[0]["system"]
    assert "proposed idea number 1" in proposals[1]["system"]
    assert all(c["image"] for c in proposals)
    assert outcome.values["best"]["iteration"] == 4
    assert outcome.values["current"]["iteration"] == 4


def test_climbing_walks_sideways_onto_a_tie_and_stands_there_after_a_miss(scripted, run_settings, quiet):
    replies = [
        judge_reply(5, idea="idea from one"),
        judge_reply(5, idea="idea from two"),
        judge_reply(4),
        judge_reply(7),
        judge_reply(6),
    ]
    cache, critic = scripted(replies)
    outcome = start_run(
        run_settings(strategy="climbing", max_iterations=5, patience=3, final_pick=0), models=cache, out=quiet
    )
    assert decisions(outcome) == [
        (1, 5, "accepted"),
        (2, 5, "sideways"),
        (3, 4, "rejected"),
        (4, 7, "accepted"),
        (5, 6, "rejected"),
    ]
    history = outcome.values["history"]
    # A sideways move crowns nothing: image 1 stays the best (the earliest of equal scores) until image 4 beats it.
    assert [h["best_iteration"] for h in history] == [1, 1, 1, 4, 4]
    run = Path(outcome.run_dir)
    # The tie's own idea is drawn next, and the proposer after the miss starts from the image the walk stands on.
    assert "idea from two" in json.loads((run / "03.json").read_text())["prompt"]
    proposals = [c for c in critic.calls if c["role"] == "propose"]
    second, first = (json.loads((run / f"0{n}.json").read_text())["prompt"] for n in (2, 1))
    assert second in proposals[0]["user"] and first not in proposals[0]["user"]
    assert json.loads((run / "02.json").read_text())["decision"] == "sideways"
    assert (run / "best.png").read_bytes() == (run / "04.png").read_bytes()


def test_a_sideways_move_is_a_miss_for_patience(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(5), judge_reply(5), judge_reply(5), judge_reply(9)])
    outcome = start_run(run_settings(strategy="climbing", max_iterations=10, patience=2), models=cache, out=quiet)
    assert [h["decision"] for h in outcome.values["history"]] == ["accepted", "sideways", "sideways"]
    assert outcome.values["stop_reason"] == "2 images in a row did not beat the best (--patience 2)"


def test_a_climbing_run_recorded_before_sideways_moves_resumes_with_its_strict_rule(scripted, run_settings, quiet):
    replies = [judge_reply(5), KeyboardInterrupt(), judge_reply(5), judge_reply(5)]
    cache, _ = scripted(replies)
    first = start_run(run_settings(strategy="climbing", max_iterations=3, final_pick=0), models=cache, out=quiet)
    assert first.status == "interrupted" and len(first.values["history"]) == 1
    # What an older refineloop checkpointed: the same settings, without the key it did not know.
    config: Any = {"configurable": {"thread_id": read_meta(first.run_dir)["thread_id"]}}
    with closing(connect(first.run_dir)) as conn:
        graph = build_graph("climbing", run_saver(conn))
        older = {k: v for k, v in graph.get_state(config).values["settings"].items() if k != "sideways"}
        graph.update_state(config, {"settings": older}, as_node="generate")
    second = resume_run(first.run_dir, models=cache, out=quiet)
    assert second.status == "done"
    assert [h["decision"] for h in second.values["history"]] == ["accepted", "rejected", "rejected"]


def test_climbing_stops_when_patience_runs_out(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(5), judge_reply(5), judge_reply(2), judge_reply(4), judge_reply(9)])
    outcome = start_run(run_settings(strategy="climbing", max_iterations=10, patience=3), models=cache, out=quiet)
    assert len(outcome.values["history"]) == 4
    assert "did not beat the best" in outcome.values["stop_reason"]


def test_done_on_a_lower_image_never_crowns_it(scripted, run_settings, quiet):
    # The last reply is the second look that confirms image 4's DONE (refineloop.judges.confirm).
    replies = [judge_reply(7), judge_reply(4, "DONE"), judge_reply(8), judge_reply(9, "DONE"), judge_reply(9, "DONE")]
    cache, _ = scripted(replies)
    outcome = start_run(run_settings(strategy="greedy", max_iterations=6), models=cache, out=quiet)
    assert [h["iteration"] for h in outcome.values["history"]] == [1, 2, 3, 4]
    assert outcome.values["stop_reason"] == "the critic said DONE at image 4"
    run = Path(outcome.run_dir)
    assert (run / "best.png").read_bytes() == (run / "04.png").read_bytes()


def test_climbing_ignores_done_from_a_rejected_image(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(7), judge_reply(6, "DONE"), judge_reply(8)])
    outcome = start_run(run_settings(strategy="climbing", max_iterations=3), models=cache, out=quiet)
    assert decisions(outcome)[1] == (2, 6, "rejected")
    assert outcome.values["best"]["iteration"] == 3


def expected_annealing(scores: list[int], seed: int, t0: float, rate: float) -> list[str]:
    """Metropolis by hand, from the documented schedule and draws."""
    result, current = [], None
    for i, score in enumerate(scores, start=1):
        if current is None or score >= current:
            result.append("accepted")
            current = score
        elif draw(seed, i) < math.exp((score - current) / temperature(t0, rate, i)):
            result.append("accepted-worse")
            current = score
        else:
            result.append("rejected")
    return result


ANNEAL_SCORES = [6, 4, 3, 5, 2, 6, 3, 1]


def test_annealing_adopts_a_drop_exactly_when_its_seeded_draw_says_so(scripted, run_settings, quiet):
    cache, critic = scripted([judge_reply(s) for s in ANNEAL_SCORES])
    # final_pick=0: the final pick's warm samples come after the walk; this test checks the walk's judge is cold.
    settings = run_settings(strategy="annealing", max_iterations=len(ANNEAL_SCORES), seed=5, final_pick=0)
    outcome = start_run(settings, models=cache, out=quiet)
    got = [h["decision"] for h in outcome.values["history"]]
    assert got == expected_annealing(ANNEAL_SCORES, 5, 2.0, 0.85)
    assert {"accepted-worse", "rejected"} <= set(got), "the scripted walk must exercise both outcomes"
    # The judge stays cold; the proposer cools with the schedule.
    assert {c["temperature"] for c in critic.calls if c["role"] == "judge"} == {0.0}
    proposer = [c["temperature"] for c in critic.calls if c["role"] == "propose"]
    assert proposer == sorted(proposer, reverse=True) and proposer[0] > proposer[-1]


def test_annealing_walk_is_the_same_after_a_resume(scripted, run_settings, quiet, tmp_path):
    cache, _ = scripted([judge_reply(s) for s in ANNEAL_SCORES])
    straight = start_run(run_settings(strategy="annealing", max_iterations=8, seed=5), models=cache, out=quiet)

    replies = [judge_reply(s) for s in ANNEAL_SCORES[:4]] + [KeyboardInterrupt()]
    replies += [judge_reply(s) for s in ANNEAL_SCORES[4:]]
    cache2, _ = scripted(replies)
    settings = run_settings(strategy="annealing", max_iterations=8, seed=5, output_dir=str(tmp_path / "again"))
    first = start_run(settings, models=cache2, out=quiet)
    assert first.status == "interrupted" and len(first.values["history"]) == 4
    assert "resume with: refineloop resume" in quiet.getvalue()
    second = resume_run(first.run_dir, models=cache2, out=quiet)
    assert second.status == "done"
    assert second.values["history"] == straight.values["history"]


def test_img2img_starts_every_round_from_the_best_image(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(5), judge_reply(7), judge_reply(6), judge_reply(8)])
    outcome = start_run(run_settings(strategy="img2img", max_iterations=4), models=cache, out=quiet)
    run = Path(outcome.run_dir)
    sidecars = [json.loads((run / f"0{i}.json").read_text()) for i in range(1, 5)]
    assert sidecars[0]["init_image"] is None
    assert [Path(s["init_image"]).name for s in sidecars[1:]] == ["01.png", "02.png", "02.png"]
    strengths = [s["strength"] for s in sidecars[1:]]
    assert strengths[0] == 0.8 and strengths[-1] == 0.3 and strengths == sorted(strengths, reverse=True)


def test_until_done_stops_at_the_safety_cap(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(3)] * 10)
    outcome = start_run(run_settings(strategy="greedy", max_iterations=0, safety_cap=4), models=cache, out=quiet)
    assert len(outcome.values["history"]) == 4
    assert "safety cap of 4" in outcome.values["stop_reason"]


def test_img2img_without_a_strength_knob_warns_once_and_still_climbs_in_image_space(scripted, run_settings, quiet):
    from refineloop.backends.demo.sketch import SketchImageModel
    from refineloop.backends.image.protocol import ImageTraits

    class Unified(SketchImageModel):
        """Like FLUX.2 Klein: conditions on the reference image at a fixed influence, no strength."""

        name = "unified"
        traits = ImageTraits(prompt_budget=77, negative_prompt=False, img2img=True, strength=False)

    cache, _ = scripted([judge_reply(5), judge_reply(7), judge_reply(6)])
    cache.register_image("unified", Unified(size=64))
    outcome = start_run(
        run_settings(strategy="img2img", image_model="unified", max_iterations=3), models=cache, out=quiet
    )
    assert quiet.getvalue().count("has no strength knob") == 1
    run = Path(outcome.run_dir)
    records = [json.loads((run / f"0{i}.json").read_text()) for i in (2, 3)]
    assert [Path(r["init_image"]).name for r in records] == ["01.png", "02.png"]
    assert all(r["strength"] is None for r in records)
