"""The generated reference pages match the code, and every setting has a shape (group, bounds, choices)."""

from __future__ import annotations

import dataclasses

import pytest

from refineloop.cli.main import main
from refineloop.cli.reference import DOCS, PAGES
from refineloop.knob_shapes import GROUPS, KNOB_SHAPES
from refineloop.settings import RunSettings


@pytest.mark.parametrize("page", sorted(PAGES))
def test_generated_page_matches_the_code(page):
    written = (DOCS / page).read_text("utf-8")
    assert written == PAGES[page](), f"docs/{page} drifted: run `python -m refineloop.cli.reference`"


def test_every_setting_has_a_shape_in_a_known_group():
    names = {field.name for field in dataclasses.fields(RunSettings)}
    assert names == set(KNOB_SHAPES), "give each setting a Shape in refineloop/knob_shapes.py (and only those)"
    assert {shape.group for shape in KNOB_SHAPES.values()} <= set(GROUPS)


def test_run_help_is_grouped_and_shows_bounds(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for group in GROUPS:
        assert f"{group} settings:" in text
    assert "--candidates CANDIDATES Images drawn per round" in text and "Must be between 1 and 16." in text
    assert "Must be 0 (off) or between 2 and 10." in text  # --final-pick
    assert "Choices: score, pairwise, checklist." in text  # --judge


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--candidates", "17"], "--candidates must be between 1 and 16, got 17"),
        (["--cooling-rate", "1"], "--cooling-rate must be between 0 and 1, exclusive, got 1.0"),
        (["--final-strength", "0"], "--final-strength must be in (0, 1], got 0.0"),
        (["--max-images", "-1"], "--max-images must be 0 (no image budget) or above 0, got -1"),
        (["--judge", "vibes"], "unknown judge 'vibes': use one of score, pairwise, checklist"),
    ],
)
def test_validation_says_the_bound_the_help_shows(flags, message, tmp_path, capsys):
    assert main(["run", *flags, "--output-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"refineloop: error: {message}"
