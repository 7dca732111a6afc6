"""`setup`: turn settings (from the input state or Studio's context form) into a ready run state."""

from __future__ import annotations

import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from refineloop.errors import SettingsError
from refineloop.prompts import with_kept
from refineloop.run_folder.names import safe_component
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.tasks import Task, resolve_task


def default_run_dir(task_name: str, root: str = "runs") -> str:
    """runs/<timestamp>-<task>, made unique if two runs start in the same second.

    The task name comes from a user's file, so it is reduced to one safe component: a name such as
    `x/../../elsewhere` must still land inside `root`.
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = safe_component(task_name, fallback="task")
    path = Path(root) / f"{stamp}-{name}"
    suffix = 1
    while path.exists() or path.is_symlink():
        suffix += 1
        path = Path(root) / f"{stamp}-{name}-{suffix}"
    return str(path.resolve())


def resolve_settings(settings: RunSettings, strategy: str | None = None) -> tuple[RunSettings, Task]:
    """Validate, choose and record a seed, resolve the task and the run folder's path (not made yet)."""
    if strategy:
        settings.strategy = strategy
    settings.validate()
    if settings.seed is None:
        settings.seed = random.SystemRandom().randrange(2**31)
    if settings.from_image:
        from refineloop.run_folder.provenance import start_from_image

        task = start_from_image(settings)
    else:
        task = resolve_task(settings.task, settings.goal)
    settings.output_dir = _chosen_dir(settings.output_dir) if settings.output_dir else default_run_dir(task.name)
    return settings, task


def _chosen_dir(output_dir: str) -> str:
    """The --output-dir given, absolute; `~nobody/...` for an unknown user is one line, not a traceback."""
    try:
        return str(Path(output_dir).expanduser().resolve())
    except RuntimeError:
        raise SettingsError(f"--output-dir {output_dir}: no such user's home folder; write the path out") from None


def initial_state(settings: RunSettings, task: Task) -> dict[str, Any]:
    """The first state of a run whose settings are resolved; makes the run folder."""
    run_dir = settings.output_dir
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return {
        "settings": settings.to_dict(),
        "task": task.to_dict(),
        "run_dir": run_dir,
        "iteration": 0,
        "idea": task.start_prompt,
        # The first image carries the task's words to keep too (every later prompt gets them from summarize).
        "prompt": with_kept(task.start_prompt, task.keep, task.subject),
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


def make_setup(strategy: str):  # noqa: ANN201 - returns a node function
    """A setup node bound to one graph's strategy (Studio's form may name another)."""

    def setup(state: RefineState, runtime: Runtime[RunSettings]) -> dict[str, Any]:
        """Fill in the run state unless the caller (the CLI) already did."""
        if state.get("run_dir") and state.get("task"):
            return {}
        given = state.get("settings")
        settings = RunSettings.from_dict(given) if given else (runtime.context or RunSettings())
        if isinstance(settings, dict):
            settings = RunSettings.from_dict(settings)
        return initial_state(*resolve_settings(settings, strategy))

    return setup
