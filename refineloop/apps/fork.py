"""`refineloop fork RUN_DIR --from-iteration K`: a new run that shares the first K images of an old one.

Which checkpoint: the run's SQLite history holds a checkpoint after every super-step. The accept node is the
only writer of `history` (one entry per round), so for each history length the oldest checkpoint with it is the
one written by the step that accepted or rejected that round's image; of those, the fork takes the one whose
`iteration` (images made so far) is K. There best, current, misses, failed ideas and the next idea are decided,
and nothing of image K+1 exists yet (propose, summarize or a review come later). With best-of-N rounds
(`--candidates N`) K must end a round, since the round's images were judged together.

How it continues: a new folder (`<RUN_DIR>-fork-K` or `--output-dir`) receives copies of images 1..K and their
sidecars, with every path in them and in the state rewritten to the new folder. A new checkpoints.sqlite gets a
new thread whose first checkpoint is that state with the merged settings, written with `graph.update_state(...,
as_node=<the new strategy's accept node>)`: the new graph then takes its own route after acceptance (stop,
summarize, propose, or the agent's router), so a changed strategy applies from image K+1 on. The run then goes
on exactly like `refineloop run`, with the same progress, Ctrl-C, review and resume.

The original folder is only read: its checkpoint database (and write-ahead log) is copied to a temporary folder
under a shared lock before SQLite opens it, because opening the database in place would add -wal/-shm files and
could checkpoint the log into it. A run in progress holds its folder's lock, so forking it is refused until it
stops.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.apps.engine import EngineCallbacks, Outcome, checkpoints, execute, load_models
from refineloop.apps.library_logs import library_logs_in_trace
from refineloop.apps.reading import reading_saver
from refineloop.apps.stop_signals import stop_ends_loading
from refineloop.backends.checks import validated
from refineloop.backends.model_cache import MODELS, ModelCache
from refineloop.errors import RunFolderError, SettingsError
from refineloop.files.trace import append_trace
from refineloop.graph_build import build_graph
from refineloop.run_folder.checkpoints import CHECKPOINTS, database_error, run_saver
from refineloop.run_folder.folder import META, kept_on_exit, new_run_folder, read_meta, write_meta
from refineloop.run_folder.image_files import image_problem, listed_images, read_record, sidecar_path
from refineloop.run_folder.lock import LOCK
from refineloop.run_folder.score_index import save_sidecar
from refineloop.run_view import rewrite_paths
from refineloop.settings import RunSettings
from refineloop.strategies import spec_for
from refineloop.tasks import Task, resolve_task


def fork_run(
    run_dir: str,
    from_iteration: int,
    overrides: dict[str, Any] | None = None,
    *,
    models: ModelCache = MODELS,
    callbacks: EngineCallbacks | None = None,
    checkpointer_url: str = "",
) -> Outcome:
    """Fork `run_dir` after image `from_iteration` into a new run folder and run it to its end.

    `overrides` are RunSettings fields to change (only the flags given); the rest come from the original run.
    Settings are checked first; the new folder is made and locked before the models load, and removed again
    when anything fails before its first checkpoint. `callbacks` hear what the run does (the terminal's, from
    the CLI).
    """
    told = callbacks or EngineCallbacks()
    source = str(Path(run_dir).expanduser().resolve())
    meta = read_meta(source)
    values = state_after_image(source, meta, from_iteration, checkpointer_url or meta.get("checkpointer", ""))
    overrides = dict(overrides or {})
    target = str(Path(overrides.pop("output_dir", "") or f"{source}-fork-{from_iteration}").expanduser().resolve())
    if Path(target).exists():
        raise RunFolderError(f"{target} already exists: pick another --output-dir, or remove it")
    settings = validated(RunSettings.from_dict({**values["settings"], **overrides, "output_dir": target}))
    task = values["task"]
    if "task" in overrides or "goal" in overrides:
        task = resolve_task(settings.task, settings.goal).to_dict()
    if "negative_prompt" in overrides:
        task = Task.from_dict(task).with_negative_prompt(settings.negative_prompt).to_dict()

    # The state names the folder the run was started in, which differs from `source` once it was moved.
    recorded = values.get("run_dir") or source
    state = rewrite_paths(values, recorded, target)
    state.update(settings=settings.to_dict(), task=task, run_dir=target, status="running", stop_reason="")
    state["started_at"] = time.time()
    thread_id = Path(target).name
    # Made and locked before the models load, so a second fork to the same folder is refused at once.
    with new_run_folder(target, named=True) as claim, library_logs_in_trace(target):
        with stop_ends_loading("nothing was kept", claim.discard):
            load_models(models, settings, told)
        copy_images(source, target, from_iteration, recorded, claim.made.add)
        with checkpoints(target) as checkpointer:
            write_meta(target, thread_id, settings.strategy, loras=settings.lora)
            _note_origin(target, source, meta, from_iteration)
            graph = build_graph(settings.strategy, checkpointer)
            config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
            # Only the new graph's own keys: an agent run's router bookkeeping means nothing to climbing, say.
            channels = set(graph.builder.channels)
            seeded = {key: value for key, value in state.items() if key in channels}
            if "review_stop" in channels:
                seeded["review_stop"] = ""
            graph.update_state(config, seeded, as_node=spec_for(settings.strategy).accept_node)
            claim.keep()
            with kept_on_exit(target):
                append_trace(target, {"kind": "fork", "source": source, "iteration": from_iteration})
                told.note(f"forked {source} after image {from_iteration}")
                told.note(f"run folder: {target}")
                told.note(f"strategy: {settings.strategy}   seed: {settings.seed}   goal: {task.get('goal', '')}")
                return execute(settings, None, thread_id, models, checkpointer, callbacks=told)


def state_after_image(run_dir: str, meta: dict[str, Any], iteration: int, url: str = "") -> dict[str, Any]:
    """The checkpointed state right after the round that ended with image `iteration` was accepted (or
    rejected); SettingsError when no round ended there. Checkpoints in Postgres (`url`) are read in place."""
    with _history_saver(run_dir, url) as saver:
        graph = build_graph(meta["strategy"], saver)
        config: RunnableConfig = {"configurable": {"thread_id": meta["thread_id"]}}
        # Only acceptance appends to history, once per round; the history is newest first, so for each
        # length the value kept last is the oldest checkpoint with it: the one acceptance wrote.
        rounds: dict[int, dict[str, Any]] = {}
        try:
            for snapshot in graph.get_state_history(config):
                if length := len(snapshot.values.get("history") or []):
                    rounds[length] = snapshot.values
        except sqlite3.DatabaseError as exc:
            raise database_error(run_dir, exc) from None
    ends = sorted(values["iteration"] for values in rounds.values())
    for values in rounds.values():
        if values["iteration"] == iteration:
            return dict(values)
    if not ends:
        raise SettingsError(f"--from-iteration {iteration} is out of range: {run_dir} has no judged image yet")
    if ends == list(range(1, len(ends) + 1)):
        span = f"images 1 to {ends[-1]}"
    else:  # best-of-N: rounds end every N images
        span = f"rounds ending at images {', '.join(map(str, ends))}"
    raise SettingsError(f"--from-iteration {iteration} is out of range: {run_dir} has {span}")


@contextmanager
def _history_saver(run_dir: str, url: str) -> Iterator[Any]:
    """A checkpointer to read the run's history from: Postgres as it is, or a private copy of the SQLite."""
    if url:
        with reading_saver(run_dir, url) as saver:
            yield saver
        return
    with _database_copy(run_dir) as path:
        conn = sqlite3.connect(path, check_same_thread=False)
        try:
            yield run_saver(conn)
        finally:
            conn.close()


@contextmanager
def _database_copy(run_dir: str) -> Iterator[str]:
    """A private copy of the run's checkpoint database, taken while no process writes to it."""
    with tempfile.TemporaryDirectory(prefix="refineloop-fork-") as tmp, _shared_lock(run_dir):
        for suffix in ("", "-wal"):
            name = Path(run_dir) / f"{CHECKPOINTS}{suffix}"
            if name.exists():
                shutil.copyfile(name, Path(tmp) / name.name)
        yield str(Path(tmp) / CHECKPOINTS)


@contextmanager
def _shared_lock(run_dir: str) -> Iterator[None]:
    """Keep a runner off the folder while it is read; refuse when one holds it. The lock file is only opened
    for reading, so the original folder is not changed (a folder without one has never had a runner)."""
    path = Path(run_dir) / LOCK
    if not path.exists():
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            raise RunFolderError(
                f"{run_dir} is in use by refineloop (pid {holder}): fork it once that run stops"
            ) from None
        yield
    finally:
        os.close(fd)


def copy_images(
    source: str, target: str, last: int, recorded: str = "", making: Callable[[str], None] | None = None
) -> None:
    """Copy images 1..`last` byte for byte, and their sidecars with paths pointed at the new folder (paths
    under `recorded`, where the run was made, as well as under `source`, where it is now). `making` hears each
    file's name before it is written (a failed start takes back what it made). Every image is checked first,
    as `resume` checks the images it continues from: a symbolic link or an image that does not open is
    refused in one line, before anything is copied. A sidecar that cannot be read is left behind (the
    fork's state holds its record): copied unread, it would name the original folder."""
    for iteration, image in listed_images(source):
        if iteration <= last:
            if image.is_symlink():
                raise RunFolderError(f"{image} is a symbolic link: refineloop does not fork through links; restore it")
            if problem := image_problem(str(image)):
                raise RunFolderError(f"{image} {problem}: restore it, or fork from an earlier image")
    for iteration, image in listed_images(source):
        if iteration > last:
            continue
        if making is not None:
            making(image.name)
            making(sidecar_path(target, iteration).name)
        shutil.copyfile(image, Path(target) / image.name)
        sidecar = sidecar_path(source, iteration)
        if sidecar.is_file():
            record = read_record(sidecar)
            if record is None:
                continue
            moved = rewrite_paths(record, recorded, target) if recorded else record
            save_sidecar(rewrite_paths(moved, source, target), str(target), iteration)


def _note_origin(target: str, source: str, meta: dict[str, Any], iteration: int) -> None:
    """Record in the fork's run.json where it came from."""
    path = Path(target) / META
    data = json.loads(path.read_text("utf-8"))
    data["forked_from"] = {"run_dir": source, "thread_id": meta["thread_id"], "iteration": iteration}
    path.write_text(json.dumps(data, indent=1), "utf-8")
