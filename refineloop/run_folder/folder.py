"""A run folder on disk: its lock, its metadata and its SQLite checkpoints."""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from refineloop.errors import RunFolderError
from refineloop.run_folder.safe_io import open_no_follow, refuse_link, refuse_links_in, write_text_atomic
from refineloop.strategies import STRATEGY_SPECS

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
    from langgraph.checkpoint.sqlite import SqliteSaver

CHECKPOINTS = "checkpoints.sqlite"
META = "run.json"
LOCK = ".lock"


def is_run_folder(path: Path) -> bool:
    """Whether `path` holds a refineloop run: run.json, and its checkpoints here or in the Postgres it names."""
    if not (path / META).is_file():
        return False
    if (path / CHECKPOINTS).is_file():
        return True
    try:
        return bool(json.loads((path / META).read_text("utf-8")).get("checkpointer"))
    except (OSError, ValueError, AttributeError):
        return True  # a damaged run.json still marks a run: read_meta reports the damage


@contextmanager
def locked(run_dir: str) -> Iterator[None]:
    """Hold the run folder for this process; a second process on it is refused at once.

    flock is released by the kernel when the holder dies, so a crashed run never leaves a stale lock. A
    symbolic link in the folder (the lock file, an image, the trace...) is refused here, before anything
    runs: every later write would refuse it anyway, but mid-run.
    """
    path = Path(run_dir) / LOCK
    try:
        fd = open_no_follow(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise RunFolderError(
            f"{run_dir} is read-only ({exc.strerror}): make it writable (chmod -R u+w) to go on with it"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Read the holder's pid through our own descriptor: reopening the name could meet a swapped file.
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
            raise RunFolderError(
                f"{run_dir} is in use by refineloop (pid {holder}): wait for it to finish, or use another folder"
            ) from None
        refuse_links_in(run_dir)
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


def write_meta(
    run_dir: str, thread_id: str, strategy: str, checkpointer: str = "", loras: list[str] | None = None
) -> None:
    """Record what a resume needs to find the run's thread: its id, its graph, and where its checkpoints live
    when not in the folder (a Postgres URL, recorded without its password); and the LoRAs the image model
    carries, which change every image it makes."""
    meta = {
        "thread_id": thread_id,
        "strategy": strategy,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": [without_password(arg) for arg in sys.argv],
    }
    if checkpointer:
        meta["checkpointer"] = without_password(checkpointer)
    if loras:
        meta["loras"] = list(loras)
    write_text_atomic(Path(run_dir) / META, json.dumps(meta, indent=1))


def without_password(text: str) -> str:
    """A database URL with its password dropped (from the user part and from a `password=` parameter); any
    other text as it is. libpq finds the password again in PGPASSWORD or ~/.pgpass."""
    if not text.startswith(("postgres://", "postgresql://")):
        return text
    parts = urlsplit(text)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = "&".join(p for p in parts.query.split("&") if p and not p.lower().startswith("password="))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def read_meta(run_dir: str) -> dict[str, Any]:
    """The run's metadata, checked; RunFolderError (one line) when this is not a run folder or run.json is
    damaged."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunFolderError(f"{run_dir} does not exist: pass a folder that `refineloop runs` lists")
    if not is_run_folder(path):
        raise RunFolderError(f"{run_dir} is not a refineloop run (no {META} and {CHECKPOINTS}): check the path")
    damaged = f"{path / META} is damaged"
    try:
        meta = json.loads((path / META).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise RunFolderError(f"{damaged}: restore it, or start a new run") from None
    if not isinstance(meta, dict):
        raise RunFolderError(f"{damaged} (not a JSON object): restore it, or start a new run")
    for key in ("thread_id", "strategy"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise RunFolderError(f"{damaged} (no '{key}'): restore it, or start a new run")
    if meta["strategy"] not in STRATEGY_SPECS:
        raise RunFolderError(f"{damaged} (unknown strategy '{meta['strategy']}'): restore it, or start a new run")
    if not isinstance(meta.get("checkpointer", ""), str):
        raise RunFolderError(f"{damaged} ('checkpointer' is not a URL): restore it, or start a new run")
    return meta


def connect(run_dir: str) -> sqlite3.Connection:
    """SQLite for checkpoints: WAL with synchronous=NORMAL survives a killed process at about half the cost
    of the default journal (a power cut may lose the last commit). SQLite follows links, so a database (or
    its journal files) that is a link is refused first."""
    path = Path(run_dir) / CHECKPOINTS
    for name in (path, *(path.with_name(path.name + tail) for tail in ("-wal", "-shm", "-journal"))):
        refuse_link(name)
    try:
        conn = sqlite3.connect(path, check_same_thread=False)
        # Checkpoints are rows of about 2 KB: 4 KB pages hold one each, half empty; 16 KB pages hold seven.
        # (Takes effect when the database is made; an existing one keeps its size.)
        conn.execute("PRAGMA page_size=16384")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        raise database_error(run_dir, exc) from None
    return conn


def run_saver(conn: sqlite3.Connection) -> BaseCheckpointSaver[str]:
    """LangGraph's SqliteSaver with short channel versions (see `_run_saver_class`)."""
    return _run_saver_class()(conn)


@functools.cache
def _run_saver_class() -> type[SqliteSaver]:
    """SqliteSaver stores the whole checkpoint, version maps included, at every super-step, and its versions
    carry a 16-digit random suffix each: about half of a small run's checkpoint. A run's thread is one
    timeline, so a zero-padded counter is enough; it also sorts after the long versions of folders written
    before (those start with many more zeros), so old runs resume as they are. Built on first use, so that
    importing this module does not import LangGraph."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    class RunSaver(SqliteSaver):
        def get_next_version(self, current: str | int | None, channel: None = None) -> str:
            number = 0 if current is None else int(str(current).split(".", 1)[0])
            return f"{number + 1:08d}"

    return RunSaver


def database_error(run_dir: str, exc: BaseException) -> RunFolderError:
    """One line for a checkpoint database that cannot be used: read-only, or damaged."""
    path = Path(run_dir) / CHECKPOINTS
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "readonly" in text or "read-only" in text or not os.access(run_dir, os.W_OK):
        return RunFolderError(f"{run_dir} is read-only ({text}): make it writable (chmod -R u+w) to go on with it")
    if "disk is full" in text or "disk I/O error" in text:
        # SQLite says I/O error when a write is refused for want of room (ENOSPC, EDQUOT, EFBIG) as well.
        return RunFolderError(f"cannot write {path} ({text}): free some space on its disk, then resume the run")
    return RunFolderError(
        f"{path} is damaged ({text}): restore it from a copy, or start a new run (images and sidecars are kept)"
    )


def connect_readonly(run_dir: str) -> sqlite3.Connection:
    """The checkpoint database opened for reading only, so looking at a run changes nothing in its folder.

    A database closed cleanly has no write-ahead log: opened immutable, SQLite creates no -wal or -shm file.
    One with a log (a run going on, or killed) needs the log read too, which read-only mode does.
    """
    path = Path(run_dir) / CHECKPOINTS
    live = path.with_name(path.name + "-wal").exists()
    uri = f"{path.resolve().as_uri()}?{'mode=ro' if live else 'immutable=1'}"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise database_error(run_dir, exc) from None
    return conn


@contextmanager
def reading_saver(run_dir: str, url: str = "") -> Iterator[BaseCheckpointSaver[str]]:
    """A checkpointer for reading a run without writing to it: the folder's SQLite opened read-only, or the
    Postgres at `url` (the run's recorded checkpointer)."""
    if url:
        from refineloop.scale.postgres import open_pool, open_saver

        pool = open_pool(url, max_size=1)
        try:
            yield open_saver(pool)
        finally:
            pool.close()
        return

    conn = connect_readonly(run_dir)
    try:
        yield run_saver(conn)
    except sqlite3.Error as exc:
        raise database_error(run_dir, exc) from None
    finally:
        conn.close()


def read_checkpoint(run_dir: str, thread_id: str, url: str = "") -> CheckpointTuple | None:
    """The latest checkpoint tuple of a run, read without writing and without compiling a graph. Channels kept
    as deltas (the per-image history) are not in its values: `read_values` rebuilds those."""
    with reading_saver(run_dir, url) as saver:
        return saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})


def read_values(run_dir: str, thread_id: str, url: str = "") -> dict[str, Any]:
    """The latest checkpointed state of a run, whole (the history rebuilt from its deltas), read without
    writing. The graph is the one run.json names (greedy's when there is none: the history is the same)."""
    from refineloop.graph import build_graph

    strategy = "greedy"
    if (Path(run_dir) / META).is_file():
        strategy = read_meta(run_dir)["strategy"]
    with reading_saver(run_dir, url) as saver:
        graph = build_graph(strategy, saver)
        return dict(graph.get_state({"configurable": {"thread_id": thread_id}}).values)


class NewRunFolder:
    """A run folder made and locked for a new run before anything slow happens (see `new_run_folder`)."""

    def __init__(self, path: str, created: bool) -> None:
        self.path = path
        self.created = created
        """Whether this run made the folder (else it was an empty folder the user named)."""
        self.kept = False

    def keep(self) -> None:
        """The run is about to make its first checkpoint: from here on the folder is the run's, whatever happens."""
        self.kept = True

    def discard(self) -> None:
        """Remove what the run made, unless it was kept (safe to call more than once, and from a signal handler
        that is about to end the process)."""
        if not self.kept:
            _clear(Path(self.path), remove=self.created)


@contextmanager
def new_run_folder(run_dir: str, *, named: bool) -> Iterator[NewRunFolder]:
    """Make and lock the folder of a new run, atomically, and hold it for the block.

    `named`: the user chose the folder (it may exist if empty). Otherwise `run_dir` is a default name and the
    folder must be new: mkdir is atomic, so when two runs pick one name in the same second the second gets a
    suffix (-2, -3, ...), and they never share a folder. The emptiness check runs under the lock, so two runs
    given the same --output-dir cannot both pass it. A run that fails (or is stopped) before `keep` leaves
    nothing behind that would stop the same command from running again.
    """
    if named:
        _refuse_filled(Path(run_dir))  # the plain case answered before anything is made, the lock file included
    folder, created = _make_folder(Path(run_dir), named)
    claim = NewRunFolder(str(folder), created)
    try:
        with locked(claim.path):
            _refuse_filled(folder)
            try:
                yield claim
            finally:
                claim.discard()
    except BaseException:
        if created and not claim.kept and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _refuse_filled(folder: Path) -> None:
    """RunFolderError when `folder` holds anything but a lock file (a missing folder is fine)."""
    try:
        others = sorted(p.name for p in folder.iterdir() if p.name != LOCK)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise RunFolderError(f"cannot read {folder} ({exc.strerror or exc}): pick another --output-dir") from None
    if others:
        hint = f"resume it with `refineloop resume {folder}`" if META in others else "empty it"
        raise RunFolderError(f"{folder} is not empty: {hint}, or pick a new --output-dir")


def _make_folder(path: Path, named: bool) -> tuple[Path, bool]:
    """Create the folder; (path, whether this call created it). A taken default name gets a suffix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if named:
            try:
                path.mkdir()
                return path, True
            except FileExistsError:
                if path.is_dir():  # already there (made by the user, or by a run racing this one): the lock decides
                    return path, False
                raise
        base, suffix = str(path), 1
        while True:
            try:
                path.mkdir()
                return path, True
            except FileExistsError:
                suffix += 1
                path = Path(f"{base}-{suffix}")
    except FileExistsError:
        raise RunFolderError(f"{path} exists and is not a folder: pick another --output-dir") from None
    except OSError as exc:
        raise RunFolderError(
            f"cannot make the run folder {path} ({exc.strerror or exc}): pick a writable --output-dir"
        ) from None


def _clear(folder: Path, *, remove: bool) -> None:
    """Remove what a run that never started made (its lock, run.json, an empty database)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            continue  # nothing of ours is a folder; leave anything unexpected alone
        entry.unlink(missing_ok=True)
    if remove:
        with suppress(OSError):  # something unexpected stayed in it: leave the folder
            folder.rmdir()
