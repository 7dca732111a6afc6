"""`setup`: turn the graph's input (refineloop.state.RunInput) and Studio's context form into a ready run state.

The refineloop CLI resolves its settings and task first (to make the run folder and load the models before
the graph starts) and hands both in; Studio hands in a goal, settings, or nothing, and its context form.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from refineloop.backends.checks import validated
from refineloop.backends.model_cache import models_for
from refineloop.errors import ModelError, SettingsError
from refineloop.files.names import safe_component
from refineloop.knob_shapes import URL_SETTINGS
from refineloop.prompts import with_kept
from refineloop.redaction import hide_credentials, redact
from refineloop.settings import RunSettings
from refineloop.state import RunInput
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


def resolve_settings(
    settings: RunSettings, strategy: str | None = None, task: Task | None = None
) -> tuple[RunSettings, Task]:
    """Validate, choose and record a seed, resolve the task (unless one is given) and the run folder's path
    (not made yet)."""
    if strategy:
        settings.strategy = strategy
    validated(settings)
    hide_url_credentials(settings)
    settings.goal = redact(settings.goal)  # before the task's name, the folder's name and the state come from it
    if settings.seed is None:
        settings.seed = random.SystemRandom().randrange(2**31)
    if settings.init_image:
        from refineloop.run_folder.init_picture import checked_picture

        settings.init_image = checked_picture(settings.init_image)  # before any folder exists
    if task is not None and Path(settings.output_dir).is_absolute():
        # Resolved before (by the CLI): its folder already stands where it says.
        return settings, task.with_negative_prompt(settings.negative_prompt)
    if task is None and settings.from_image:
        from refineloop.run_folder.provenance import start_from_image

        task = start_from_image(settings)
    elif task is None:
        task = resolve_task(settings.task, settings.goal)
    settings.output_dir = _chosen_dir(settings.output_dir) if settings.output_dir else default_run_dir(task.name)
    return settings, task.with_negative_prompt(settings.negative_prompt)


def hide_url_credentials(settings: RunSettings) -> RunSettings:
    """The server URLs a run records (in every checkpoint, run.json, the report) with their credentials masked;
    this process still connects with the whole URL (refineloop.redaction.reveal). A resume in another process
    is given the URL again (--ollama-url / --openai-url) or finds the secret in the environment."""
    for name in URL_SETTINGS:
        setattr(settings, name, hide_credentials(getattr(settings, name)))
    return settings


def _chosen_dir(output_dir: str) -> str:
    """The --output-dir given, absolute; `~nobody/...` for an unknown user is one line, not a traceback."""
    try:
        return str(Path(output_dir).expanduser().resolve())
    except RuntimeError:
        raise SettingsError(f"--output-dir {output_dir}: no such user's home folder; write the path out") from None


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
