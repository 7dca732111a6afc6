"""Acceptance: one node per strategy, one contract.

Each reads the judged candidate and writes current, best, misses, failed ideas, the decision, the idea the
next round starts from, a history entry and the image's sidecar. best does not depend on what the strategy
adopts; it is what the judge calls best (the README's best.png): with `--judge score` the highest-scored
image, the earliest on a tie (re-scores included: see `refineloop.nodes.evaluate`); with `--judge pairwise`
the image that beat the best in both orders of a duel, or by a strictly higher score where no duel with the
best was held. Whatever it names is what best.png, summary.txt and report.html show.
"""

from __future__ import annotations

import math
from typing import Any

from refineloop.run_folder.artifacts import save_json, sidecar_path
from refineloop.run_folder.report import refresh_live_report
from refineloop.schedules import draw, temperature
from refineloop.settings import RunSettings
from refineloop.state import Candidate, HistoryEntry, RefineState


def _beats(candidate: Candidate, best: Candidate | None) -> bool:
    """Strictly better than the best; an unscored image never wins, and a tie is no progress.

    With a pairwise verdict against that very image, better means winning in both orders; otherwise it
    means a strictly higher score.
    """
    if candidate.get("score") is None:
        return False
    if best is None or best.get("score") is None:
        return True
    duel = candidate.get("pairwise")
    if duel and duel["against"] == best["iteration"]:
        return duel["wins"] == 2
    return candidate["score"] > best["score"]


def _delta(candidate: Candidate, current: Candidate) -> float:
    """Annealing's step: the score difference, or +1 / 0 / -1 from a pairwise duel with the current image."""
    duel = candidate.get("pairwise")
    if duel and duel["against"] == current["iteration"]:
        return float(duel["wins"] - 1)
    return float(candidate["score"] - current["score"])


def _outcome(
    state: RefineState,
    decision: str,
    current: Candidate | None,
    *,
    anneal_t: float | None = None,
    anneal_draw: float | None = None,
) -> dict[str, Any]:
    """The common write-back of every strategy."""
    candidate = state["candidate"] or {}
    old_best = state.get("best")
    improved = _beats(candidate, old_best)
    best = candidate if improved else old_best
    adopted = decision != "rejected"
    failed = list(state.get("failed_ideas") or [])
    if improved:
        failed = []
    elif not adopted and candidate.get("idea"):
        failed.append(candidate["idea"])
    entry: HistoryEntry = {
        "iteration": candidate["iteration"],
        "score": candidate.get("score"),
        "verdict": candidate["verdict"],
        "decision": decision,
        "best_iteration": best["iteration"] if best else None,
        "best_score": best.get("score") if best else None,
        "temperature": anneal_t,
        "draw": anneal_draw,
    }
    save_json({**candidate, **entry}, sidecar_path(state["run_dir"], candidate["iteration"]))
    update = {
        "current": current,
        "best": best,
        "misses": 0 if improved else state.get("misses", 0) + 1,
        "failed_ideas": failed[-12:],
        "decision": decision,
        "idea": candidate.get("next_idea") if adopted and candidate.get("next_idea") else state["idea"],
    }
    # The image's record is final now: the live report shows it (a page of text, no collage; see its throttle).
    refresh_live_report(state["run_dir"], {**state, **update})
    # Only what changed is written: with durability "sync" every written key is a row saved before the next step.
    changed = {key: value for key, value in update.items() if state.get(key) != value}
    return {**changed, "history": [entry]}


def accept_greedy(state: RefineState) -> dict[str, Any]:
    """Greedy: always adopt the new image and follow the critic's idea."""
    return _outcome(state, "accepted", state["candidate"])


def accept_climbing(state: RefineState) -> dict[str, Any]:
    """Hill-climbing: adopt only a strictly higher score; otherwise revert to the best."""
    candidate = state["candidate"] or {}
    if _beats(candidate, state.get("best")):
        return _outcome(state, "accepted", candidate)
    return _outcome(state, "rejected", state.get("best"))


def accept_img2img(state: RefineState) -> dict[str, Any]:
    """img2img: climbing acceptance in image space (the next round starts from the best image)."""
    return accept_climbing(state)


def accept_annealing(state: RefineState) -> dict[str, Any]:
    """Simulated annealing: Metropolis on delta = new - current, with a seeded draw per iteration."""
    settings = RunSettings.from_dict(state["settings"])
    candidate = state["candidate"] or {}
    current = state.get("current")
    t = temperature(settings.initial_temp, settings.cooling_rate, candidate["iteration"])
    if candidate.get("score") is None:
        return _outcome(state, "rejected", current, anneal_t=t)
    if current is None or current.get("score") is None or (delta := _delta(candidate, current)) >= 0:
        return _outcome(state, "accepted", candidate, anneal_t=t)
    u = draw(settings.seed or 0, candidate["iteration"])
    if u < math.exp(delta / t):
        return _outcome(state, "accepted-worse", candidate, anneal_t=t, anneal_draw=round(u, 6))
    return _outcome(state, "rejected", current, anneal_t=t, anneal_draw=round(u, 6))


ACCEPT_NODES = {
    "greedy": accept_greedy,
    "climbing": accept_climbing,
    "annealing": accept_annealing,
    "img2img": accept_img2img,
}
