"""The images of a run folder and their sidecars: where they live, listing, reading and saving them.

Every write goes to a temporary file first and is renamed into place, so a crash leaves either the old
file or the new one, never half of one. File names depend only on the iteration, so a node re-run after
a crash overwrites its own output instead of adding a duplicate.
"""

from __future__ import annotations

import json
import os
import re
import stat
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from refineloop.files.safe_io import read_json_object, write_text_atomic, write_with
from refineloop.redaction import redact

if TYPE_CHECKING:
    from PIL.PngImagePlugin import PngInfo

IMAGE_NAME = re.compile(r"^(\d+)\.png$")

#: The most a sidecar may weigh (a record with a long critique is a few KB).
SIDECAR_LIMIT = 4 << 20


def image_path(run_dir: str, iteration: int) -> Path:
    """Where image `iteration` lives: 01.png, 02.png, ... 100.png."""
    return Path(run_dir) / f"{iteration:02d}.png"


def sidecar_path(run_dir: str, iteration: int) -> Path:
    """The JSON record beside an image: prompt, seed, score, critique, decision."""
    return Path(run_dir) / f"{iteration:02d}.json"


def save_image(image: Image.Image, path: Path, info: PngInfo | None = None, *, compress_level: int = 6) -> None:
    """Save a PNG atomically, never through a symbolic link; `info` holds its text chunks (provenance:
    refineloop.run_folder.provenance.png_info). Lower `compress_level`s write faster and larger files."""
    safe = redacted_png_info(info) if info is not None else None
    write_with(path, lambda fh: image.save(fh, format="PNG", pnginfo=safe, compress_level=compress_level))


def redacted_png_info(info: PngInfo) -> PngInfo:
    """`info` with the text of every tEXt, zTXt and iTXt chunk redacted (refineloop.redaction): whatever
    built the provenance, no secret reaches an image."""
    from PIL.PngImagePlugin import PngInfo

    safe = PngInfo()
    for cid, data, after_idat in info.chunks:
        safe.chunks.append((cid, _redacted_chunk(cid, data), after_idat))
    return safe


def _redacted_chunk(cid: bytes, data: bytes) -> bytes:
    """One text chunk's bytes with its text redacted (other chunks, and text that does not parse, as they are)."""
    try:
        if cid == b"tEXt":
            key, _, raw = data.partition(b"\0")
            return key + b"\0" + redact(raw.decode("latin-1")).encode("latin-1", "replace")
        if cid == b"zTXt":
            key, _, rest = data.partition(b"\0")
            plain = zlib.decompress(rest[1:]).decode("latin-1")
            return key + b"\0" + rest[:1] + zlib.compress(redact(plain).encode("latin-1", "replace"))
        if cid == b"iTXt":
            key, _, rest = data.partition(b"\0")
            flag, method, rest = rest[:1], rest[1:2], rest[2:]
            lang, _, rest = rest.partition(b"\0")
            tkey, _, body = rest.partition(b"\0")
            words = (zlib.decompress(body) if flag == b"\1" else body).decode("utf-8")
            out = redact(words).encode("utf-8")
            head = key + b"\0" + flag + method + lang + b"\0" + tkey + b"\0"
            return head + (zlib.compress(out) if flag == b"\1" else out)
    except (ValueError, zlib.error):
        return data
    return data


def save_json(data: dict[str, Any], path: Path) -> None:
    """Save JSON atomically, never through a symbolic link."""
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False))


def listed_images(run_dir: str) -> list[tuple[int, Path]]:
    """Every NN.png on disk, in iteration order (the collage scans files, not state, so a last image
    written just before a crash still shows)."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).iterdir() if (m := IMAGE_NAME.match(p.name))]
    return sorted(found)


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file in the run folder; None when it is missing, unreadable, not UTF-8, not JSON,
    or JSON that is not an object (a damaged or hand-edited sidecar is skipped, never a crash)."""
    return read_json_object(path, SIDECAR_LIMIT)


#: A run's sidecar records by iteration, as read_sidecars returns them.
Sidecars = Mapping[int, dict[str, Any]]


def read_sidecars(run_dir: str) -> dict[int, dict[str, Any]]:
    """Sidecar records by iteration; unreadable ones are skipped."""
    records = {}
    for iteration, _ in listed_images(run_dir):
        if (record := read_record(sidecar_path(run_dir, iteration))) is not None:
            records[iteration] = record
    return records


def image_problem(path: str) -> str | None:
    """None when the image opens and its data is whole, else a short reason (missing, a link, not a regular
    file, unreadable, cut short, a header claiming a size past Pillow's limit). Never blocks on a FIFO."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "is missing"
    except OSError:
        return "cannot be read"
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    try:
        with Image.open(path) as img:
            img.verify()
    except FileNotFoundError:
        return "is missing"
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        return "is not a readable PNG"
    return None
