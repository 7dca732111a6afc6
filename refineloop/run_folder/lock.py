"""A run folder's lock: one process at a time works in a run folder, and a crashed one leaves no stale lock."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from refineloop.errors import FolderInUse, RunFolderError, disk_problem
from refineloop.files.safe_io import open_no_follow, refuse_links_in

LOCK = ".lock"


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
            raise RunFolderError(disk_problem(exc) or f"cannot make {path} ({exc.strerror or exc})") from None
        raise RunFolderError(
            f"{run_dir} is read-only ({exc.strerror}): make it writable (chmod -R u+w) to go on with it"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Read the holder's pid through our own descriptor: reopening the name could meet a swapped file.
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
            raise FolderInUse(
                f"{run_dir} is in use by refineloop (pid {holder}): wait for it to finish, or use another folder"
            ) from None
        refuse_links_in(run_dir)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as exc:  # the very first write of a run: a full disk or a file limit says so here
            named = OSError(exc.errno, exc.strerror, str(path))
            raise RunFolderError(disk_problem(named) or f"cannot write {path} ({exc.strerror or exc})") from None
        yield
    finally:
        os.close(fd)


def is_locked(run_dir: str) -> bool:
    """Whether a live process holds the folder (used by `refineloop runs`). Looked at without writing and
    without blocking: a lock that is a FIFO, a device, a folder or a link is nobody's lock."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
