"""A run folder on disk: claiming a new one, run.json (what a resume needs), and reading a run's state.

Its lock is refineloop.run_folder.lock; its SQLite checkpoints, refineloop.run_folder.checkpoints.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from refineloop.errors import RunFolderError
from refineloop.files.safe_io import write_text_atomic
from refineloop.run_folder.checkpoints import CHECKPOINTS
from refineloop.run_folder.lock import LOCK, locked
from refineloop.strategies import STRATEGY_SPECS

META = "run.json"


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
