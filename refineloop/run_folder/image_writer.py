"""Lossless PNGs written off the critical path, with exact resume.

Encoding a 1024 px PNG costs about a quarter of a second, a tenth of an SDXL image on a GPU; nothing needs the
file until the round's images are judged, and the critic reads them from memory (critic_images). So `generate`
hands each picture to one writer thread and returns at once; the round's `evaluate` node waits for the files
at its end, while its critic calls have overlapped the encoding.

Exact resume holds either way. The checkpoint written after `generate` names images whose files may not have
landed yet when the process dies; the evaluate node that follows runs again from its top on resume and first
remakes any of the round's files that are missing, from the same seeds and request, byte for byte
(`refineloop.nodes.generate.remake_missing`). Every checkpoint after `evaluate` has its images on disk.

The writer is a plain (not daemon) thread: a process that ends normally, a drained Ctrl-C included, still
finishes the writes it was given.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from refineloop.run_folder import thumbnails
from refineloop.run_folder.image_files import save_image

if TYPE_CHECKING:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pending: dict[str, Future[None]] = {}


def save_later(path: str | Path, picture: Image.Image, info: PngInfo | None = None) -> None:
    """Queue the PNG of `picture` at `path` (atomic, never through a link, with its provenance `info`)."""
    key = str(path)
    with _lock:
        future = _executor().submit(_save, picture, Path(path), info)
        _pending[key] = future
    future.add_done_callback(lambda done: _forget(key, done))


def pending(path: str | Path) -> bool:
    """Whether a write of `path` is queued or under way in this process."""
    with _lock:
        return str(path) in _pending


def wait_for(paths: list[str]) -> None:
    """Block until the queued writes of `paths` have landed; a write that failed raises its error here (once)."""
    with _lock:
        futures = {p: _pending[p] for p in paths if p in _pending}
    for path, future in futures.items():
        try:
            future.result()
        finally:
            _forget(path, future, waited=True)


def _save(picture: Image.Image, path: Path, info: PngInfo | None) -> None:
    save_image(picture, path, info)
    thumbnails.keep(path, picture)  # here, off the critical path, rather than decoded again for the collage


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        # One thread: PNG encoding is CPU-bound in Pillow's C code, and one file at a time keeps the order.
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refineloop-png")
    return _pool


def _after_fork_in_child() -> None:
    """A forked child (a multiprocessing pool, say) inherits the pool object but not its thread: start afresh,
    or the child's first write would wait forever on a thread that does not exist there."""
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()
    _pending.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _forget(key: str, done: Future[None], *, waited: bool = False) -> None:
    """Drop a finished write; one that failed stays until someone waits for it, so its error is not lost."""
    with _lock:
        if _pending.get(key) is done and (waited or done.exception() is None):
            del _pending[key]
