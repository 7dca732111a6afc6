"""When a run stops and where the loop goes after an acceptance. Typed with Literal so Studio draws every edge."""

from __future__ import annotations

import math
from typing import Literal

from refineloop.budgets import budget_stop_reason
from refineloop.settings import RunSettings
from refineloop.state import HistoryEntry, RefineState
from refineloop.strategies import spec_for


def stop_reason(state: RefineState) -> str | None:
    """Why the run should stop now, or None to go on.

    DONE ends the run only when the image that said it was adopted and is (or ties) the best: a DONE on a
    rejected or lower-scored image must not crown it.
    """
    settings = RunSettings.from_state(state["settings"])
    candidate = state.get("candidate") or {}
    best = state.get("best") or {}
    score = candidate.get("score")
    if (
        candidate.get("verdict") == "DONE"
        and state.get("decision") != "rejected"
        and score is not None
        and score >= (best.get("score") or 0)
    ):
        return f"the critic said DONE at image {candidate['iteration']}"
    budget = budget_stop_reason(state, settings)
    if budget is not None:
        return budget
    if settings.screening and state.get("draft_rounds", 0) >= settings.round_cap():
        return f"reached --max-iterations {settings.max_iterations} (rounds of drafts)"
    if state["iteration"] >= settings.image_cap():
        if settings.max_iterations > 0:
            return f"reached --max-iterations {settings.max_iterations}" + (
                f" ({settings.candidates} images a round)" if settings.candidates > 1 else ""
            )
        return f"reached the safety cap of {settings.safety_cap} images (raise --safety-cap to go on)"
    patience = settings.effective_patience()
    if spec_for(settings.strategy).stops_on_misses and state.get("misses", 0) >= patience:
        if settings.candidates > 1:  # misses count rounds: one acceptance per round of candidates
            rounds = "round" if patience == 1 else "rounds in a row"
            return (
                f"{patience} {rounds} ({settings.candidates} images each) did not beat the best (--patience {patience})"
            )
        return f"{patience} images in a row did not beat the best (--patience {patience})"
    return plateau_reason(state, settings)


#: How many rounds it takes for a gain to weigh half as much in the plateau estimate.
PLATEAU_HALF_LIFE = 4.0
#: Rounds a run makes before a plateau may stop it (with fewer, the estimate is mostly noise).
PLATEAU_MIN_ROUNDS = 3


def expected_gain(history: list[HistoryEntry], rounds: int = 0) -> float:
    """The gain of the best's score one more round is expected to bring: the mean of the rounds' gains so far,
    recent rounds weighing more (the weight halves every PLATEAU_HALF_LIFE rounds back). A run that keeps
    finding better images keeps a high estimate; one whose gains dried up sees it fall round by round. With
    drafts, `rounds` counts every round, and those that ended at their drafts (no entry) gained nothing."""
    gains = round_gains(history, rounds)
    if not gains:
        return math.inf
    weights = [float(0.5 ** ((len(gains) - 1 - k) / PLATEAU_HALF_LIFE)) for k in range(len(gains))]
    return sum(w * g for w, g in zip(weights, gains, strict=True)) / sum(weights)


def round_gains(history: list[HistoryEntry], rounds: int = 0) -> list[float]:
    """How much each round after the first raised the best's score (0 for a round that made no image)."""
    scored = [(e.get("round"), float(s)) for e in history if (s := e.get("best_score")) is not None]
    steps = [max(0.0, later - earlier) for (_, earlier), (_, later) in zip(scored, scored[1:], strict=False)]
    if not rounds or any(at is None for at, _ in scored) or not scored:
        return steps
    gains = [0.0] * (rounds - int(scored[0][0] or 0))
    for (at, _), gain in zip(scored[1:], steps, strict=True):
        gains[int(at or 0) - int(scored[0][0] or 0) - 1] += gain
    return gains


def plateau_reason(state: RefineState, settings: RunSettings) -> str | None:
    """With --plateau-cost: stop once the last round missed and the expected gain per image is below its cost."""
    history = state.get("history") or []
    rounds = int(state.get("draft_rounds", 0))
    if not settings.plateau_cost or state.get("misses", 0) < 1 or max(len(history), rounds) < PLATEAU_MIN_ROUNDS:
        return None
    per_image = expected_gain(history, rounds) / max(1, settings.candidates)
    if per_image >= settings.plateau_cost:
        return None
    return (
        f"the best stopped improving: one more image is expected to gain {per_image:.2f} points, less than its cost "
        f"(--plateau-cost {settings.plateau_cost:g})"
    )


def route_after_evaluate(state: RefineState) -> Literal["accept", "generate", "stop", "summarize", "propose"]:
    """Accept the judged image; with drafts, draw the winning draft in full first, or, when no draft reached the
    best, route the missed round as acceptance would have."""
    if state.get("draft_winner"):
        return "generate"
    if state.get("draft_missed"):
        return route_after_accept(state)
    return "accept"


def route_after_accept(state: RefineState) -> Literal["stop", "summarize", "propose"]:
    """Stop, refine from the critic's idea, or ask the proposer for a new one."""
    if stop_reason(state) is not None:
        return "stop"
    settings = RunSettings.from_state(state["settings"])
    candidate = state.get("candidate") or {}
    adopted = state.get("decision") != "rejected"
    if spec_for(settings.strategy).follows_critic and adopted and candidate.get("next_idea"):
        return "summarize"
    return "propose"
