"""What the stop node does before it writes the artifacts: the final pick, then the audit.

Two steps, so that the stop can put a step between them (a walk on drafts draws its crowned draft in full after
the pick and before the audit: refineloop.nodes.walk). Each stays within the critic-call budget the state it is
given leaves; a re-run of the stop node judges again and rewrites the same records.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.model_cache import models_for
from refineloop.budgets import critic_calls_left
from refineloop.judges.audit import audit_run
from refineloop.judges.base import Budget, Judging
from refineloop.judges.checklist import with_questions
from refineloop.judges.final_pick import final_pick, winner_record
from refineloop.settings import RunSettings
from refineloop.state import add_counts
from refineloop.tasks import Task

#: State channels whose updates add to what the state holds (the rest replace it).
COUNTERS = ("critic_calls", "seconds", "comparisons", "order_flips")


def stop_judging(state: dict[str, Any], config: RunnableConfig | None, *, keep: int = 0) -> Judging:
    """The judging the stop's steps share: the run's models, settings, task (with its checklist) and the critic
    calls the state leaves, less `keep` calls held back for a later step."""
    settings = RunSettings.from_state(state["settings"])
    task = Task.from_dict(state["task"])
    if state.get("checklist"):
        task = with_questions(task, state["checklist"])
    left = critic_calls_left(state, settings)
    budget = Budget(None if left is None else max(0, left - keep))
    return Judging(models_for(config), settings, task, state["run_dir"], budget)


def pick_step(state: dict[str, Any], config: RunnableConfig | None) -> dict[str, Any]:
    """The final pick's update (--final-pick K): its record and, when another image won, the new best; empty
    when it is off or there is no best."""
    settings = RunSettings.from_state(state["settings"])
    best = state.get("best")
    if not best or settings.final_pick < 2:
        return {}
    started = time.perf_counter()
    j = stop_judging(state, config, keep=settings.stop_draws())  # a walk's full images are judged after the pick
    candidate = state.get("candidate") or {}
    said_done = candidate.get("iteration") if candidate.get("verdict") == "DONE" else None
    update: dict[str, Any] = {}
    pick = final_pick(j, best, said_done)
    if pick is not None:
        update["final_pick"] = pick
        crowned = winner_record(j.run_dir, pick)
        if crowned is not None and crowned["iteration"] != best["iteration"]:
            update["best"] = crowned
    return {**update, **spent(j, started)}


def audit_step(state: dict[str, Any], config: RunnableConfig | None, start_at: int | None = None) -> dict[str, Any]:
    """The audit's update (--audit-model): the crowned image against the first one (`start_at` where another
    image stands for the first drawn); empty when there is no auditor or no best."""
    settings = RunSettings.from_state(state["settings"])
    if not settings.audit_model or not state.get("best"):
        return {}
    started = time.perf_counter()
    j = stop_judging(state, config)
    return {"audit": audit_run(j, state["best"], start_at), **spent(j, started)}


def spent(j: Judging, started: float) -> dict[str, Any]:
    """What a step at the stop spent: critic calls, seconds, and the judge's counters when it counted any."""
    update: dict[str, Any] = {"critic_calls": j.budget.used, "seconds": time.perf_counter() - started}
    if j.stats:
        update["judge_stats"] = j.stats
    return update


def applied(state: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The state as it reads once `update` is applied (counters added, judge_stats merged), for the artifacts
    written in the same node; of two updates, the one update that does both."""
    merged = {**state, **update}
    for key in COUNTERS:
        if key in update:
            merged[key] = state.get(key, 0) + update[key]
    if "judge_stats" in update:
        merged["judge_stats"] = add_counts(state.get("judge_stats"), update["judge_stats"])
    return merged
