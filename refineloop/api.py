"""The Python API: `refineloop.run`, `refineloop.resume` and `refineloop.fork`, each returning a `RunResult`.

They do what the commands of the same names do, with the same checks, folder, checkpoints and artifacts; the
knobs are RunSettings' fields by name (`max_iterations=4`, `image_model="hf:..."`). Progress lines go to
`progress` (a text stream) when one is given, and nowhere otherwise. A setting that cannot work raises
`refineloop.errors.SettingsError` before any folder exists; a run that fails later comes back with status
"failed" and its one-line reason, its folder kept for `resume`.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from refineloop.errors import SettingsError
from refineloop.settings import RunSettings

if TYPE_CHECKING:
    from refineloop.apps.engine import Outcome
    from refineloop.backends.model_cache import ModelCache


@dataclass(frozen=True)
class RunResult:
    """How a run ended, and where its images are."""

    status: str
    """done, interrupted, paused (waiting for a review answer) or failed."""
    folder: Path
    """The run folder: every image, best.png, summary.txt, report.html, checkpoints."""
    best_image: Path | None
    """best.png, or None when the run stopped before one was crowned."""
    best_score: float | None
    """The crowned image's score on 1-10, or None."""
    scores: list[float | None]
    """Each image's score, in the order they were made (None where the critic's reply could not be read)."""
    stop_reason: str
    """Why the run stopped, in words (`reached --max-iterations 4`, `the critic said DONE`)."""
    error: str = ""
    """The one-line reason of a failed run."""

    @property
    def ok(self) -> bool:
        """Whether the run finished (as opposed to stopping early, pausing or failing)."""
        return self.status == "done"


def _settings(knobs: dict[str, Any]) -> RunSettings:
    names = {field.name for field in dataclasses.fields(RunSettings)}
    unknown = sorted(set(knobs) - names)
    if unknown:
        raise SettingsError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: see docs/settings.md for "
            "the names (the flags' names with _ for -)"
        )
    return RunSettings(**knobs)


def _result(outcome: Outcome) -> RunResult:
    values = outcome.values
    folder = Path(outcome.run_dir)
    best = values.get("best") or {}
    best_png = folder / "best.png"
    return RunResult(
        status=outcome.status,
        folder=folder,
        best_image=best_png if best_png.is_file() else None,
        best_score=best.get("score"),
        scores=[entry.get("score") for entry in values.get("history") or []],
        stop_reason=str(values.get("stop_reason", "")),
        error=outcome.error,
    )


def _stream(progress: TextIO | None) -> TextIO:
    return progress if progress is not None else io.StringIO()


def run(goal: str = "", *, progress: TextIO | None = None, models: ModelCache | None = None, **knobs: Any) -> RunResult:
    """Start a run towards `goal` (or the task `task=...` names) with any RunSettings knobs, and run it to its end.

    `models` is a `refineloop.backends.model_cache.ModelCache` holding models built in Python (registered under
    a name you then pass as `image_model` or `eval_model`); by default the process's own cache loads them.
    """
    from refineloop.backends.checks import validated
    from refineloop.backends.model_cache import MODELS
    from refineloop.cli.run_commands import start_run

    settings = validated(_settings({"goal": goal, **knobs} if goal else knobs))
    return _result(start_run(settings, models=models or MODELS, out=_stream(progress)))


def resume(
    folder: str | Path, *, progress: TextIO | None = None, models: ModelCache | None = None, **overrides: Any
) -> RunResult:
    """Continue the run in `folder` from its last checkpoint; a finished run is only read. `overrides` may change
    how the models are reached (`ollama_url`, `device`, ...), never what they make."""
    from refineloop.backends.model_cache import MODELS
    from refineloop.cli.run_commands import resume_run
    from refineloop.settings import RESUME_OVERRIDES

    refused = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if refused:
        raise SettingsError(
            f"resume cannot change {', '.join(refused)}: it may change only {', '.join(RESUME_OVERRIDES)} "
            "(fork the run to change what it makes)"
        )
    outcome = resume_run(str(folder), models=models or MODELS, out=_stream(progress), overrides=overrides or None)
    return _result(outcome)


def fork(
    folder: str | Path,
    from_iteration: int,
    *,
    progress: TextIO | None = None,
    models: ModelCache | None = None,
    **knobs: Any,
) -> RunResult:
    """Start a new run from image `from_iteration` of the run in `folder`, with `knobs` replacing its settings
    (its folder is `<folder>-fork-<K>` unless `output_dir` is given); the old run is not changed."""
    from refineloop.apps.fork import fork_run
    from refineloop.backends.model_cache import MODELS
    from refineloop.cli.terminal import Terminal

    _settings(knobs)  # the names are checked here; the values once they meet the old run's settings
    terminal = Terminal(_stream(progress))
    return _result(fork_run(str(folder), from_iteration, knobs, models=models or MODELS, callbacks=terminal))
