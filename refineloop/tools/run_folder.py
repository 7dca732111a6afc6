"""A run folder on disk: its lock, its metadata and its SQLite checkpoints."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refineloop.errors import RunFolderError

if TYPE_CHECKING:
    from langgraph.checkpoint.base import CheckpointTuple

CHECKPOINTS = "checkpoints.sqlite"
META = "run.json"
LOCK = ".lock"


def is_run_folder(path: Path) -> bool:
    """Whether `path` holds a refineloop run."""
    return (path / META).is_file() and (path / CHECKPOINTS).is_file()


@contextmanager
def locked(run_dir: str) -> Iterator[None]:
    """Hold the run folder for this process; a second process on it is refused at once.

    flock is released by the kernel when the holder dies, so a crashed run never leaves a stale lock.
    """
    path = Path(run_dir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(path).read_text().strip() or "another process"
            raise RunFolderError(
                f"{run_dir} is in use by refineloop (pid {holder}): wait for it to finish, or use another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def is_locked(run_dir: str) -> bool:
    """Whether a live process holds the folder (used by `refineloop runs`)."""
    path = Path(run_dir) / LOCK
    if not path.exists():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def write_meta(run_dir: str, thread_id: str, strategy: str) -> None:
    """Record what a resume needs to find the run's thread."""
    meta = {
        "thread_id": thread_id,
        "strategy": strategy,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv,
    }
    (Path(run_dir) / META).write_text(json.dumps(meta, indent=1), "utf-8")


def read_meta(run_dir: str) -> dict[str, Any]:
    """The run's metadata; RunFolderError when this is not a run folder."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunFolderError(f"{run_dir} does not exist: pass a folder that `refineloop runs` lists")
    if not is_run_folder(path):
        raise RunFolderError(f"{run_dir} is not a refineloop run (no {META} and {CHECKPOINTS}): check the path")
    try:
        return json.loads((path / META).read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        raise RunFolderError(f"{path / META} is damaged: restore it, or start a new run") from None


def connect(run_dir: str) -> sqlite3.Connection:
    """SQLite for checkpoints: WAL with synchronous=NORMAL survives a killed process at about half the cost
    of the default journal (a power cut may lose the last commit)."""
    conn = sqlite3.connect(Path(run_dir) / CHECKPOINTS, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def read_checkpoint(run_dir: str, thread_id: str) -> CheckpointTuple | None:
    """The latest checkpoint of a run, without compiling a graph."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = connect(run_dir)
    try:
        return SqliteSaver(conn).get_tuple({"configurable": {"thread_id": thread_id}})
    finally:
        conn.close()


def read_values(run_dir: str, thread_id: str) -> dict[str, Any]:
    """The latest checkpointed state of a run."""
    found = read_checkpoint(run_dir, thread_id)
    return dict(found.checkpoint["channel_values"]) if found else {}
