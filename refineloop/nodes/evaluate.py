"""`evaluate`: the judge. Cold, stateless, one round's images in; never crashes on what a model says.

How a round is judged (samples, re-scores of a tie, duels, the DONE confirmation, the audit, the checklist) is
refineloop.judges.round; this node gives it the run's models, settings, task and critic-call budget, and keeps
the round's files in step with the checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.model_cache import models_for
from refineloop.budgets import critic_calls_left
from refineloop.judges.base import Budget, Judging
from refineloop.judges.drafts import judge_drafts
from refineloop.judges.round import judge_round
from refineloop.run_folder.round_files import remake_missing, wait_for_round
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.tasks import Task


def evaluate(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Judge the round's images and hand the best-judged on as the candidate, within the critic-call budget."""
    started = time.perf_counter()
    remake_missing(state, config)  # on resume after a crash: the round's PNGs the writer had not finished
    settings = RunSettings.from_state(state["settings"])
    budget = Budget(critic_calls_left(state, settings))
    judging = Judging(models_for(config), settings, Task.from_dict(state["task"]), state["run_dir"], budget)
    # With drafts, a round is judged twice: its drafts (which one earns a full image), then that image.
    update = judge_drafts(judging, state) if state.get("drafts") else judge_round(judging, state)
    update.update(critic_calls=budget.used, seconds=time.perf_counter() - started)
    wait_for_round(state)  # the checkpoint after this node must never name an image that is not on disk
    return update
