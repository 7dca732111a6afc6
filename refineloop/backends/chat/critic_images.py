"""The images a critic sees: encoded once per image, from memory, at the critic's working size.

A vision model does not need the lossless file: it downsamples whatever it gets to its own input size, and a
1024 px PNG costs a quarter of a second to encode and megabytes to send, again for every judge sample, duel,
proposal and audit. So each image is encoded once, as a high-quality JPEG no larger than the working size
(`--judge-image-size`, the longest side), and every call about it reuses those bytes.

`remember` hands over the picture the image model just returned, so the first call encodes it from memory
while the PNG is still being written; after a restart the file on disk is read instead. Both give the same
bytes: the PNG is lossless and the encoder is deterministic, so a resumed run shows its critic exactly what
an uninterrupted one did. Provenance and other metadata in the file never reach the critic (only pixels do).
"""

from __future__ import annotations

import contextvars
import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

DEFAULT_SIZE = 1024
"""The working size when none is given: the longest side, in pixels."""
QUALITY = 90
"""JPEG quality: no visible loss at the sizes critics look at, about a sixth of the PNG's bytes."""
MIME = "image/jpeg"
_KEEP = 64
"""Encoded images kept (a few hundred KB each): a round's candidates, the best and the current image, with room."""
_KEEP_PICTURES = 17
"""Decoded pictures kept (3 MB each at 1024 px): the largest round (--candidates 16) and one more."""

WORKING_SIZE: contextvars.ContextVar[int] = contextvars.ContextVar("refineloop_judge_image_size", default=DEFAULT_SIZE)
"""The run's working size while its nodes run (set per node by `refineloop.run_view.in_run_view` from the
run's settings), so every message built for the critic uses it without each caller passing it on."""

_lock = threading.Lock()
_pictures: OrderedDict[str, Image.Image] = OrderedDict()
_encoded: OrderedDict[tuple[str, int], bytes] = OrderedDict()


def remember(path: str | Path, picture: Image.Image) -> None:
    """Keep the picture that is (or is about to be) saved at `path`, so the critic needs no disk read."""
    key = str(path)
    with _lock:
        _pictures[key] = picture
        _pictures.move_to_end(key)
        _drop_encodings_of(key)  # a step re-run after a crash makes this file again
        while len(_pictures) > _KEEP_PICTURES:
            _pictures.popitem(last=False)


def critic_bytes(path: str | Path, size: int | None = None) -> bytes:
    """The JPEG the critic is sent for the image at `path`, no larger than `size` (default: the run's working
    size) on its longest side."""
    size = size or WORKING_SIZE.get()
    key = (str(path), size)
    with _lock:
        if key in _encoded:
            _encoded.move_to_end(key)
            return _encoded[key]
        picture = _pictures.get(str(path))
    data = encode(picture if picture is not None else _open(path), size)
    with _lock:
        _encoded[key] = data
        while len(_encoded) > _KEEP:
            _encoded.popitem(last=False)
    return data


def encode(picture: Image.Image, size: int = DEFAULT_SIZE) -> bytes:
    """A picture as the critic's JPEG: RGB, scaled down to `size` on its longest side when larger."""
    rgb = picture.convert("RGB")
    longest = max(rgb.size)
    if longest > size:
        scale = size / longest
        rgb = rgb.resize(
            (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.Resampling.BICUBIC
        )
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=QUALITY)
    return out.getvalue()


def _after_fork_in_child() -> None:
    """A forked child starts with a fresh lock (one held by another thread at the fork would never be released)."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _open(path: str | Path) -> Image.Image:
    with Image.open(path) as picture:
        picture.load()
        return picture.copy()


def _drop_encodings_of(path: str) -> None:
    for key in [k for k in _encoded if k[0] == path]:
        del _encoded[key]
