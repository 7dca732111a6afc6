"""A walk on drafts (--draft-walk): every round's image is a draft, and the stop draws the best in full.

Driven through the runner (or the CLI) with the sketch painter, whose --draft-size drafts are smaller than its
images, and a scripted critic; checked by what a user finds in the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from refineloop.cli.main import main
from refineloop.cli.run_commands import resume_run, start_run
from refineloop.run_folder.provenance import read_provenance
from tests.conftest import images_in, judge_reply


def sidecar(run: Path, number: int) -> dict:
    return json.loads((run / f"{number:02d}.json").read_text())


def test_the_walk_draws_drafts_and_the_stop_draws_the_best_in_full(scripted, run_settings, quiet):
    # The walk: drafts judged 5, 7, 6; the best (#2) is drawn in full as #4 and judged 8.
    cache, critic = scripted([judge_reply(s) for s in (5, 7, 6, 8)])
    settings = run_settings(strategy="climbing", draft_size=32, draft_walk=True, max_iterations=3, final_pick=0)
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert images_in(run) == ["01.png", "02.png", "03.png", "04.png"]
    assert [Image.open(run / f"0{n}.png").size for n in (1, 2, 3, 4)] == [(32, 32)] * 3 + [(64, 64)]
    walked = sidecar(run, 2)
    assert walked["walk_draft"]["width"] == 32 and walked["score"] == 7
    full = sidecar(run, 4)
    assert "walk_draft" not in full and full["score"] == 8
    assert full["draft"] == {"iteration": 2, "path": str(run / "02.png"), "score": 7}
    assert full["seed"] == walked["seed"] and full["prompt"] == walked["prompt"]
    made, drafted = read_provenance(run / "04.png"), read_provenance(run / "02.png")
    assert made["prompt"] == drafted["prompt"] and made["width"] == 64 and drafted["width"] == 32
    assert outcome.values["best"]["iteration"] == 4
    assert Image.open(run / "best.png").size == (64, 64), "best.png is drawn in full"
    assert outcome.values["critic_calls"] == 4 and outcome.values["stop_reason"] == "reached --max-iterations 3"
    assert "drawn in full at the stop: #4 from draft #2 (8/10)" in (run / "summary.txt").read_text()
    assert "drawn in full at the stop: #4 from draft #2 (8/10)" in quiet.getvalue()
    report = (run / "report.html").read_text()
    assert "a draft of the walk (32x32)" in report and "drawn in full from draft #2 (7/10)" in report


def test_the_final_pick_meets_the_drafts_and_only_its_winner_is_drawn_in_full(scripted, run_settings, quiet):
    # Drafts 5, 7, 6: the pick's pool is #2 and #3 (two fresh looks each, then a duel in both orders, which #3
    # wins); #3 is drawn in full as #4 and judged 9.
    replies = [judge_reply(s) for s in (5, 7, 6, 6, 6, 7, 7, 9)]
    cache, critic = scripted(replies, compare_replies=["WINNER: B", "WINNER: A"])
    settings = run_settings(strategy="climbing", draft_size=32, draft_walk=True, max_iterations=3, final_pick=2)
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert images_in(run) == ["01.png", "02.png", "03.png", "04.png"], "one full image, whatever the pool"
    pick = outcome.values["final_pick"]
    assert pick["pool"] == [2, 3] and pick["winner"] == 3
    assert sidecar(run, 4)["draft"]["iteration"] == 3 and sidecar(run, 4)["score"] == 9
    assert outcome.values["best"]["iteration"] == 4
    assert Image.open(run / "best.png").size == (64, 64)
    summary = (run / "summary.txt").read_text()
    assert "final pick among #2, #3: #3 won" in summary and "#4 from draft #3 (9/10)" in summary
    assert "best: image 4 (04.png) scored 9/10" in summary


def test_a_greedy_walk_finishes_its_best_draft(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(s) for s in (6, 3, 6, 4, 7)])
    settings = run_settings(strategy="greedy", draft_size=32, draft_walk=True, max_iterations=4, final_pick=0)
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert images_in(run) == ["01.png", "02.png", "03.png", "04.png", "05.png"]
    assert sidecar(run, 5)["draft"]["iteration"] == outcome.values["best"]["draft"]["iteration"]
    assert Image.open(run / "best.png").size == (64, 64)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--draft-walk"], "--draft-walk walks on drafts: say how they are drawn with --draft-steps"),
        (["--draft-walk", "--draft-size", "32", "--strategy", "img2img"], "use --strategy greedy, climbing or"),
        (["--draft-walk", "--draft-size", "32", "--draft-margin", "1"], "a --draft-walk draws in full only at"),
        (["--draft-walk", "--draft-size", "32", "--max-images", "1"], "--max-images 1 leaves no draft to walk on"),
        (["--draft-walk", "--draft-size", "32", "--audit-model", "demo", "--max-images", "2"], "--max-images 3 or"),
        (["--draft-walk", "--draft-size", "32", "--max-critic-calls", "1"], "give --max-critic-calls 2 or more"),
    ],
)
def test_a_walk_without_what_it_needs_is_refused_in_one_line(flags, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--goal", "a teapot", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir()), "nothing is made before the settings are checked"


def test_the_image_budget_holds_the_full_images_the_stop_draws(scripted, run_settings, quiet):
    # --max-images 4 on a walk: three drafts (5, 7, 6), then #2 drawn in full as #4 and judged 8; no fifth image.
    cache, _ = scripted([judge_reply(s) for s in (5, 7, 6, 8)])
    settings = run_settings(
        strategy="climbing", draft_size=32, draft_walk=True, max_iterations=10, max_images=4, final_pick=0
    )
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert images_in(run) == ["01.png", "02.png", "03.png", "04.png"]
    assert sidecar(run, 4)["draft"]["iteration"] == 2 and sidecar(run, 4)["score"] == 8
    reason = "reached the image budget (--max-images 4; 1 kept for the full image the walk's stop draws)"
    assert outcome.values["stop_reason"] == reason


def test_with_an_auditor_the_image_budget_holds_both_full_images(scripted, run_settings, quiet):
    # --max-images 5 with an auditor: drafts 5, 7, 6; #2 in full as #4 (9) and draft #1 in full as #5 (4).
    cache, _ = scripted([judge_reply(s) for s in (5, 7, 6, 9, 4)], compare_replies=["WINNER: A", "WINNER: B"])
    settings = run_settings(
        strategy="climbing", draft_size=32, draft_walk=True, max_iterations=10, max_images=5, final_pick=0,
        audit_model="scripted",
    )  # fmt: skip
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert images_in(run) == ["01.png", "02.png", "03.png", "04.png", "05.png"]
    assert [sidecar(run, n)["draft"]["iteration"] for n in (4, 5)] == [2, 1]
    assert "2 kept for the full images the walk's stop draws" in outcome.values["stop_reason"]


def test_the_critic_call_budget_keeps_a_call_to_judge_the_full_image(scripted, run_settings, quiet):
    # --max-critic-calls 5 on a walk with a final pick: four drafts use four calls; the pick would need more than
    # the one left, which is kept to judge #2 drawn in full as #5 (9).
    cache, critic = scripted([judge_reply(s) for s in (5, 7, 6, 4, 9)])
    settings = run_settings(
        strategy="climbing", draft_size=32, draft_walk=True, max_iterations=10, max_critic_calls=5, final_pick=2
    )
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert images_in(run) == ["01.png", "02.png", "03.png", "04.png", "05.png"]
    assert sidecar(run, 5)["draft"]["iteration"] == 2 and sidecar(run, 5)["score"] == 9
    assert outcome.values["critic_calls"] == len(critic.calls) == 5
    assert "best: image 5 (05.png) scored 9/10" in (run / "summary.txt").read_text()
    kept = "1 kept for the full image the walk's stop judges"
    reason = f"reached the critic-call budget (--max-critic-calls 5; 4 used; {kept})"
    assert outcome.values["stop_reason"] == reason


def test_a_walk_stopped_while_drawing_in_full_resumes_keeping_what_was_judged(scripted, run_settings, quiet):
    # With an auditor the first draft is drawn in full too. Drafts 5, 7, 6; the pick crowns #2, drawn in full as
    # #4 and judged 9; Ctrl-C while #5 (draft #1 in full) is judged. The resume picks again among the drafts
    # alone (#4's 9 does not put it in the pool), keeps #4 and draws #5 again.
    looks = [judge_reply(6)] * 4
    replies = [judge_reply(s) for s in (5, 7, 6)] + looks + [judge_reply(9), KeyboardInterrupt(), *looks]
    cache, _ = scripted([*replies, judge_reply(4)], compare_replies=["WINNER: A", "WINNER: B"] * 3)
    settings = run_settings(
        strategy="climbing", draft_size=32, draft_walk=True, max_iterations=3, final_pick=2, audit_model="scripted"
    )
    first = start_run(settings, models=cache, out=quiet)
    assert first.status == "interrupted"
    run = Path(first.run_dir)
    assert sidecar(run, 4)["score"] == 9

    second = resume_run(first.run_dir, models=cache, out=quiet)
    assert second.status == "done"
    drawn = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    drawn = [r["iteration"] for r in drawn if r.get("kind") == "image"]
    assert drawn.count(4) == 1 and drawn.count(5) == 2, drawn
    assert sidecar(run, 5)["draft"]["iteration"] == 1 and sidecar(run, 5)["score"] == 4
    assert second.values["final_pick"]["pool"] == [2, 3] and second.values["final_pick"]["winner"] == 2
    audit = second.values["audit"]
    assert (audit["first"], audit["crowned"]) == (5, 4), "the audit compares two full images"
    assert Image.open(run / "best.png").size == (64, 64)


def test_a_draft_that_beats_the_users_picture_at_the_pick_is_drawn_in_full(tmp_path, scripted, run_settings, quiet):
    picture = tmp_path / "mine.png"
    Image.new("RGB", (64, 64), (200, 40, 30)).save(picture)
    # The picture is judged 8 and leads; drafts 5, 7, 6. The pick's pool is the picture and #2, and #2 wins
    # both orders of the duel: it is drawn in full as #4.
    replies = [judge_reply(s) for s in (8, 5, 7, 6, 8, 8, 8, 8, 9)]
    cache, _ = scripted(replies, compare_replies=["WINNER: B", "WINNER: A"])
    settings = run_settings(
        init_image=str(picture), draft_size=32, draft_walk=True, max_iterations=3, final_pick=2, strategy="greedy"
    )
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert outcome.values["final_pick"]["pool"] == [0, 2] and outcome.values["final_pick"]["winner"] == 2
    assert images_in(run) == ["00.png", "01.png", "02.png", "03.png", "04.png"]
    assert sidecar(run, 4)["draft"]["iteration"] == 2
    assert outcome.values["best"]["iteration"] == 4
