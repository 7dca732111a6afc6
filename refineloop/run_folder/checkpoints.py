"""A run folder's SQLite checkpoints: opened for a run, or read-only for a look; one line when they cannot be."""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from refineloop.errors import RunFolderError
from refineloop.files.safe_io import refuse_link

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

CHECKPOINTS = "checkpoints.sqlite"


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


#: LangGraph's SqliteSaver tables, column for column, made WITHOUT ROWID when a run's database is new (by
#: RunSaver.setup, just before the saver's own). Its `CREATE TABLE IF NOT EXISTS` makes rowid tables, where each
#: primary key (thread, checkpoint and task ids, about 110 bytes a row) is stored twice, in the row and again in
#: the key's index; a run writes 10 to 30 rows an image, most of them a few bytes of value, so the copy was an
#: eighth of the database. Every query the saver makes names the key or sorts its rows itself, so the order rows
#: come back in does not matter. A database made before keeps its tables (IF NOT EXISTS), and the saver's own
#: set-up then finds these and adds nothing.
TABLES = """
CREATE TABLE IF NOT EXISTS checkpoints (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL DEFAULT '',
    checkpoint_id TEXT NOT NULL,
    parent_checkpoint_id TEXT,
    type TEXT,
    checkpoint BLOB,
    metadata BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS writes (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL DEFAULT '',
    checkpoint_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    task_path TEXT NOT NULL DEFAULT '',
    idx INTEGER NOT NULL,
    channel TEXT NOT NULL,
    type TEXT,
    value BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
) WITHOUT ROWID;
"""


def run_saver(conn: sqlite3.Connection) -> BaseCheckpointSaver[str]:
    """LangGraph's SqliteSaver with short channel versions (see `_run_saver_class`) and packed blobs
    (refineloop.run_folder.packed_serde)."""
    from refineloop.run_folder.packed_serde import packed_serializer

    return _run_saver_class()(conn, serde=packed_serializer())


@functools.cache
def _run_saver_class() -> type[SqliteSaver]:
    """SqliteSaver stores the whole checkpoint, version maps included, at every super-step, and its versions
    carry a 16-digit random suffix each: about half of a small run's checkpoint. A run's thread is one
    timeline, so a zero-padded counter is enough; it also sorts after the long versions of folders written
    before (those start with many more zeros), so old runs resume as they are. Its tables are made without
    rowids (TABLES). Built on first use, so that importing this module does not import LangGraph."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    class RunSaver(SqliteSaver):
        def setup(self) -> None:
            if not self.is_setup:
                self.conn.executescript(TABLES)
            super().setup()

        def get_next_version(self, current: str | int | None, channel: None = None) -> str:
            number = 0 if current is None else int(str(current).split(".", 1)[0])
            return f"{number + 1:08d}"

    return RunSaver


def database_error(run_dir: str, exc: BaseException) -> RunFolderError:
    """One line for a checkpoint database that cannot be used: read-only, or damaged."""
    path = Path(run_dir) / CHECKPOINTS
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # SQLite also says "readonly database" of a damaged file it cannot recover in a writable folder: the
    # folder and the file decide whether it is a permissions problem, not the wording.
    writable = os.access(run_dir, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))
    if not writable:
        return RunFolderError(f"{run_dir} is read-only ({text}): make it writable (chmod -R u+w) to go on with it")
    if "disk is full" in text or "disk I/O error" in text:
        # SQLite says I/O error when a write is refused for want of room (ENOSPC, EDQUOT, EFBIG) as well.
        return RunFolderError(f"cannot write {path} ({text}): free some space on its disk, then run the command again")
    return RunFolderError(
        f"{path} is damaged ({text}): restore it from a copy, or start a new run (images and sidecars are kept)"
    )


def connect_readonly(run_dir: str) -> sqlite3.Connection:
    """The checkpoint database opened for reading only, so looking at a run changes nothing in its folder.

    Where no process holds the folder, the database is opened immutable, and SQLite creates no -wal or -shm
    file; a write-ahead log left by a killed run is read from a private copy of both files (opening it in
    place would make a -shm file, and could fold the log into the database). A run going on has made its
    -shm already: it is read in read-only mode. Anything but a regular file there is damage, found before
    SQLite could block on it (a FIFO).
    """
    from refineloop.run_folder.lock import is_locked

    path = Path(run_dir) / CHECKPOINTS
    log = path.with_name(path.name + "-wal")
    for name in (path, log):
        if (name.exists() or name.is_symlink()) and not _regular(name):
            raise RunFolderError(f"{name} is not a regular file: restore the run's checkpoints, or start a new run")
    live = log.exists()
    if live and not is_locked(run_dir):
        return _private_copy(run_dir, path, log)
    uri = f"{path.resolve().as_uri()}?{'mode=ro' if live else 'immutable=1'}"
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise database_error(run_dir, exc) from None
    return conn


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _private_copy(run_dir: str, path: Path, log: Path) -> sqlite3.Connection:
    """An in-memory database holding the run's database with its write-ahead log applied, made from copies in a
    temporary folder that is gone when this returns."""
    with tempfile.TemporaryDirectory(prefix="refineloop-look-") as tmp:
        for name in (path, log):
            shutil.copyfile(name, Path(tmp) / name.name)
        try:
            disk = sqlite3.connect(Path(tmp) / path.name)
            conn = sqlite3.connect(":memory:", check_same_thread=False)
            try:
                disk.backup(conn)
            finally:
                disk.close()
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise database_error(run_dir, exc) from None
    return conn
