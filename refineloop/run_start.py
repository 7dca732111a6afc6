"""A new run's settings made definite before anything is made: the seed chosen and recorded, the task resolved,
credentials masked, and the run folder's path named (not made).

The CLI resolves a run here before LangGraph is imported, to begin the first image early
(refineloop.apps.head_start); the graph's setup node (refineloop.nodes.setup) resolves what Studio hands in the
same way. Kept free of LangGraph and LangChain imports.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from refineloop.backends.checks import validated
from refineloop.errors import SettingsError
from refineloop.files.names import safe_component
from refineloop.knob_shapes import URL_SETTINGS
from refineloop.redaction import hide_credentials, redact
from refineloop.settings import RunSettings
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


@dataclass(frozen=True)
class ResolvedRun:
    """A new run made definite, its folder not made yet."""

    settings: RunSettings
    task: Task
    named: bool
    """Whether the user chose the folder (--output-dir), which may then exist if empty."""


def resolve_run(settings: RunSettings) -> ResolvedRun:
    """Resolve a new run's settings (in place) and task, noting whether its folder was the user's choice."""
    named = bool(settings.output_dir)
    settings, task = resolve_settings(settings)
    return ResolvedRun(settings, task, named)


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
