"""`refineloop run`, `demo` and `resume` on a terminal: the run folder, SQLite (or Postgres) checkpoints, and the
engine (refineloop.apps.engine) told by a `Terminal` what to print and whom to ask.

A new run's folder is made and locked before the slow model loads, so no other run can take it, and removed
again when nothing was checkpointed (the CLI's `run` opens it itself, to load the image model and begin the first
image before LangGraph is imported: refineloop.apps.head_start); a stop signal while the models load ends the
process in one line. A resumed run continues from its last checkpoint in the folder given;
a finished one is only read.
"""

from __future__ import annotations

import sqlite3
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TextIO

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from refineloop.apps.engine import EXIT_OK, Outcome, check_images, checkpoints, execute, load_models
from refineloop.apps.library_logs import library_logs_in_trace
from refineloop.apps.new_run import OpenedRun, opened_run
from refineloop.apps.reading import read_values
from refineloop.apps.stop_signals import stop_ends_loading
from refineloop.backends.model_cache import MODELS, ModelCache
from refineloop.cli.terminal import Terminal
from refineloop.errors import RunFolderError
from refineloop.graph_build import build_graph
from refineloop.nodes.setup import initial_state
from refineloop.outputs.report import REPORT_NAME
from refineloop.run_folder.checkpoints import database_error
from refineloop.run_folder.folder import kept_on_exit, read_meta, write_meta
from refineloop.run_folder.lock import locked
from refineloop.run_start import resolve_run
from refineloop.run_view import apply_view, make_view
from refineloop.settings import RunSettings


def start_run(
    settings: RunSettings,
    *,
    models: ModelCache = MODELS,
    out: TextIO = sys.stdout,
    saver: BaseCheckpointSaver[str] | None = None,
    checkpointer_url: str = "",
    thread_id: str | None = None,
    inp: TextIO | None = None,
    opened: OpenedRun | None = None,
) -> Outcome:
    """Start a new run. Settings and task are checked first; then the run folder is made and locked at once,
    before the slow model loads, so no other run can take it; a failure before the first checkpoint removes what
    this process made there, and anything that stops it after that keeps the run (`RunKept` says so).

    `saver` replaces the run folder's SQLite checkpoints (in memory, say), `checkpointer_url` keeps them in
    Postgres (recorded, without its password, so `resume_run` finds them again), and `thread_id` replaces the
    default thread (the folder's name). `inp` is where review answers are read (standard input by default).
    `opened` is the run as the CLI resolved it and the folder it opened (refineloop.apps.new_run), its first image
    perhaps begun already (refineloop.apps.head_start).
    """
    terminal = Terminal(out, inp)
    with nullcontext(opened) if opened else opened_run(resolve_run(settings)) as opening:
        settings, task, claim = opening.run.settings, opening.run.task, opening.claim
        run_dir = claim.path
        with stop_ends_loading("nothing was kept", opening.take_back):
            load_models(models, settings, terminal, opening.critic_note)
        state = initial_state(settings, task)
        thread_id = thread_id or Path(run_dir).name
        with checkpoints(run_dir, saver, checkpointer_url, thread_id) as checkpointer:
            write_meta(run_dir, thread_id, settings.strategy, checkpointer_url, loras=settings.lora)
            terminal.note(f"run folder: {run_dir}")
            terminal.note(f"strategy: {settings.strategy}   seed: {settings.seed}   goal: {task.goal}")
            terminal.note(f"live report: {Path(run_dir) / REPORT_NAME} (updated as the run goes)")
            if saver is not None or checkpointer_url:
                claim.keep()  # checkpoints outside the folder cannot be asked: it is the run's from here on
            outcome = execute(settings, state, thread_id, models, checkpointer, callbacks=terminal)
            if outcome.values.get("settings"):  # a checkpoint a resume can continue from
                claim.keep()
            elif claim.discard():
                terminal.note("nothing was checkpointed, so the run folder is removed: run the same command again")
            return outcome


def resume_run(
    run_dir: str,
    *,
    models: ModelCache = MODELS,
    out: TextIO = sys.stdout,
    saver: BaseCheckpointSaver[str] | None = None,
    checkpointer_url: str = "",
    overrides: dict[str, Any] | None = None,
    inp: TextIO | None = None,
) -> Outcome:
    """Continue a run from its last checkpoint; a run paused at a review question asks it again.

    The folder given is the truth: a copied or moved folder resumes into itself (`refineloop.run_view`).
    Checkpoints come from `saver`, else the Postgres at `checkpointer_url` or the one run.json records, else
    the folder's SQLite. `overrides` may change the settings in `RESUME_OVERRIDES` (how models are reached,
    never what they make). A finished run is only read: nothing in its folder changes.
    """
    terminal = Terminal(out, inp)
    run_dir = str(Path(run_dir).expanduser().resolve())
    meta = read_meta(run_dir)
    url = checkpointer_url or meta.get("checkpointer", "")
    if saver is None:
        # Read without the lock or any write first: a finished run (read-only, say) is left exactly as it is.
        earlier = read_values(run_dir, meta["thread_id"], url)
        if earlier.get("status") == "done":
            return _already_finished(run_dir, earlier, terminal)
    with (
        locked(run_dir),
        library_logs_in_trace(run_dir),
        checkpoints(run_dir, saver, url, meta["thread_id"]) as checkpointer,
    ):
        config: RunnableConfig = {"configurable": {"thread_id": meta["thread_id"]}}
        try:
            values = build_graph(meta["strategy"], checkpointer).get_state(config).values
        except sqlite3.DatabaseError as exc:
            raise database_error(run_dir, exc) from None
        if not values.get("settings"):
            raise RunFolderError(f"{run_dir} has no checkpoint yet: start a new run instead")
        if values.get("status") == "done":
            return _already_finished(run_dir, values, terminal)
        view = make_view(values, run_dir, overrides)
        check_images(apply_view(values, view))
        settings = RunSettings.from_state({**values["settings"], **(overrides or {}), "output_dir": run_dir})
        with stop_ends_loading("the run folder is as it was"):
            load_models(models, settings, terminal)
        with kept_on_exit(run_dir):
            terminal.note(f"resuming {run_dir} after image {values.get('iteration', 0)}")
            terminal.note(f"live report: {Path(run_dir) / REPORT_NAME} (updated as the run goes)")
            return execute(settings, None, meta["thread_id"], models, checkpointer, callbacks=terminal, view=view)


def _already_finished(run_dir: str, values: dict[str, Any], terminal: Terminal) -> Outcome:
    terminal.note(f"{run_dir} already finished ({values.get('stop_reason')}); nothing to do.")
    return Outcome(run_dir, "done", EXIT_OK, values)
