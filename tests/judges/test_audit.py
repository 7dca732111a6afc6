"""`--audit-model`: an independent critic judges the crowned image against the first one, and with
`--audit-every` every image; summary, report and the batch table say whether it agrees that the run improved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refineloop.cli.main import main
from refineloop.cli.run_commands import start_run
from tests.conftest import TemperatureCritic, batch_cli, judge_reply, refineloop


def with_auditor(cache, **fields) -> TemperatureCritic:
    """A second scripted critic, registered as `auditor`."""
    auditor = TemperatureCritic(**{"judge": [], "calls": [], **fields})
    cache.register_chat("auditor", auditor)
    return auditor


def test_the_auditor_disagrees_when_it_prefers_the_first_image(scripted, run_settings, quiet):
    cache, critic = scripted([judge_reply(5), judge_reply(7), judge_reply(6)])
    # The duel is crowned image first, then the first image first: the first image wins both orders.
    auditor = with_auditor(cache, compare_replies=["WINNER: B", "WINNER: A"])
    settings = run_settings(strategy="climbing", max_iterations=3, final_pick=0, audit_model="auditor")
    outcome = start_run(settings, models=cache, out=quiet)
    audit = outcome.values["audit"]
    assert audit["verdict"] == "disagrees" and audit["crowned"] == 2 and audit["wins"] == 0
    assert [c["role"] for c in auditor.calls] == ["compare", "compare"] and not any(
        c["role"] == "compare" for c in critic.calls
    )
    assert {c["temperature"] for c in auditor.calls} == {0.0}, "the auditor judges cold"
    assert outcome.values["critic_calls"] == len(critic.calls) + len(auditor.calls)
    run = Path(outcome.run_dir)
    line = "audit by auditor: disagrees: it prefers the first image: #2 against #1 won 0 of 2 orders"
    assert line in (run / "summary.txt").read_text()
    assert 'id="audit"' in (run / "report.html").read_text() and line in quiet.getvalue()
    assert "auditor: auditor" in quiet.getvalue().splitlines()[0]


def test_audit_every_scores_each_image_and_measures_agreement(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(5), judge_reply(7), judge_reply(6)])
    with_auditor(cache, judge=[judge_reply(6), judge_reply(4), judge_reply(8)], compare_replies=["WINNER: A"] * 2)
    settings = run_settings(
        strategy="climbing", max_iterations=3, final_pick=0, audit_model="auditor", audit_every=True
    )
    outcome = start_run(settings, models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert [json.loads((run / f"0{i}.json").read_text())["audit_score"] for i in (1, 2, 3)] == [6, 4, 8]
    audit = outcome.values["audit"]
    # Of the three pairs, the auditor ranks only (#1, #3) as the run's judge does; its favourite is #3.
    assert audit["agreement"] == 0.333 and audit["pairs"] == 3 and audit["auditor_best"] == 3
    assert audit["verdict"] == "unsure", "'WINNER: A' in both orders is a split"
    summary = (run / "summary.txt").read_text()
    assert "it scored 3 images: ranks 33% of 3 image pairs like the run's judge; its own favourite is #3" in summary
    assert "the auditor scored it 8/10" in (run / "report.html").read_text()


def test_a_run_that_crowns_its_first_image_needs_no_duel(scripted, run_settings, quiet):
    cache, _ = scripted([judge_reply(7), judge_reply(5)])
    auditor = with_auditor(cache)
    settings = run_settings(strategy="climbing", max_iterations=2, final_pick=0, audit_model="auditor")
    outcome = start_run(settings, models=cache, out=quiet)
    assert outcome.values["audit"]["verdict"] == "same image" and not auditor.calls


def test_audit_every_without_an_auditor_is_one_line(capsys):
    assert main(["demo", "--audit-every"]) == 2
    err = capsys.readouterr().err
    assert "--audit-every needs an auditor: add --audit-model MODEL" in err and err.count("\n") == 1


def test_an_unreachable_auditor_fails_before_the_first_image(tmp_path, capsys):
    folder = tmp_path / "r"
    code = main(
        ["demo", "--audit-model", "ollama:llava:7b", "--ollama-url", "http://127.0.0.1:9", "--output-dir", str(folder)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("refineloop: error: cannot reach Ollama at http://127.0.0.1:9") and err.count("\n") == 1
    assert not folder.exists() or not any(folder.iterdir())


@pytest.mark.slow
def test_the_demo_audits_every_image_with_a_second_critic(tmp_path):
    result = refineloop(
        "demo", "--seed", "3", "--audit-model", "demo", "--audit-every", "--output-dir", "r", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "r"
    records = [json.loads(p.read_text()) for p in sorted(run.glob("[0-9]*.json"))]
    assert records and all(isinstance(r.get("audit_score"), int | float) for r in records)
    summary = (run / "summary.txt").read_text()
    assert "audit by demo: agrees that the run improved" in summary and "audit by demo" in result.stdout
    assert "warning: --audit-model demo is the run's own critic: its audit is not independent" in result.stdout


@pytest.mark.slow
def test_the_batch_table_shows_each_runs_audit(tmp_path):
    (tmp_path / "goals.txt").write_text("a hotdog on fire\na glowing hotdog\n")
    result = batch_cli("goals.txt", "--max-iterations", "3", "--audit-model", "demo", "--output-dir", "b", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    table = (tmp_path / "b" / "summary.txt").read_text()
    header, first, second = table.splitlines()[:3]
    assert "audit" in header
    words = ("improved", "not improved", "unsure", "-")
    assert all(any(f" {w} " in line for w in words) for line in (first, second)), table
    rows = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert all(row["audit"] in ("improved", "not improved", "unsure", "-") for row in rows)
