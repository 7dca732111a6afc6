"""A run folder on disk: claiming a new one, run.json (what a resume needs), and reading a run's state.

Its lock is refineloop.run_folder.lock; its SQLite checkpoints, refineloop.run_folder.checkpoints.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from refineloop.errors import FolderInUse, RefineError, RunFolderError, RunKept
from refineloop.files.safe_io import read_json_object, read_limited, write_text_atomic
from refineloop.redaction import redact
from refineloop.run_folder.checkpoints import CHECKPOINTS
from refineloop.run_folder.lock import LOCK, locked
from refineloop.strategies import STRATEGY_SPECS

META = "run.json"

#: The most run.json may weigh (it holds a thread id, a strategy, the command line).
META_LIMIT = 1 << 20


def is_run_folder(path: Path) -> bool:
    """Whether `path` holds a refineloop run: run.json, and its checkpoints here or in the Postgres it names."""
    # Anything by those names counts (a FIFO, a folder): read_meta and the readers report it as damage.
    if not _present(path / META):
        return False
    if _present(path / CHECKPOINTS):
        return True
    meta = read_json_object(path / META, META_LIMIT)
    return True if meta is None else bool(meta.get("checkpointer"))  # a damaged run.json: read_meta says so


def _present(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()
    except OSError:
        return True


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
        meta = json.loads(read_limited(path / META, META_LIMIT).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
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


#: What a new run puts in its folder before its first checkpoint (error.log: why it failed): all a failed start
#: may take away again.
OWN_FILES = (LOCK, META, "error.log", CHECKPOINTS, *(CHECKPOINTS + tail for tail in ("-wal", "-shm", "-journal")))


class NewRunFolder:
    """A run folder made and locked for a new run before anything slow happens (see `new_run_folder`).

    Once the folder holds a checkpoint it is the run's, whatever happens next: `discard` asks the database
    itself, so a stop that lands between a checkpoint and the code that would mark it kept loses nothing.
    """

    def __init__(self, path: str, created: bool, found: frozenset[str] = frozenset()) -> None:
        self.path = path
        self.created = created
        """Whether this run made the folder (else it was an empty folder the user named)."""
        self.kept = False
        self.found = found
        """Names that were in the folder before this process claimed it (a lock file left by another)."""
        self.made: set[str] = set()
        """Other files this process put there before the first checkpoint (a fork's copied images)."""
        self.parents: list[Path] = []
        """The folders made to hold it, deepest first (removed with it when nothing else went into them)."""

    def keep(self) -> None:
        """The run has (or is about to write) its first checkpoint: the folder is the run's, whatever happens."""
        self.kept = True

    def holds_run(self) -> bool:
        """Whether the folder holds a run a resume can continue: kept, or a checkpoint in its database. A
        database that cannot be read (a disk that filled up while it was made) counts as holding one when
        anything besides this process's own files is in the folder: an image is only ever made after a
        checkpoint, so a folder without one has lost nothing worth keeping."""
        if self.kept:
            return True
        found = holds_checkpoint(Path(self.path) / CHECKPOINTS)
        if found is not None:
            return found
        try:
            return any(p.name not in {*OWN_FILES, *self.made} for p in Path(self.path).iterdir())
        except OSError:
            return True

    def discard(self) -> bool:
        """Remove the files this process made, and the folder when it made it, unless the folder holds a run;
        whether it did. Files someone else put there are left alone (and then so is the folder). Safe to call
        more than once, and from a signal handler that is about to end the process."""
        if self.holds_run():
            return False
        folder = Path(self.path)
        for name in sorted({*OWN_FILES, *self.made} - self.found):
            with suppress(FileNotFoundError, IsADirectoryError):
                (folder / name).unlink()
        if self.created:
            with suppress(OSError):  # something else is in it: leave the folder
                folder.rmdir()
                for parent in self.parents:
                    parent.rmdir()
        return True


def holds_checkpoint(database: Path) -> bool | None:
    """Whether a checkpoint database holds a checkpoint of the run's state, read without writing. LangGraph's
    first checkpoint (step -1) holds only the input, before the run's state exists: nothing a resume continues
    from. A missing or empty file, or one whose table is not made yet, holds none; None when it cannot be read."""
    try:
        if database.is_symlink():
            return None
        if not database.is_file() or database.stat().st_size == 0:
            return False
    except OSError:
        return None
    try:
        conn = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        found = conn.execute(
            "SELECT 1 FROM checkpoints WHERE json_extract(CAST(metadata AS TEXT), '$.step') >= 0 LIMIT 1"
        )
        return found.fetchone() is not None
    except sqlite3.OperationalError as exc:
        return False if "no such table" in str(exc) else None
    except sqlite3.Error:
        return None
    finally:
        conn.close()


@contextmanager
def new_run_folder(run_dir: str, *, named: bool) -> Iterator[NewRunFolder]:
    """Make and lock the folder of a new run, atomically, and hold it for the block.

    `named`: the user chose the folder (it may exist if empty). Otherwise `run_dir` is a default name and the
    folder must be new: mkdir is atomic, so when two runs pick one name in the same second the second gets a
    suffix (-2, -3, ...), and they never share a folder. The emptiness check runs under the lock, so two runs
    given the same --output-dir cannot both pass it. A run that fails (or is stopped) before its first
    checkpoint leaves nothing behind that would stop the same command from running again; one stopped after
    it keeps everything, and whatever stopped it comes out as `RunKept`, which says how to resume.
    """
    if named:
        refuse_filled(Path(run_dir))  # the plain case answered before anything is made, the lock file included
    parents = _missing_parents(Path(run_dir))
    folder, created = _make_folder(Path(run_dir), named)
    claim = NewRunFolder(str(folder), created, frozenset({LOCK}) if (folder / LOCK).exists() else frozenset())
    claim.parents = parents
    try:
        with locked(claim.path):
            refuse_filled(folder)
            try:
                yield claim
            finally:
                claim.discard()
    except (GeneratorExit, RunKept):
        raise
    except BaseException as exc:
        if claim.holds_run():
            raise RunKept(claim.path, stop_words(exc), exit_code_for(exc)) from exc
        if not isinstance(exc, FolderInUse):  # the lock is another process's: nothing here is ours to take
            claim.discard()
        raise


@contextmanager
def kept_on_exit(run_dir: str) -> Iterator[None]:
    """Whatever escapes the block (a signal, a closed output, a failure) comes out as `RunKept`: the folder
    holds the run's checkpoints, and the line that reports it says how to go on."""
    try:
        yield
    except (GeneratorExit, RunKept):
        raise
    except BaseException as exc:
        raise RunKept(run_dir, stop_words(exc), exit_code_for(exc)) from exc


def stop_words(exc: BaseException) -> str:
    """What stopped a run, in a few words for the line that says it was kept."""
    if isinstance(exc, KeyboardInterrupt):
        return "stopped"
    if isinstance(exc, BrokenPipeError):
        return "the output was closed"
    if isinstance(exc, RefineError):
        return str(exc)
    first = redact(str(exc)).strip().splitlines()[0] if str(exc).strip() else ""
    return f"stopped by {type(exc).__name__}" + (f" ({first})" if first else "")


def exit_code_for(exc: BaseException) -> int:
    """130 for a stop (the shell's 128 + SIGINT), 1 for a failure."""
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


def _missing_parents(path: Path) -> list[Path]:
    """The folders above `path` that do not exist yet, deepest first."""
    missing = []
    for parent in path.absolute().parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def refuse_filled(folder: Path) -> None:
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
    except NotADirectoryError:
        blocker = next((p for p in path.absolute().parents if p.exists() and not p.is_dir()), path)
        raise RunFolderError(f"{blocker} is a file, not a folder: pick an --output-dir outside it") from None
    except OSError as exc:
        raise RunFolderError(
            f"cannot make the run folder {path} ({exc.strerror or exc}): pick a writable --output-dir"
        ) from None
