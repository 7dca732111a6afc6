"""Errors a user can act on.

Every error meant for a person derives from :class:`RefineError`; the CLI prints its message as one line
and exits with a non-zero code, never with a traceback.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator


class RefineError(Exception):
    """A problem the user can fix; the message says what to do."""


class SettingsError(RefineError):
    """A flag or setting is out of range or inconsistent."""


class TaskError(RefineError):
    """A task file is missing, unreadable or lacks required keys."""


class ModelError(RefineError):
    """A model cannot be loaded or reached."""


class RunFolderError(RefineError):
    """A run folder is missing, not a run, locked by another process, or damaged."""


class ScaleError(RefineError):
    """Postgres or the Ray cluster cannot be used; the message is one line saying what to do."""


class RunBusyError(RefineError):
    """Another process holds the run's lock: it is being run somewhere else right now."""


def missing_extra(package: str, extra: str) -> ScaleError:
    """The one-line error for an optional dependency that is not installed."""
    return ScaleError(f"{package} is not installed: pip install 'refineloop[{extra}]'")


class FolderInUse(RunFolderError):
    """Another process holds the run folder's lock."""


#: Write failures a person fixes by making room or granting access, not by reading a traceback.
_NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up", errno.EFBIG: "a file limit"}
_NO_WRITE = {errno.EROFS: "a read-only disk", errno.EACCES: "no permission", errno.EPERM: "no permission"}


def disk_problem(exc: BaseException) -> str | None:
    """One line for a write the disk refused (full, over quota or a file-size limit, read-only, forbidden), saying
    what to do; None for any other failure."""
    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    where = f"cannot write {exc.filename}" if exc.filename else "cannot write"
    if exc.errno in _NO_ROOM:
        return f"{where}: {_NO_ROOM[exc.errno]} ({exc.strerror}): free some space, then run the command again"
    if exc.errno in _NO_WRITE:
        return f"{where}: {_NO_WRITE[exc.errno]} ({exc.strerror}): make it writable, then run the command again"
    return None


class RunKept(Exception):
    """Something stopped the process after a run's first checkpoint (a second Ctrl-C, a signal, a closed output,
    an unexpected failure): nothing of the run is lost and it resumes from its last checkpoint. The CLI prints
    the message as one line and exits with `exit_code`."""

    def __init__(self, run_dir: str, why: str, exit_code: int) -> None:
        super().__init__(f"{why}: the run is kept in {run_dir}: resume it with `refineloop resume {run_dir}`")
        self.run_dir = run_dir
        self.exit_code = exit_code


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or while handling, and so on: the original failure is often wrapped
    (by LangGraph, LangChain, a client library) before it reaches the code that explains it. A cycle in the
    chain is walked once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
