"""best.png means one thing: the image the state names as best, with the score its sidecar, summary.txt and
report.html all show, under the judge's own definition (README: the run folder)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from refineloop.apps.reading import read_values
from refineloop.cli.run_commands import start_run
from tests.conftest import judge_reply, refineloop

SUMMARY_LINE = re.compile(r"^\[(\d+)\] score (\S+)/10", re.M)
SUMMARY_BEST = re.compile(r"^best: image (\d+) \((\d+\.png)\) scored (\S+)/10", re.M)
REPORT_CARD = re.compile(r'<article class="card[^"]*" id="image-(\d+)">.*?<span class="score">([^<]+)/10</span>', re.S)
REPORT_POINT = re.compile(r'data-iteration="(\d+)" data-score="([^"]+)"')
REPORT_BEST = re.compile(r"<dt>best</dt><dd>image (\d+) scored ([^<]+)/10</dd>")
REPORT_BEST_CARD = re.compile(r'<article class="card best" id="image-(\d+)">')


def number(text: str) -> float | None:
    return None if text in ("?", "None", "unknown") else float(text)


def sidecars(run: Path) -> dict[int, dict[str, Any]]:
    return {int(p.stem): json.loads(p.read_text()) for p in sorted(run.glob("[0-9]*.json"))}


def state_of(run: Path) -> dict[str, Any]:
    meta = json.loads((run / "run.json").read_text())
    return read_values(str(run), meta["thread_id"])


def check_agreement(run: Path) -> tuple[int, dict[int, dict[str, Any]]]:
    """Every place that names the best and shows scores agrees; returns the best image and the sidecars."""
    records = sidecars(run)
    summary = (run / "summary.txt").read_text()
    report = (run / "report.html").read_text()
    state = state_of(run)

    sidecar_scores = {i: r.get("score") for i, r in records.items()}
    summary_scores = {int(i): number(s) for i, s in SUMMARY_LINE.findall(summary)}
    card_scores = {int(i): number(s) for i, s in REPORT_CARD.findall(report)}
    plot_scores = {int(i): number(s) for i, s in REPORT_POINT.findall(report)}
    assert summary_scores == sidecar_scores
    assert card_scores == sidecar_scores
    assert plot_scores == sidecar_scores

    best = state["best"]["iteration"]
    (summary_best,) = SUMMARY_BEST.findall(summary)
    (report_best,) = REPORT_BEST.findall(report)
    assert int(summary_best[0]) == int(report_best[0]) == best
    assert [int(i) for i in REPORT_BEST_CARD.findall(report)] == [best]
    assert summary_best[1] == f"{best:02d}.png"
    # The shown best score is the one its sidecar holds, and the one the state holds.
    assert number(summary_best[2]) == number(report_best[1]) == records[best]["score"] == state["best"]["score"]
    assert (run / "best.png").read_bytes() == (run / f"{best:02d}.png").read_bytes()
    return best, records


def duel_champion(records: dict[int, dict[str, Any]]) -> int:
    """The pairwise definition, replayed from the sidecars: the first scored image holds the title; an image
    takes it by beating the holder in both orders, or by a strictly higher score where it met no duel with it."""
    champion: int | None = None
    for iteration, record in sorted(records.items()):
        if record.get("score") is None or str(record.get("decision", "")).startswith("not chosen"):
            continue
        if champion is None:
            champion = iteration
            continue
        duel = record.get("pairwise")
        if duel and duel["against"] == champion:
            if duel["wins"] == 2:
                champion = iteration
        elif record["score"] > records[champion]["score"]:
            champion = iteration
    assert champion is not None
    return champion


def highest_scored(records: dict[int, dict[str, Any]]) -> int:
    """The score definition: the highest score, the earliest on a tie."""
    scored = [(r["score"], -i) for i, r in records.items() if r.get("score") is not None]
    return -max(scored)[1]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 5])
def test_pairwise_best_is_the_duel_winner_everywhere(tmp_path, seed):
    result = refineloop(
        "demo",
        "--judge",
        "pairwise",
        "--judge-samples",
        "3",
        "--seed",
        str(seed),
        "--max-iterations",
        "8",
        "--final-pick",
        "0",  # the duels' own definition; the final pick's is tested below
        "--output-dir",
        "r",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "r"
    best, records = check_agreement(run)
    assert best == duel_champion(records)
    # These seeds make a duel winner that is not the highest-scored image: the definitions really differ here.
    assert best != highest_scored(records)
    assert "the winner of the pairwise duels" in (run / "summary.txt").read_text()
    assert f"best: image {best} scored" in result.stdout


@pytest.mark.slow
def test_score_best_is_the_highest_revised_score_everywhere(tmp_path):
    result = refineloop(
        "demo",
        *("--judge-samples", "3", "--seed", "6", "--max-iterations", "8", "--final-pick", "0"),
        *("--output-dir", "r"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "r"
    best, records = check_agreement(run)
    assert best == highest_scored(records)
    rescored = [r for r in records.values() if "first_score" in r]
    assert rescored, "this seed re-scores incumbents: their sidecars must carry the revised score"
    for record in rescored:
        assert record["rescores"][-1]["score"] == record["score"]
        assert record["score"] == round(sum(record["samples"]) / len(record["samples"]), 2)
        assert len(record["samples"]) > 3


def test_a_rescore_that_drops_the_incumbent_hands_the_title_to_the_highest_earlier_image(scripted, run_settings, quiet):
    replies = [judge_reply(s) for s in (8, 8, 8, 8)]  # image 1: 8.0
    replies += [judge_reply(s) for s in (8, 8, 8, 7)]  # image 2: 7.75, a tie with 8.0: image 1 re-scored...
    replies += [judge_reply(s) for s in (8, 8, 8, 8)]  # ...and holds at 8.0: image 2 is rejected
    replies += [judge_reply(s) for s in (8, 8, 8, 7)]  # image 3: 7.75, a tie: image 1 re-scored again...
    replies += [judge_reply(s) for s in (6, 6, 6, 6)]  # ...and falls to 7.33, below image 2's 7.75
    cache, _ = scripted(replies)
    settings = run_settings(strategy="climbing", judge_samples=4, max_iterations=3, patience=5)
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    best, records = check_agreement(run)
    assert best == 2 and records[2]["score"] == 7.75
    assert records[1]["score"] == 7.33 and records[1]["first_score"] == 8
    assert records[1]["rescores"] == [{"at": 2, "score": 8.0}, {"at": 3, "score": 7.33}]
    assert len(records[1]["samples"]) == 12
    # Image 3 beats the re-scored image 1 but only ties image 2, the earlier one: no progress, a sideways move.
    assert records[3]["decision"] == "sideways" and records[3]["best_iteration"] == 2
    assert outcome.values["current"]["iteration"] == 3, "climbing walks onto an image level with the best"


@pytest.mark.slow
def test_the_final_pick_crowns_its_winner_everywhere(tmp_path):
    # The default run (final pick of 4): at this seed the pick hands the title to another image than the loop's best.
    result = refineloop("demo", "--seed", "4", "--output-dir", "r", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "r"
    best, records = check_agreement(run)
    pick = state_of(run)["final_pick"]
    assert best == pick["winner"] != pick["previous"], "this seed's pick changes the best"
    assert best != highest_scored(records)
    assert pick["pool"][0] == pick["previous"] and len(pick["pool"]) == 4
    ranks = {i: records[i]["final_pick"]["rank"] for i in pick["pool"]}
    assert ranks[best] == 1 and sorted(ranks.values()) == [1, 2, 3, 4]
    summary = (run / "summary.txt").read_text()
    assert f"final pick among #{pick['previous']}, " in summary and f": #{best} won" in summary
    assert "the winner of the final pick" in summary
    report = (run / "report.html").read_text()
    assert 'id="final-pick"' in report and f"#{best} won" in report
    assert f"final pick among #{pick['previous']}," in result.stdout and f"#{best} takes the title" in result.stdout
