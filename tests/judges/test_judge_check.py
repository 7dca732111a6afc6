"""`refineloop judge-check`: the user's own critic measured on real images, a table, a recommendation with its
measured reason, and judge-check.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from refineloop.apps.judge_check import command_line, recommend
from refineloop.cli.main import main
from tests.conftest import images_in, refineloop

ROWS = ("cold score repeats", "cold scores tie between images", "warm sample spread", "duel position flips")


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_a_fresh_batch_measures_the_critic_and_recommends_settings(tmp_path):
    result = refineloop("judge-check", "--output-dir", "chk", "--images", "4", "--pairs", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = tmp_path / "chk"
    assert images_in(folder) == ["01.png", "02.png", "03.png", "04.png"]
    for row in ROWS:
        assert row in result.stdout
    assert "log probabilities  " in result.stdout and "recommended: --judge " in result.stdout
    report = json.loads((folder / "judge-check.json").read_text())
    assert report["critic"] == "demo" and len(report["images"]) == 4
    # Two cold and three warm looks per image, three duels in both orders, one checklist look.
    assert all(len(i["cold"]) == 2 and len(i["warm"]) == 3 for i in report["images"])
    assert len(report["duels"]) == 3 and report["critic_calls"] == 4 * 5 + 3 * 2 + 1
    assert report["measures"]["cold_repeat"] == {"value": 1.0, "basis": 4}, "the demo's cold judge repeats itself"
    assert report["logprobs"] is True
    recommendation = report["recommendation"]
    assert recommendation["flags"] in result.stdout and recommendation["reasons"]
    trace = [json.loads(line) for line in (folder / "trace.jsonl").read_text().splitlines()]
    assert sum(t.get("kind") == "chat" for t in trace) == report["critic_calls"]


@pytest.mark.slow
def test_a_run_folder_is_checked_in_place_and_its_run_left_alone(tmp_path):
    made = refineloop("demo", "--seed", "3", "--max-iterations", "5", "--output-dir", "r", cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    run = tmp_path / "r"
    before = {k: v for k, v in digest(run).items() if k.endswith((".png", ".json", ".sqlite"))}
    result = refineloop(
        *("judge-check", "r", "--images", "3", "--samples", "2", "--pairs", "2", "--audit-model", "demo"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "auditor ranks pairs alike" in result.stdout
    report = json.loads((run / "judge-check.json").read_text())
    # Three images spread over the run: its first, its middle and its last.
    assert [i["iteration"] for i in report["images"]] == [1, 3, 5]
    assert all(i["auditor"] is not None for i in report["images"])
    after = {k: v for k, v in digest(run).items() if k in before}
    assert after == before, "the run's images, sidecars and checkpoints are untouched"
    listed = refineloop("runs", str(tmp_path), cwd=tmp_path)
    assert " done " in listed.stdout


@pytest.mark.slow
def test_drafts_are_checked_beside_their_images_and_the_walk_follows_what_they_show(tmp_path):
    args = ("judge-check", "--output-dir", "chk", "--images", "4", "--samples", "2", "--pairs", "2")
    result = refineloop(*args, "--draft-size", "64", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = tmp_path / "chk"
    assert sorted(p.name for p in (folder / "drafts").iterdir()) == ["01.png", "02.png", "03.png", "04.png"]
    report = json.loads((folder / "judge-check.json").read_text())
    assert all(i["draft"] is not None and i["draft_path"].endswith(".png") for i in report["images"])
    # Two cold and two warm looks per image, two duels in both orders, a cold look at each draft, the checklist.
    assert report["critic_calls"] == 4 * 4 + 2 * 2 + 4 + 1
    assert report["measures"]["draft_gap"]["basis"] == 4
    assert "drafts rank pairs like their images" in result.stdout and "a draft's score off its image's" in result.stdout
    agreement = report["measures"]["draft_agreement"]["value"]
    recommendation = report["recommendation"]
    if agreement is not None and agreement >= 0.75:
        assert "--draft-walk --draft-size 64" in recommendation["flags"]
    else:
        assert "--draft-walk" not in recommendation["flags"]
        assert any(r.startswith("no --draft-walk: drafts (--draft-size 64)") for r in recommendation["reasons"])


def test_the_walk_is_recommended_only_for_drafts_that_rank_like_their_images():
    steady = measured(cold_repeat=1.0, score_ties=0.1, warm_spread=0.2, flip_rate=0.1, tie_rate=0.0, agreement=0.9)
    alike = {**steady, "draft_agreement": (0.8, 10), "draft_gap": (0.6, 5)}
    chosen, reasons = recommend(alike, logprobs=False, drafts={"draft_steps": 7, "draft_size": 0})
    assert chosen["draft_walk"] is True and chosen["draft_steps"] == 7
    assert "--draft-walk --draft-steps 7" in command_line(chosen)
    assert any("rank 80% of pairs like their images, 0.60 points off them" in r for r in reasons)
    unlike = {**steady, "draft_agreement": (0.5, 10), "draft_gap": (2.1, 5)}
    chosen, reasons = recommend(unlike, logprobs=False, drafts={"draft_steps": 7, "draft_size": 0})
    assert "draft_walk" not in chosen and "--draft-walk" not in command_line(chosen)
    assert any(r.startswith("no --draft-walk: drafts (--draft-steps 7) rank 50%") for r in reasons)
    chosen, reasons = recommend(steady, logprobs=False)
    assert not any("draft" in r for r in reasons), "without drafts checked the walk is not mentioned"


def test_drafts_of_a_run_folder_are_refused_in_one_line(tmp_path, capsys):
    assert main(["judge-check", str(tmp_path), "--draft-size", "64"]) == 2
    err = capsys.readouterr().err
    assert "measure drafts of a fresh batch" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--images", "1"], "--images must be between 2 and 20, got 1"),
        (["--samples", "9"], "--samples must be between 2 and 8, got 9"),
        (["--eval-model", "ollama:"], "--eval-model 'ollama:' is not a model"),
    ],
)
def test_bad_flags_are_one_line(args, says, capsys):
    assert main(["judge-check", *args]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    assert main(["judge-check", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1


def measured(**values: float | None) -> dict[str, tuple[float | None, int]]:
    keys = ("cold_repeat", "score_ties", "warm_spread", "flip_rate", "tie_rate", "agreement")
    return {key: (values.get(key), 6) for key in keys}


def test_the_recommendation_follows_what_was_measured():
    steady = measured(cold_repeat=1.0, score_ties=0.1, warm_spread=0.2, flip_rate=0.1, tie_rate=0.0, agreement=0.9)
    chosen, reasons = recommend(steady, logprobs=False)
    assert (chosen["judge"], chosen["judge_samples"], chosen["strategy"], chosen["patience"]) == (
        "score",
        1,
        "climbing",
        3,
    )
    noisy = measured(cold_repeat=0.6, score_ties=0.1, warm_spread=0.9, flip_rate=0.5, tie_rate=0.1, agreement=0.8)
    chosen, reasons = recommend(noisy, logprobs=False)
    assert (chosen["judge"], chosen["judge_samples"], chosen["patience"]) == ("score", 3, 10)
    assert any("warm samples spread 0.90 points" in r for r in reasons)
    duels = measured(cold_repeat=1.0, score_ties=0.1, warm_spread=0.2, flip_rate=0.1, tie_rate=0.1, agreement=0.5)
    chosen, reasons = recommend(duels, logprobs=False)
    assert chosen["judge"] == "pairwise" and "agree with them only 50%" in reasons[0]
    squeezed = measured(cold_repeat=1.0, score_ties=0.7, warm_spread=0.3, flip_rate=0.4, tie_rate=0.4, agreement=0.6)
    chosen, reasons = recommend(squeezed, logprobs=True)
    assert (chosen["judge"], chosen["strategy"]) == ("checklist", "annealing")
    chosen, reasons = recommend(squeezed, logprobs=False)
    assert (chosen["judge"], chosen["strategy"], chosen["patience"]) == ("score", "climbing", 10)
    assert any("70% of image pairs tie" in r and "sideways" in r for r in reasons)


def test_a_fresh_batch_never_writes_into_a_folder_in_use(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert main(["judge-check", "--output-dir", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["notes.txt"]
