"""Reading a user's files with checks, and writing inside a run folder without following symbolic links.

A link planted in a run folder (or a copied folder that holds one) must not turn a refineloop write into a
write somewhere else. Every writer here opens with O_NOFOLLOW, and the atomic writers refuse a destination
that is a link before they rename over it: os.replace would replace the link itself, which is safe, but
silently dropping a link the user made is no better than following it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from refineloop.errors import RefineError, RunFolderError
from refineloop.visible_text import visible

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def link_error(path: str | Path) -> RunFolderError:
    """The one-line refusal for a symbolic link where refineloop writes."""
    return RunFolderError(f"{path} is a symbolic link: refineloop does not write through links; remove it")


def refuse_link(path: str | Path) -> None:
    """RunFolderError when `path` is a symbolic link (a missing path is fine: it will be created)."""
    if os.path.islink(path):
        raise link_error(path)


def refuse_links_in(folder: str | Path) -> None:
    """RunFolderError naming the first symbolic link directly inside `folder`.

    Checked when a run folder is taken, so a planted link is refused before anything runs rather than
    failing the run at its first write.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_symlink():
            raise link_error(entry.path)


def open_no_follow(path: str | Path, flags: int, mode: int = 0o666) -> int:
    """os.open that refuses a symbolic link at `path` with a one-line RunFolderError."""
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as exc:
        # Linux says ELOOP for a link under O_NOFOLLOW; some BSDs say EMLINK.
        if exc.errno in (errno.ELOOP, errno.EMLINK) or os.path.islink(path):
            raise link_error(path) from None
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[tuple[int, Path]]:
    """A new, exclusively created file in `path`'s folder; removed unless the caller renamed it away."""
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = open_no_follow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            break
        except FileExistsError:
            continue
    try:
        yield fd, tmp
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_with(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` atomically through `write(file)`: a temporary file in the same folder, then a rename.

    A crash leaves the old file or the new one, never half of one; a destination that is a link is refused.
    """
    target = Path(path)
    refuse_link(target)
    with _temporary_beside(target) as (fd, tmp):
        with os.fdopen(os.dup(fd), "wb") as fh:
            write(fh)
        refuse_link(target)
        os.replace(tmp, target)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically, refusing a symbolic link there."""
    target = Path(path)
    refuse_link(target)
    with _temporary_beside(target) as (fd, tmp):
        _write_all(fd, data)
        refuse_link(target)
        os.replace(tmp, target)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically, refusing a symbolic link there. Every text file of a run
    passes here or through `append_line`: no secret is written, and no control, escape or bidirectional
    character either (spelled out as `\\uXXXX`, which JSON reads back as the character; refineloop.visible_text),
    so `cat summary.txt` is as safe as the terminal."""
    write_bytes_atomic(path, visible(text).encode("utf-8"))


def append_line(path: str | Path, text: str) -> None:
    """Append `text` (its secrets masked) and a newline in one write (O_APPEND), refusing a symbolic link at
    `path`."""
    fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        _write_all(fd, (visible(text).rstrip("\n") + "\n").encode("utf-8"))
    finally:
        os.close(fd)


class NotAFile(OSError):
    """A path that names something other than a regular file (a FIFO, a device, a folder, a socket)."""


class TooLarge(OSError):
    """A file larger than its reader accepts."""


def read_limited(path: str | Path, limit: int, *, follow: bool = True) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Never blocks: the file is opened non-blocking and
    checked on its descriptor (not its name, which could be swapped) before a byte is read, so a FIFO or a
    device is NotAFile and a huge file TooLarge; `follow=False` refuses a symbolic link too (ELOOP)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC | (0 if follow else _NOFOLLOW)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotAFile(errno.EINVAL, "not a regular file", str(path))
        if info.st_size > limit:
            raise TooLarge(errno.EFBIG, f"larger than {limit:,} bytes", str(path))
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > limit:  # grew while it was read
        raise TooLarge(errno.EFBIG, f"larger than {limit:,} bytes", str(path))
    return b"".join(chunks)


def read_json_object(path: str | Path, limit: int) -> dict[str, Any] | None:
    """A JSON object from a small regular file; None when it is missing, not a regular file, too large, not
    UTF-8, not JSON or not an object (never blocks, never raises for what the file holds)."""
    try:
        data = json.loads(read_limited(path, limit).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def read_user_text(path: str | Path, what: str, limit: int, error: type[RefineError] = RefineError) -> str:
    """A user's text file, checked before anything parses it: a regular file, at most `limit` bytes, UTF-8.

    `what` names the file in the one-line `error` ("task file x.toml"); a BOM is dropped.
    """
    try:
        data = read_limited(path, limit)
    except NotAFile:
        raise error(f"{what} is not a regular file: pass a text file") from None
    except TooLarge:
        raise error(f"{what} is larger than {limit:,} bytes: is it the right file?") from None
    except IsADirectoryError:
        raise error(f"{what} is not a regular file: pass a text file") from None
    except OSError as exc:
        raise error(f"cannot read {what} ({exc.strerror or exc}): check the path and its permissions") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        byte = f"byte 0x{data[exc.start]:02x} on line {line}"
        raise error(f"{what} is not UTF-8 text ({byte}): save it as UTF-8") from None


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON through a temporary file and a rename, never through a link."""
    write_text_atomic(path, json.dumps(data, indent=1))


FileStamp = tuple[int, int, int]
"""A file's inode, size and modification time (ns): the atomic writers here replace a file by renaming a new one
into place, a new inode, so a value kept for a file is still the file's while its stamp is unchanged."""


def file_stamp(path: str | Path) -> FileStamp:
    """`path`'s stamp (OSError when it cannot be statted)."""
    return stamp_of(os.stat(path))


def stamp_of(info: os.stat_result) -> FileStamp:
    """The stamp in a stat result already made (a directory entry's, say)."""
    return info.st_ino, info.st_size, info.st_mtime_ns
