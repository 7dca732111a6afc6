"""What the stop node does before it writes the artifacts: the final pick, then the audit."""

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


def finish(state: dict[str, Any], config: RunnableConfig | None) -> dict[str, Any]:
    """The stop node's hook: the update the final pick and the audit make (empty when neither is on). Both stay
    within the critic-call budget; a re-run of the stop node judges again and rewrites the same records."""
    settings = RunSettings.from_state(state["settings"])
    best = state.get("best")
    if not best or (settings.final_pick < 2 and not settings.audit_model):
        return {}
    started = time.perf_counter()
    task = Task.from_dict(state["task"])
    if state.get("checklist"):
        task = with_questions(task, state["checklist"])
    j = Judging(models_for(config), settings, task, state["run_dir"], Budget(critic_calls_left(state, settings)))
    update: dict[str, Any] = {}
    if settings.final_pick >= 2:
        candidate = state.get("candidate") or {}
        said_done = candidate.get("iteration") if candidate.get("verdict") == "DONE" else None
        pick = final_pick(j, best, said_done)
        if pick is not None:
            update["final_pick"] = pick
            crowned = winner_record(j.run_dir, pick)
            if crowned is not None and crowned["iteration"] != best["iteration"]:
                update["best"] = best = crowned
    if settings.audit_model:
        update["audit"] = audit_run(j, best)
    update.update(critic_calls=j.budget.used, seconds=time.perf_counter() - started)
    if j.stats:
        update["judge_stats"] = j.stats
    return update


def applied(state: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The state as it reads once `update` is applied (counters added, judge_stats merged), for the artifacts
    written in the same node."""
    merged = {**state, **update}
    for key in COUNTERS:
        if key in update:
            merged[key] = state.get(key, 0) + update[key]
    if "judge_stats" in update:
        merged["judge_stats"] = add_counts(state.get("judge_stats"), update["judge_stats"])
    return merged
