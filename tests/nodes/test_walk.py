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


def test_the_final_pick_of_a_walk_meets_its_full_images_only(scripted, run_settings, quiet):
    # Drafts 5, 7, 6: the pool of 2 is #2 and #3, drawn in full as #4 and #5 (judged 6 and 8); the final pick's
    # fresh looks and duels are among #4 and #5, never the drafts.
    cache, critic = scripted([judge_reply(s) for s in (5, 7, 6, 6, 8)], compare_replies=["WINNER: B", "WINNER: A"])
    settings = run_settings(strategy="climbing", draft_size=32, draft_walk=True, max_iterations=3, final_pick=2)
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert images_in(run)[-2:] == ["04.png", "05.png"] and len(images_in(run)) == 5
    assert [sidecar(run, n)["draft"]["iteration"] for n in (4, 5)] == [2, 3]
    pick = outcome.values["final_pick"]
    assert pick["pool"] == [4, 5] and pick["previous"] == 4
    assert outcome.values["best"]["iteration"] == pick["winner"] in (4, 5)
    assert Image.open(run / "best.png").size == (64, 64)
    assert "final pick among #4, #5" in (run / "summary.txt").read_text()


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
    ],
)
def test_a_walk_without_what_it_needs_is_refused_in_one_line(flags, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--goal", "a teapot", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir()), "nothing is made before the settings are checked"


def test_a_walk_stopped_while_drawing_in_full_resumes_keeping_what_was_judged(scripted, run_settings, quiet):
    # Drafts 5, 7, 6; #2 drawn in full as #4 and judged 9; Ctrl-C while #5 (from #3) is judged. The resume keeps
    # #4 as it was (its 9 outranking every draft must not push #3 out of the drafts to draw) and draws and
    # judges #5 again.
    replies = [judge_reply(s) for s in (5, 7, 6, 9)] + [KeyboardInterrupt(), judge_reply(8)]
    cache, _ = scripted(replies)
    settings = run_settings(strategy="climbing", draft_size=32, draft_walk=True, max_iterations=3, final_pick=2)
    first = start_run(settings, models=cache, out=quiet)
    assert first.status == "interrupted"
    run = Path(first.run_dir)
    assert sidecar(run, 4)["score"] == 9

    second = resume_run(first.run_dir, models=cache, out=quiet)
    assert second.status == "done"
    drawn = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    drawn = [r["iteration"] for r in drawn if r.get("kind") == "image"]
    assert drawn.count(4) == 1 and drawn.count(5) == 2, drawn
    assert sidecar(run, 4)["score"] == 9 and sidecar(run, 5)["score"] == 8
    assert second.values["final_pick"]["pool"] == [4, 5]
    assert Image.open(run / "best.png").size == (64, 64)


def test_a_users_picture_that_leads_the_walk_meets_the_best_drafts_in_full(tmp_path, scripted, run_settings, quiet):
    picture = tmp_path / "mine.png"
    Image.new("RGB", (64, 64), (200, 40, 30)).save(picture)
    # The picture is judged 8; drafts 5, 7, 6. The two best drafts are drawn in full (#4 and #5, judged 6 and 5),
    # and the final pick's two are the picture and #4.
    cache, _ = scripted([judge_reply(s) for s in (8, 5, 7, 6, 6, 5)])
    settings = run_settings(
        init_image=str(picture), draft_size=32, draft_walk=True, max_iterations=3, final_pick=2, strategy="greedy"
    )
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert images_in(run) == ["00.png", "01.png", "02.png", "03.png", "04.png", "05.png"]
    assert [sidecar(run, n)["draft"]["iteration"] for n in (4, 5)] == [2, 3]
    assert outcome.values["final_pick"]["pool"] == [0, 4]
    assert outcome.values["best"]["iteration"] in (0, 4)
