"""When a run stops and where the loop goes after an acceptance. Typed with Literal so Studio draws every edge."""

from __future__ import annotations

from typing import Literal

from refineloop.budgets import budget_stop_reason
from refineloop.settings import RunSettings
from refineloop.state import RefineState
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
    return None


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
