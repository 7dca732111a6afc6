"""What the evaluate node adds to its update for the judges package, in one call (its hooks stay one line each)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from refineloop.judges.base import Judging
from refineloop.judges.measure import add, count_samples


def evaluate_extras(
    judged: Sequence[Mapping[str, Any]], judging: Judging, checklist: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """The judge's counters of this round (the spread of each new image's samples, plus what the judging steps
    counted) and, when the checklist was just written, the checklist for the state to keep."""
    stats = dict(judging.stats)
    for candidate in judged:  # new images: their samples are this round's
        add(stats, count_samples(candidate.get("samples") or []))
    extras: dict[str, Any] = {"judge_stats": stats} if stats else {}
    if checklist is not None:
        extras["checklist"] = checklist
    return extras
