"""Acceptance: one node per strategy, one contract.

Each applies its strategy's rule (refineloop.acceptance) to the judged candidate and writes current, best,
misses, failed ideas, the decision, the idea the next round starts from, a history entry and the image's
sidecar. best does not depend on what the strategy
adopts; it is what the judge calls best (the README's best.png): with `--judge score` the highest-scored
image, the earliest on a tie (re-scores included: see `refineloop.judges.rescore`); with `--judge pairwise`
the image that beat the best in both orders of a duel, or by a strictly higher score where no duel with the
best was held. Whatever it names is what best.png, summary.txt and report.html show.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from refineloop.acceptance import Decision, beats
from refineloop.outputs.report import refresh_live_report
from refineloop.run_folder.score_index import save_sidecar
from refineloop.settings import RunSettings
from refineloop.state import HistoryEntry, RefineState
from refineloop.strategies import StrategySpec


def accept_node(spec: StrategySpec) -> Callable[[RefineState], dict[str, Any]]:
    """The accept node of strategy `spec`: its rule decides, `apply_decision` writes the outcome."""

    def accept(state: RefineState) -> dict[str, Any]:
        """Apply the strategy's acceptance rule to the judged candidate."""
        return apply_decision(state, spec.rule(state, RunSettings.from_state(state["settings"])))

    accept.__name__ = spec.accept_node
    return accept


def apply_decision(state: RefineState, decided: Decision) -> dict[str, Any]:
    """The common write-back of every strategy."""
    decision, current = decided.decision, decided.current
    candidate = state["candidate"] or {}
    old_best = state.get("best")
    improved = beats(candidate, old_best)
    best = candidate if improved else old_best
    adopted = decision != "rejected"
    failed: list[str] | None = None  # what to write to `failed_ideas`: its writes append, an empty one clears
    if improved and state.get("failed_ideas"):
        failed = []
    elif not improved and not adopted and candidate.get("idea"):
        failed = [candidate["idea"]]
    entry: HistoryEntry = {
        "iteration": candidate["iteration"],
        "score": candidate.get("score"),
        "verdict": candidate["verdict"],
        "decision": decision,
        "best_iteration": best["iteration"] if best else None,
        "best_score": best.get("score") if best else None,
        "temperature": decided.temperature,
        "draw": decided.draw,
    }
    if state.get("draft_rounds"):
        entry["round"] = state["draft_rounds"]
    save_sidecar({**candidate, **entry}, state["run_dir"], candidate["iteration"])
    update = {
        "current": current,
        "best": best,
        "misses": 0 if improved else state.get("misses", 0) + 1,
        "decision": decision,
        "idea": candidate.get("next_idea") if adopted and candidate.get("next_idea") else state["idea"],
    }
    # Only what changed is written: with durability "sync" every written key is a row saved before the next step.
    changed: dict[str, Any] = {key: value for key, value in update.items() if state.get(key) != value}
    if failed is not None:
        changed["failed_ideas"] = failed
    # The image's record is final now: the live report shows it (a page of text, no collage; see its throttle).
    refresh_live_report(state["run_dir"], {**state, **update})
    return {**changed, "history": [entry]}
