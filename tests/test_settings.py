"""Flags and their checks: every bad value gets one line that says what to do."""

from __future__ import annotations

import pytest

from refineloop.cli.main import main
from refineloop.settings import RunSettings


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--strategy", "sideways"], "unknown strategy 'sideways'"),
        (["--patience", "-1"], "--patience must be at least 1"),
        (["--cooling-rate", "1.5"], "--cooling-rate must be between 0 and 1"),
        (["--cooling-rate", "0"], "--cooling-rate must be between 0 and 1"),
        (["--initial-temp", "0"], "--initial-temp must be above 0"),
        (["--max-iterations", "-2"], "--max-iterations must be 0"),
        (["--initial-strength", "1.5"], "--initial-strength must be in (0, 1]"),
    ],
)
def test_out_of_range_flags_fail_in_one_line(flags, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_patience_default_follows_the_strategy():
    assert RunSettings(strategy="climbing").effective_patience() == 10
    assert RunSettings(strategy="img2img").effective_patience() == 4
    assert RunSettings(strategy="img2img", patience=2).effective_patience() == 2


def test_settings_round_trip_through_state():
    settings = RunSettings(strategy="annealing", seed=4, width=512)
    assert RunSettings.from_dict({**settings.to_dict(), "unknown_future_knob": 1}) == settings


def test_help_lists_every_knob_with_its_description(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--strategy",
        "--patience",
        "--max-iterations",
        "--seed",
        "--initial-temp",
        "--cooling-rate",
        "--image-model",
        "--eval-model",
        "--output-dir",
        "--task",
        "--goal",
    ):
        assert flag in out
    assert "Annealing geometric cooling" in out
