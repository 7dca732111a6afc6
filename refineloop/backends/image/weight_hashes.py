"""Short hashes of model and LoRA weights, as the web UIs write them into PNG metadata and model sites match them.

- A model file: A1111's AutoV2, the first 10 hex digits of the SHA-256 of the whole file.
- A diffusers folder (no single file holds the model): the first 10 hex digits of the SHA-256 of a listing with
  one line per weight file (`.safetensors`, `.bin`, `.ckpt`, `.pt`, `.pth`, `.gguf`), in sorted order of their
  paths inside the folder: `path NUL sha256-of-the-file`. The same weights give the same hash wherever the
  folder is; a changed, added or removed weight file changes it; configs and tokenizers do not count.
- A LoRA: A1111's AutoV3, the first 12 hex digits of the SHA-256 of a .safetensors file's tensor data (the
  bytes after its JSON header, so editing the header's metadata keeps the hash); other files: of the whole file.

A whole file's SHA-256 is computed once per size and modification time and kept across processes
(refineloop.backends.image.file_hash); a digest from an offset is kept for the process. A file in the Hugging
Face cache is a link to a blob named by its SHA-256, which is read from the name instead of the bytes.
"""

from __future__ import annotations

import hashlib
import re
import struct
import threading
from pathlib import Path

from refineloop.backends.image.file_hash import sha256_of

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf")
_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_cache: dict[tuple[str, int, int, int], str] = {}
_lock = threading.Lock()


def _digest(path: Path, skip: int = 0) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        fh.seek(skip)
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def file_sha256(path: Path, *, skip: int = 0) -> str:
    """The SHA-256 of `path`'s bytes from offset `skip`, cached by path, size and modification time."""
    real = path.resolve()
    if skip == 0 and real.parent.name == "blobs" and _HEX64.fullmatch(real.name):
        return real.name  # the hub cache names each blob by the SHA-256 of its content
    if skip == 0:
        return sha256_of(real)
    stat = real.stat()
    key = (str(real), stat.st_size, stat.st_mtime_ns, skip)
    with _lock:
        if key in _cache:
            return _cache[key]
    value = _digest(real, skip)
    with _lock:
        _cache[key] = value
    return value


def weight_files(folder: Path) -> list[Path]:
    """The weight files inside a model folder, in sorted order of their paths."""
    found = [p for p in folder.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def model_hash(path: str | Path) -> str | None:
    """AutoV2 of a model file, or the listing hash of a diffusers folder (see the module notes); None when
    there are no weights to hash."""
    where = Path(path)
    if where.is_file():
        return file_sha256(where)[:10]
    if not where.is_dir():
        return None
    files = weight_files(where)
    if not files:
        return None
    listing = "".join(f"{p.relative_to(where).as_posix()}\0{file_sha256(p)}\n" for p in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()[:10]


def lora_hash(path: str | Path) -> str | None:
    """AutoV3 of a .safetensors LoRA (its tensor data), else the SHA-256 of the file; 12 hex digits."""
    where = Path(path)
    if not where.is_file():
        return None
    skip = 0
    if where.suffix == ".safetensors":
        with where.open("rb") as fh:
            head = fh.read(8)
        if len(head) == 8:
            skip = 8 + struct.unpack("<Q", head)[0]
    return file_sha256(where, skip=skip)[:12]
