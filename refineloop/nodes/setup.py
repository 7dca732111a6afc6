"""`setup`: turn the graph's input (refineloop.state.RunInput) and Studio's context form into a ready run state.

The refineloop CLI resolves its settings and task first (to make the run folder and load the models before
the graph starts) and hands both in; Studio hands in a goal, settings, or nothing, and its context form.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from refineloop.backends.model_cache import models_for
from refineloop.errors import ModelError
from refineloop.round_request import first_prompt
from refineloop.run_start import resolve_settings
from refineloop.settings import RunSettings
from refineloop.state import RunInput
from refineloop.tasks import Task


def initial_state(settings: RunSettings, task: Task) -> RunInput:
    """The graph's input for a run whose settings and task are resolved; makes the run folder. The setup node
    builds the first state from it."""
    Path(settings.output_dir).mkdir(parents=True, exist_ok=True)
    return {"settings": settings.to_dict(), "task": task.to_dict()}


def first_state(settings: RunSettings, task: Task) -> dict[str, Any]:
    """The first state of a run whose settings are resolved; makes the run folder."""
    run_dir = settings.output_dir
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return {
        "settings": settings.to_dict(),
        "task": task.to_dict(),
        "run_dir": run_dir,
        "iteration": 0,
        "idea": task.start_prompt,
        "prompt": first_prompt(task),
        "candidate": None,
        "current": None,
        "best": None,
        "failed_ideas": [],
        "misses": 0,
        "decision": "",
        "status": "running",
        "stop_reason": "",
        "started_at": time.time(),
        "critic_calls": 0,
        "seconds": 0.0,
        "comparisons": 0,
        "order_flips": 0,
    }


def given_settings(given: RunInput, context: RunSettings | dict[str, Any] | None) -> RunSettings:
    """The settings a run starts with: the input's, else the context form's, with the input's goal (if any)."""
    settings = given.get("settings") or context or RunSettings()
    chosen = RunSettings.from_dict(settings) if isinstance(settings, dict) else settings
    if given.get("goal"):
        chosen.goal = str(given["goal"])
    return chosen


SetupNode = Callable[..., dict[str, Any]]


def make_setup(strategy: str) -> SetupNode:
    """A setup node bound to one graph's strategy (Studio's form may name another)."""

    def setup(state: RunInput, runtime: Runtime[RunSettings]) -> dict[str, Any]:
        """Build the first run state from the input and the context form."""
        settings = given_settings(state, runtime.context)
        task = state.get("task")
        # A goal in the input asks for a task of its own; a task handed in is used as it is.
        resolved = Task.from_dict(task) if task and not state.get("goal") else None
        return first_state(*resolve_settings(settings, strategy, resolved))

    return setup


def make_agent_setup(strategy: str) -> SetupNode:
    """A setup node that also loads the agent's model, so a missing one fails before any image is made."""
    base = make_setup(strategy)

    def setup(state: RunInput, runtime: Runtime[RunSettings], config: RunnableConfig) -> dict[str, Any]:
        """Build the first run state and load the agent model."""
        update = base(state, runtime)
        settings = RunSettings.from_dict(update["settings"])
        try:
            models_for(config).agent_model(settings)
        except ModelError as exc:
            if not settings.agent_model:
                raise
            raise ModelError(f"--agent-model {settings.agent_model}: {exc}") from exc
        return update

    return setup
