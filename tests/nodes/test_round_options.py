"""The options that change what a round draws or when a run stops: --distinct-ideas, drafts, --plateau-cost.

Each is driven through the runner (or the CLI) with the sketch painter and a scripted critic, and checked by
what a user finds: the images in the folder, their sidecars and provenance, the drafts folder, the stop reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from refineloop.cli.main import main
from refineloop.cli.run_commands import start_run
from refineloop.run_folder.provenance import read_provenance
from tests.conftest import images_in, judge_reply


def roles(critic, role: str) -> list[dict]:
    return [c for c in critic.calls if c["role"] == role]


def test_distinct_ideas_give_each_candidate_its_own_proposed_idea(scripted, run_settings, quiet):
    # Round 1: three seeds of the start prompt (nothing to propose from yet); round 2: the critic's idea of the
    # best image, then two proposed ideas, the second proposal told the first one is taken.
    cache, critic = scripted([judge_reply(s, idea="a steaming bun") for s in (3, 6, 4, 5, 7, 4)])
    outcome = start_run(
        run_settings(strategy="climbing", candidates=3, distinct_ideas=True, max_iterations=2, final_pick=0),
        models=cache,
        out=quiet,
    )
    run = Path(outcome.run_dir)
    assert images_in(run) == [f"0{i}.png" for i in range(1, 7)]
    first, second = [json.loads((run / f"0{i}.json").read_text()) for i in (1, 2)]
    assert first["prompt"] == second["prompt"], "round 1 has no image to propose from: seeds of one prompt"
    ideas = [json.loads((run / f"0{i}.json").read_text())["idea"] for i in (4, 5, 6)]
    assert ideas[0] == "a steaming bun" and len(set(ideas)) == 3
    prompts = [read_provenance(run / f"0{i}.png")["prompt"] for i in (4, 5, 6)]
    assert len(set(prompts)) == 3 and "proposed idea number 1" in prompts[1]
    proposals = roles(critic, "propose")
    assert len(proposals) == 2 and "proposed idea number 1" in proposals[1]["user"] + proposals[1]["system"]
    assert outcome.values["best"]["iteration"] == 5, "the round's best idea is the one that is kept"
    assert outcome.values["critic_calls"] == 6 + 2


@pytest.mark.parametrize(("third", "margin"), [(6, 0.5), (5, 0.0)])
def test_drafts_are_judged_first_and_only_a_winner_is_drawn_in_full(third, margin, scripted, run_settings, quiet):
    # Round 1: a lone candidate with no best to beat is drawn in full at once (judged 5). Round 2: the draft
    # scores 4, below the best: no image, a miss. Round 3: the draft beats the best (or ties it, with margin 0)
    # and its full image scores 6.
    replies = [judge_reply(s) for s in (5, 4, third, 6)]
    cache, critic = scripted(replies)
    settings = run_settings(strategy="climbing", draft_size=32, draft_margin=margin, max_iterations=3, final_pick=0)
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert images_in(run) == ["01.png", "02.png"], "drafts are never numbered images"
    drafts = sorted(p.name for p in (run / "drafts").glob("*.png"))
    assert drafts == ["002-1.png", "003-1.png"]
    assert Image.open(run / "drafts" / "002-1.png").size == (32, 32)
    assert Image.open(run / "01.png").size == (64, 64)
    missed = json.loads((run / "drafts" / "002-1.json").read_text())
    assert missed["score"] == 4 and f"not {margin:g} above the best's 5 (--draft-margin)" in missed["decision"]
    kept = json.loads((run / "drafts" / "003-1.json").read_text())
    assert kept["decision"] == "drawn in full as image 2"
    second = json.loads((run / "02.json").read_text())
    assert second["draft"]["path"] == str(run / "drafts" / "003-1.png") and second["draft"]["score"] == third
    assert second["seed"] == kept["seed"] and second["prompt"] == kept["prompt"]
    assert "drawn in full from draft drafts/003-1.png" in (run / "report.html").read_text()
    # The draft's look counts as one of the full image's samples.
    assert second["samples"] == [third, 6] and second["score"] == (third + 6) / 2
    assert outcome.values["best"]["iteration"] == 2
    assert [h["iteration"] for h in outcome.values["history"]] == [1, 2]
    assert outcome.values["stop_reason"] == "reached --max-iterations 3 (rounds of drafts)"
    assert "rounds of drafts" in (run / "summary.txt").read_text()
    assert len(roles(critic, "judge")) == 4


def test_a_run_of_missed_drafts_stops_on_patience(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(s) for s in (6, 3, 6, 4)])  # a tie is no better: not drawn
    outcome = start_run(
        run_settings(strategy="climbing", draft_size=32, patience=3, max_iterations=10, final_pick=0),
        models=cache,
        out=quiet,
    )
    assert images_in(Path(outcome.run_dir)) == ["01.png"]
    assert "3 images in a row did not beat the best" in outcome.values["stop_reason"]


def test_plateau_stop_ends_a_run_whose_gains_dried_up_before_patience(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(s) for s in (3, 5, 6, 6, 5, 6, 4, 5, 6, 5, 4, 6)])
    outcome = start_run(
        run_settings(strategy="climbing", plateau_cost=0.3, max_iterations=12, final_pick=0), models=cache, out=quiet
    )
    run = Path(outcome.run_dir)
    reason = outcome.values["stop_reason"]
    assert reason.startswith("the best stopped improving") and "(--plateau-cost 0.3)" in reason
    assert 4 <= len(images_in(run)) < 12, "it stops after a few misses, long before --patience 10"
    assert "--plateau-cost 0.3" in (run / "summary.txt").read_text()


def test_plateau_stop_waits_while_the_run_keeps_gaining(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(s) for s in (2, 4, 6, 5, 8, 7)])
    outcome = start_run(
        run_settings(strategy="climbing", plateau_cost=0.3, max_iterations=6, final_pick=0), models=cache, out=quiet
    )
    assert outcome.values["stop_reason"] == "reached --max-iterations 6"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--distinct-ideas"], "--distinct-ideas gives each of a round's candidates its own idea: add --candidates 2"),
        (["--draft-size", "32", "--strategy", "greedy"], "use --strategy climbing or img2img"),
        (["--draft-steps", "8", "--steps", "8", "--image-model", "hf:x/y"], "is not fewer than --steps 8"),
        (["--draft-steps", "4"], "--draft-steps needs an image model that draws in steps; sketch has none"),
        (["--draft-size", "30"], "--draft-size must be 0 (the run's size) or a multiple of 8"),
        (["--plateau-cost", "-1"], "--plateau-cost must be 0 (off) or above 0"),
    ],
)
def test_bad_round_options_are_refused_in_one_line(flags, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--goal", "a teapot", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir()), "nothing is made before the settings are checked"


def test_a_draft_margin_without_drafts_is_pointed_out():
    from refineloop.settings import RunSettings, settings_warnings

    assert any("--draft-margin" in line for line in settings_warnings(RunSettings(draft_margin=1.0)))
    assert not settings_warnings(RunSettings(draft_margin=1.0, draft_size=64))


def test_rounds_that_end_at_their_drafts_count_as_rounds_without_gain_for_the_plateau(scripted, run_settings, quiet):
    # Image 1 (5), a draft (7) drawn in full (7), then drafts that never beat it: no images, yet rounds.
    cache, _ = scripted([judge_reply(s) for s in (5, 7, 7, *[6] * 10)])
    settings = run_settings(strategy="climbing", draft_size=32, plateau_cost=0.3, max_iterations=12, final_pick=0)
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert images_in(run) == ["01.png", "02.png"]
    assert outcome.values["stop_reason"].startswith("the best stopped improving")
    assert outcome.values["draft_rounds"] == 6, "four rounds without gain bring a gain of 2 below 0.3 an image"
    assert json.loads((run / "02.json").read_text())["round"] == 2
