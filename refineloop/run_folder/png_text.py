"""The text chunks of an untrusted PNG, read without decoding a pixel, and the provenance record they hold checked
field by field.

An image from elsewhere may claim a size of gigapixels in its header, carry a text chunk of hundreds of
megabytes or a compressed one that inflates a thousandfold, or put a string where a number belongs. The
reader walks the chunk list (seeking past image data), takes text chunks up to a size each and in all,
inflates compressed ones only up to that size, and never blocks on a FIFO; `typed_record` keeps only the
fields whose type is the one refineloop writes.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import Any

from refineloop.files.safe_io import NotAFile

SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: The most text one chunk may hold (inflated), and all of an image's text together.
CHUNK_LIMIT = 1 << 20
TEXT_LIMIT = 4 << 20
#: More chunks than any real image has: a file made of empty chunks is not read for ever.
MAX_CHUNKS = 100_000


class PngTextError(ValueError):
    """The file is not a PNG, is cut short, or its text is past the limits (the message says which)."""


def read_png_texts(path: str | Path) -> dict[str, str]:
    """The tEXt, zTXt and iTXt chunks of the PNG at `path` by keyword (the first of each keyword wins)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise NotAFile(errno.EINVAL, "not a regular file", str(path))
        if fh.read(8) != SIGNATURE:
            raise PngTextError("not a PNG")
        texts: dict[str, str] = {}
        total = 0
        for _ in range(MAX_CHUNKS):
            head = fh.read(8)
            if len(head) < 8:
                raise PngTextError("cut short before its end")
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                return texts
            if kind in (b"tEXt", b"zTXt", b"iTXt"):
                if length > CHUNK_LIMIT * 2:
                    raise PngTextError(f"a text chunk of {length:,} bytes (at most {CHUNK_LIMIT:,} are read)")
                data = fh.read(length)
                if len(data) < length:
                    raise PngTextError("cut short in a text chunk")
                key, text = _text_chunk(kind, data)
                total += len(text)
                if total > TEXT_LIMIT:
                    raise PngTextError(f"more than {TEXT_LIMIT:,} characters of text")
                texts.setdefault(key, text)
                fh.seek(4, os.SEEK_CUR)
            else:
                fh.seek(length + 4, os.SEEK_CUR)  # image data and every other chunk: skipped, never decoded
        raise PngTextError(f"more than {MAX_CHUNKS:,} chunks")


def _text_chunk(kind: bytes, data: bytes) -> tuple[str, str]:
    """(keyword, text) of one text chunk; compressed text inflated up to CHUNK_LIMIT."""
    key, sep, rest = data.partition(b"\0")
    if not sep or not key or len(key) > 79:
        raise PngTextError("a text chunk without a keyword")
    if kind == b"tEXt":
        return key.decode("latin-1"), rest.decode("latin-1")
    if kind == b"zTXt":
        return key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
    if len(rest) < 2:
        raise PngTextError("a damaged iTXt chunk")
    flag, rest = rest[0], rest[2:]
    _lang, _, rest = rest.partition(b"\0")
    _translated, _, body = rest.partition(b"\0")
    raw = _inflate(body) if flag else body
    try:
        return key.decode("latin-1"), raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PngTextError("an iTXt chunk that is not UTF-8") from None


def _inflate(data: bytes) -> bytes:
    """Inflate at most CHUNK_LIMIT bytes; PngTextError for a bomb or damage."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, CHUNK_LIMIT + 1)
    except zlib.error:
        raise PngTextError("a damaged compressed text chunk") from None
    if len(out) > CHUNK_LIMIT or inflater.unconsumed_tail:
        raise PngTextError(f"a compressed text chunk that inflates past {CHUNK_LIMIT:,} bytes")
    return out


#: The type of each field refineloop writes in its record (None is always allowed).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "prompt": (str,),
    "negative_prompt": (str,),
    "base_prompt": (str,),
    "idea": (str,),
    "seed": (int,),
    "steps": (int,),
    "guidance": (int, float),
    "width": (int,),
    "height": (int,),
    "strength": (int, float),
    "scheduler": (str,),
    "init_image": (str,),
    "model": (str,),
    "loras": (list,),
    "run_id": (str,),
    "iteration": (int,),
    "task": (dict,),
    "software": (str,),
}

#: Numbers past these are not a seed, a step count or a size any model takes.
_INT_LIMIT = 2**63


def typed_record(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with every known field of the wrong type (a bool or a string where a number belongs, a number
    too large, a LoRA that is not a {source, scale} object) dropped; unknown fields kept as they are."""
    kept: dict[str, Any] = {}
    for key, value in record.items():
        kinds = FIELD_TYPES.get(key)
        if kinds is None or value is None:
            kept[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, kinds):
            continue
        if isinstance(value, int) and abs(value) >= _INT_LIMIT:
            continue
        if isinstance(value, float) and value != value:  # NaN
            continue
        if key == "loras" and isinstance(value, list):
            value = [
                x
                for x in value
                if isinstance(x, dict)
                and isinstance(x.get("source"), str)
                and isinstance(x.get("scale"), (int, float))
                and not isinstance(x.get("scale"), bool)
            ]
        kept[key] = value
    return kept
