"""The collage's thumbnails, made when each image is written rather than all at the run's end.

The stop step writes collage.png before the closing line. Decoding every full-size PNG back from disk then cost
about 40 ms an image at 1024 px on the 2-core machine (0.4 s for ten images), a tail that grew with the run. The
PNG writer thread holds each picture in memory anyway, so it also shrinks it to a thumbnail there, off the
critical path (`keep`), and the collage asks `thumbnail` for each image: the kept one while the file on disk is
still the one it was made from (same inode, size and modification time), else one decoded from the file (a resumed
run's earlier images, a file replaced by something else).

Thumbnails are kept as raw RGB, 110 KB each, up to `BUDGET` bytes in all (about a thousand images); past that
the oldest are dropped and decoded again when the collage needs them.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from refineloop.files.safe_io import FileStamp, file_stamp

#: The side of a thumbnail, in pixels.
THUMB = 192
#: The most bytes of thumbnails kept in memory.
BUDGET = 128 * 1024 * 1024


@dataclass(frozen=True)
class _Kept:
    file: FileStamp
    pixels: bytes


_lock = threading.Lock()
_kept: OrderedDict[str, _Kept] = OrderedDict()
_bytes = 0


def shrink(picture: Image.Image) -> Image.Image:
    """The thumbnail of `picture`: RGB, THUMB pixels square."""
    return picture.convert("RGB").resize((THUMB, THUMB))


def keep(path: str | Path, picture: Image.Image) -> None:
    """Remember the thumbnail of `picture`, just written to `path`."""
    global _bytes
    try:
        kept = _Kept(file_stamp(path), shrink(picture).tobytes())
    except OSError:
        return
    with _lock:
        old = _kept.pop(str(path), None)
        _bytes += len(kept.pixels) - (len(old.pixels) if old else 0)
        _kept[str(path)] = kept
        while _bytes > BUDGET and _kept:
            _bytes -= len(_kept.popitem(last=False)[1].pixels)


def thumbnail(path: str | Path) -> Image.Image:
    """The thumbnail of the PNG at `path`: the one kept when it was written, if the file is still that one, else
    made from the file (OSError or PIL.UnidentifiedImageError when it cannot be read)."""
    file = file_stamp(path)
    with _lock:
        kept = _kept.get(str(path))
    if kept is not None and kept.file == file:
        return Image.frombytes("RGB", (THUMB, THUMB), kept.pixels)
    with Image.open(path) as img:
        return shrink(img)


def _after_fork_in_child() -> None:
    """A forked child must not inherit a lock the writer thread held at the fork."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
