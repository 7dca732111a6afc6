"""Acceptance rules: what each search strategy keeps of a judged image, as pure decisions.

A rule reads the judged candidate (and the state around it) and says whether the walk adopts it and where the
walk stands afterwards. It writes nothing: the accept node (refineloop.nodes.accept) applies the decision to
the state, the history and the image's sidecar, the same way for every strategy. A new strategy's rule is one
function of this shape, named in its entry of refineloop.strategies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from refineloop.schedules import draw, temperature

if TYPE_CHECKING:  # the state's module imports LangGraph: not needed to read the rules' table at start-up
    from refineloop.state import Candidate, RefineState


class RuleKnobs(Protocol):
    """The settings a rule may read; RunSettings has them all. A protocol rather than RunSettings itself, because
    the settings validate strategy names against the table that names these rules."""

    seed: int | None
    initial_temp: float
    cooling_rate: float
    sideways: bool


@dataclass(frozen=True)
class Decision:
    """What a rule decided about the judged candidate."""

    decision: str
    """accepted, rejected, sideways (climbing onto an image level with the best) or accepted-worse (annealing's
    downhill move)."""
    current: Candidate | None
    """Where the walk stands afterwards."""
    temperature: float | None = None
    """Annealing's temperature at this step, if the rule has one."""
    draw: float | None = None
    """Annealing's seeded uniform draw, when it decided a downhill move."""


#: An acceptance rule: (state with a judged candidate, the run's settings) -> decision.
Rule = Callable[["RefineState", RuleKnobs], Decision]


def _standing(candidate: Candidate, best: Candidate | None) -> int:
    """1 when the candidate beats the best, 0 when it is level with it, -1 when it falls short.

    An unscored image falls short, and any scored image beats a best that has no score. With a pairwise verdict
    against that very image, winning both orders beats it and a split or a tie in either order is level;
    otherwise the scores decide.
    """
    score = candidate.get("score")
    if score is None:
        return -1
    held = best.get("score") if best is not None else None
    if best is None or held is None:
        return 1
    duel = candidate.get("pairwise")
    if duel and duel["against"] == best["iteration"]:
        if duel["wins"] == 2:
            return 1
        return 0 if duel["wins"] == 1 or duel.get("ties", 0) > 0 else -1
    return 1 if score > held else 0 if score == held else -1


def beats(candidate: Candidate, best: Candidate | None) -> bool:
    """Strictly better than the best: a higher score, or both orders of a duel with it; a tie is no progress."""
    return _standing(candidate, best) == 1


def _delta(candidate: Candidate, current: Candidate) -> float:
    """Annealing's step: the score difference, or +1 / 0 / -1 from a pairwise duel with the current image."""
    duel = candidate.get("pairwise")
    if duel and duel["against"] == current["iteration"]:
        return float(duel["wins"] - 1)
    return float(candidate.get("score") or 0.0) - float(current.get("score") or 0.0)


def keep_new(state: RefineState, settings: RuleKnobs) -> Decision:
    """Greedy: always adopt the new image."""
    return Decision("accepted", state["candidate"])


def keep_better(state: RefineState, settings: RuleKnobs) -> Decision:
    """Hill-climbing: adopt only an image that beats the best; otherwise stand on the best again."""
    candidate = state["candidate"] or {}
    if beats(candidate, state.get("best")):
        return Decision("accepted", candidate)
    return Decision("rejected", state.get("best"))


def climb(state: RefineState, settings: RuleKnobs) -> Decision:
    """Hill-climbing with sideways moves: adopt an image that beats the best; walk on to one level with it
    without crowning it; after a miss, stand where the walk stands.

    On a coarse or squeezed scale most new images tie the best, and a strict climber stands still on the first of
    them while its newer ideas go unexplored (the plateau problem of local search). A sideways move is still a
    miss, so --patience bounds a walk along a plateau; the final pick decides between the level images.
    With --no-sideways this is `keep_better`, the seed's climbing.
    """
    if not settings.sideways:
        return keep_better(state, settings)
    candidate = state["candidate"] or {}
    best = state.get("best")
    standing = _standing(candidate, best)
    if standing > 0:
        return Decision("accepted", candidate)
    if standing == 0:
        return Decision("sideways", candidate)
    return Decision("rejected", state.get("current") or best)


def metropolis(state: RefineState, settings: RuleKnobs) -> Decision:
    """Simulated annealing: Metropolis on delta = new - current, with a seeded draw per iteration."""
    candidate = state["candidate"] or {}
    current = state.get("current")
    t = temperature(settings.initial_temp, settings.cooling_rate, candidate["iteration"])
    if candidate.get("score") is None:
        return Decision("rejected", current, t)
    if current is None or current.get("score") is None or (delta := _delta(candidate, current)) >= 0:
        return Decision("accepted", candidate, t)
    u = draw(settings.seed or 0, candidate["iteration"])
    if u < math.exp(delta / t):
        return Decision("accepted-worse", candidate, t, round(u, 6))
    return Decision("rejected", current, t, round(u, 6))
