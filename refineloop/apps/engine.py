"""The engine: one run of the graph on its checkpoints, to its end, a pause or a failure, told through callbacks.

`execute` streams the graph on a thread. Without a `RunControl` of the caller's it installs the stop-signal
handlers (refineloop.apps.stop_signals): the first Ctrl-C asks LangGraph to drain, so the node in progress
finishes, its checkpoint is written and the run stops; a second one stops at once and the interrupted node
re-runs from its top on resume. Either way best.png, summary.txt and collage.png are written from the last
checkpoint. Budgets are the graph's own (refineloop.budgets); the engine only caps the recursion.

Whoever runs the engine hears from it through `EngineCallbacks`: lines to show, each node's update, review
questions to answer (a `--review` run pauses before each next image with an `__interrupt__` update, and goes
on with `Command(resume=answer)`), and the outcome. The terminal (refineloop.cli.terminal) is one such
listener; a batch item passes none and hears nothing.
"""

from __future__ import annotations

import errno
import sqlite3
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphDrained
from langgraph.runtime import RunControl
from langgraph.types import Command

from refineloop.apps.critic_load import load_critic
from refineloop.apps.stop_signals import ctrl_c_drains
from refineloop.backends.model_cache import ModelCache
from refineloop.errors import ModelError, RefineError, RunFolderError, SettingsError
from refineloop.files.safe_io import write_text_atomic
from refineloop.graph_build import build_graph
from refineloop.judges.audit import auditor_settings
from refineloop.outputs.artifacts import write_artifacts
from refineloop.progress_events import Progress, reporting
from refineloop.redaction import redact, redact_deep
from refineloop.run_folder.checkpoints import connect, database_error, run_saver
from refineloop.run_folder.image_files import image_problem
from refineloop.run_view import apply_view
from refineloop.settings import RunSettings
from refineloop.state import RefineState, RunInput
from refineloop.strategies import spec_for, strategy_names

#: Each image takes 4-5 super-steps; a cap well above any image limit keeps `--max-iterations 0` safe.
STEPS_PER_IMAGE = 8

EXIT_OK, EXIT_FAILED, EXIT_PAUSED, EXIT_INTERRUPTED = 0, 1, 3, 130


@dataclass
class Outcome:
    """How a run ended, for the CLI and for tests."""

    run_dir: str
    status: str
    """done, interrupted, paused (waiting for a review answer) or failed."""
    exit_code: int
    values: dict[str, Any]
    error: str = ""
    """The one-line reason of a failed run."""


class NoAnswer(Exception):
    """A reviewer got no answer (standard input ended, say): the run stays paused at the question, and
    `refineloop resume` asks it again. The exception's text, when it has one, is passed on as a note."""


class EngineCallbacks:
    """What the engine tells whoever runs it, and asks them. Every hook does nothing by default, except
    `review`, which fails the run in one line: nobody is there to answer."""

    def note(self, line: str) -> None:
        """A line for whoever watches: what was loaded, a warning, a failure, a stop signal being drained."""

    def begin(self, settings: RunSettings, started: float) -> None:
        """The graph starts streaming; `started` is when the run began (seconds since the epoch)."""

    def step(self, node: str, update: dict[str, Any]) -> None:
        """A node finished with this state update."""

    def progress(self, event: Progress) -> None:
        """Progress inside a long step (denoising steps, a judging phase's critic calls); may come from any thread."""

    def review(self, question: dict[str, Any]) -> dict[str, Any]:
        """The answer to a review question (refineloop.nodes.review); NoAnswer leaves the run paused at it."""
        raise RefineError("the run asked a review question, and nobody is here to answer it")

    def end(self, outcome: Outcome) -> None:
        """The run stopped (done, interrupted, paused or failed) and its artifacts are written."""


@contextmanager
def checkpoints(
    run_dir: str, saver: BaseCheckpointSaver[str] | None = None, url: str = "", thread_id: str = ""
) -> Iterator[BaseCheckpointSaver[str]]:
    """The run's checkpointer: the one given (in memory, say), else Postgres at `url` (holding the run's
    advisory lock, which batch runners respect too), else SQLite in the run folder."""
    if saver is not None:
        yield saver
        return
    if url:
        from refineloop.apps.postgres import PostgresStore, prepare

        prepare(url)
        store = PostgresStore(url, pool_size=2)
        try:
            with store.locks.hold(thread_id or Path(run_dir).name):
                yield store.saver
        finally:
            store.close()
        return
    conn = connect(run_dir)
    try:
        yield run_saver(conn)
    finally:
        conn.close()


def check_images(values: dict[str, Any]) -> None:
    """Refuse to continue from a best or current image that is missing or unreadable (one line)."""
    for key in ("best", "current"):
        record = values.get(key)
        if record and (problem := image_problem(record["path"])):
            raise RunFolderError(
                f"{record['path']} {problem}, and the run continues from it: restore the file, or start a new run"
            )


def load_models(
    models: ModelCache, settings: RunSettings, callbacks: EngineCallbacks, critic_note: str | None = None
) -> None:
    """Load both models up front, so a missing model fails before any image is made; say what was loaded.

    The critic comes first: an Ollama critic is loaded into the server's memory now (an empty request with
    `--critic-keep-alive`), so the image model's placement measures the GPU memory it really leaves free, and
    the placement line says how much the critic holds (from /api/ps). `critic_note` is that line's part when
    the critic was loaded already (by the CLI's head start, before the image model).
    """
    models.chat_model(settings)
    if critic_note is None:
        critic_note = load_critic(settings)
    image_model = models.image_model(settings)
    if settings.init_image and not image_model.traits.img2img:
        raise SettingsError(f"--init-image: {image_model.name} cannot start from a picture; use an img2img model")
    if spec_for(settings.strategy).from_image and not image_model.traits.img2img:
        raise SettingsError(f"{image_model.name} cannot start from an image: use --strategy climbing with it")
    check_scheduler(image_model, settings.scheduler)
    if settings.audit_model:
        models.chat_model(auditor_settings(settings))  # the auditor too: a missing one fails before any image
    placement = getattr(image_model, "placement", "")
    callbacks.note(
        f"image model: {image_model.name}"
        + (f" on {placement}" if placement else "")
        + f"   critic: {settings.eval_model}{critic_note}"
        + (f"   auditor: {settings.audit_model}" if settings.audit_model else "")
    )
    if settings.lora:
        callbacks.note(f"LoRAs: {', '.join(settings.lora)}")
    if settings.scheduler:
        callbacks.note(f"scheduler: {settings.scheduler}")
    if settings.negative_prompt and not image_model.traits.negative_prompt:
        callbacks.note(f"warning: {image_model.name} takes no negative prompt: --negative-prompt does nothing with it")
    if settings.compile:
        callbacks.note("--compile: the denoiser compiles during the first image; later images run the compiled code")
    from refineloop.run_folder.provenance import from_image_notes

    for note in from_image_notes(settings, image_model.name):
        callbacks.note(note)
    if spec_for(settings.strategy).from_image and not image_model.traits.strength:
        callbacks.note(
            f"warning: {image_model.name} has no strength knob: the strength schedule does nothing, "
            "but every round still starts from the best image"
        )
    if settings.review and not spec_for(settings.strategy).reviewable:
        callbacks.note(
            f"warning: --review pauses only in {', '.join(strategy_names('reviewable'))}; {settings.strategy} runs on"
        )
    from refineloop.backends.checks import all_warnings

    # Options the strategy ignores are said, not dropped in silence (the checks that refuse are in validate).
    for warning in all_warnings(settings):
        callbacks.note(warning)


def check_scheduler(image_model: Any, name: str) -> None:
    """Refuse, in one line, a `--scheduler` the loaded image model cannot take (or one that has no sampler)."""
    if not name:
        return
    check = getattr(image_model, "check_scheduler", None)
    if not callable(check):
        raise SettingsError(f"--scheduler {name}: {image_model.name} has no sampler to choose: drop --scheduler")
    check(name)


def execute(
    settings: RunSettings,
    state: RunInput | None,
    thread_id: str,
    models: ModelCache,
    checkpointer: BaseCheckpointSaver[str],
    *,
    callbacks: EngineCallbacks | None = None,
    control: RunControl | None = None,
    view: dict[str, Any] | None = None,
) -> Outcome:
    """Stream the graph on `thread_id` from `state` (None: from its last checkpoint) to an end, a pause or a
    failure; write the artifacts of an unfinished run; tell `callbacks` along the way.

    Without `control` the first stop signal drains the run; a caller in any other thread (where no signal
    handler can be installed) passes its own. `view` (from `refineloop.run_view.make_view`) is how this
    process sees a resumed run: its folder and overrides.
    """
    told = callbacks or EngineCallbacks()
    run_dir = settings.output_dir
    # The input is the first checkpoint: a secret in a goal or a setting stops here (refineloop.redaction).
    state = cast("RunInput | None", redact_deep(state))
    graph = build_graph(settings.strategy, checkpointer)
    config: RunnableConfig = {
        "configurable": {"thread_id": thread_id, "models": models, "run_view": view or {}},
        "recursion_limit": settings.image_cap() * STEPS_PER_IMAGE + 20,
    }
    given: dict[str, Any] = dict(state or {})
    told.begin(settings, float(given.get("started_at") or time.time()))
    status, code, error = "done", EXIT_OK, ""
    # Only a listener that shows progress gets the per-step events (the backends skip their hooks otherwise).
    listener = told.progress if type(told).progress is not EngineCallbacks.progress else None
    try:
        with reporting(listener):
            if control is None:
                control = RunControl()
                with ctrl_c_drains(control, told.note):
                    _stream(graph, state, config, control, told)
            else:
                _stream(graph, state, config, control, told)
    except (GraphDrained, KeyboardInterrupt):
        status, code = "interrupted", EXIT_INTERRUPTED
    except NoAnswer as exc:
        status, code = "paused", EXIT_PAUSED
        if str(exc):
            told.note(str(exc))
    except RefineError as exc:
        status, code, error = "failed", EXIT_FAILED, str(exc)
    except Exception as exc:  # a model or library failure mid-run: keep the run, explain in one line
        status, code = "failed", EXIT_FAILED
        error = explain(exc, settings) + _logged(run_dir)
    if error:
        told.note(f"error: {error}")
    values = apply_view(_last_state(graph, config), view)
    if status != "done" and values.get("run_dir"):
        try:
            write_artifacts(cast(RefineState, values))  # a checkpointed state with a run folder is a whole one
        except (OSError, RefineError) as exc:
            # The checkpoints hold the run; the artifacts are made again at its next stop.
            told.note(f"warning: could not write the run's artifacts ({explain(exc, settings)})")
    outcome = Outcome(run_dir, status, code, values, error)
    told.end(outcome)
    return outcome


def _last_state(graph: Any, config: RunnableConfig) -> dict[str, Any]:
    """The last checkpointed state; {} when the checkpoints cannot be read (the failure was already reported)."""
    try:
        return dict(graph.get_state(config).values)
    except (sqlite3.Error, OSError):
        return {}


def _stream(
    graph: Any,
    state: RunInput | None,
    config: RunnableConfig,
    control: RunControl,
    callbacks: EngineCallbacks,
) -> None:
    """Run to the end; each review interrupt is answered by `callbacks.review` and the graph resumed with it."""
    given: Any = state
    while True:
        question = None
        # "updates" keeps nodes on the main thread, so a second Ctrl-C lands at once.
        for chunk in graph.stream(given, config, stream_mode="updates", durability="sync", control=control):
            for node, update in chunk.items():
                if node == "__interrupt__":
                    # The graph has checkpointed the pause and the stream ends here.
                    question = update[0].value
                elif isinstance(update, dict):
                    callbacks.step(node, update)
        if question is None:
            return
        given = Command(resume=redact_deep(callbacks.review(question)))


def _logged(run_dir: str) -> str:
    """Write the traceback being handled to the run's error.log; the note that says where (or why not)."""
    log = Path(run_dir) / "error.log"
    try:
        write_text_atomic(log, redact(traceback.format_exc()))
    except (OSError, RefineError) as exc:
        return f" (no error.log: {exc.strerror if isinstance(exc, OSError) else exc})"
    return f" (details in {log})"


#: Write failures a person fixes by making room, not by reading a traceback.
_NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up", errno.EFBIG: "a file limit"}


def explain_model_failure(exc: BaseException, settings: RunSettings) -> ModelError | None:
    """The one line for a failure talking to the run's critic server (unreachable, refused, an answer its client
    could not read), whatever the call that met it; None for anything else."""
    from refineloop.backends.chat.ollama import broken_ollama_reply, explain_connection_error
    from refineloop.backends.chat.openai_compatible import explain_for_settings

    return (
        explain_for_settings(exc, settings)
        or explain_connection_error(exc, settings.ollama_url)
        or broken_ollama_reply(exc, settings)
    )


def explain(exc: BaseException, settings: RunSettings) -> str:
    """One line for an unexpected failure, naming the model when it came from one."""
    if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
        return f"{_NO_ROOM[exc.errno]} ({exc.strerror}): free some space, then resume the run"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and exc.filename:
        return f"cannot write {exc.filename} ({exc.strerror}): make the run folder writable, then resume the run"
    if isinstance(exc, sqlite3.DatabaseError):
        return str(database_error(settings.output_dir, exc))
    mapped = explain_model_failure(exc, settings)
    if mapped is not None:
        return redact(str(mapped))
    first = redact(str(exc)).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
