"""What "best" means in a run, in words: summary.txt and report.html both say it (README: the run folder)."""

from __future__ import annotations

from typing import Any

from refineloop.strategies import STRATEGY_SPECS


def best_rule(settings: dict[str, Any], pick: dict[str, Any] | None = None) -> str:
    """What "best" means in this run, in words (README: the run folder, best.png); `pick` is the run's final pick."""
    spec = STRATEGY_SPECS.get(str(settings.get("strategy")))
    if settings.get("judge") == "pairwise" and (spec is None or spec.comparing):
        rule = (
            "the winner of the pairwise duels: an image takes over by beating the best in both orders, or by a "
            "strictly higher score where it met no duel with the best"
        )
    else:
        rule = "the highest-scored image, the earliest on a tie; re-scored images count with their revised score"
    if pick and pick.get("winner") is not None and not pick.get("skipped"):
        return (
            "the winner of the final pick, where the best and the highest-scored images met again (the most duel "
            f"wins in both orders, then the higher mean of fresh looks); before it, the best was {rule}"
        )
    return rule
