"""The AutoV2 hash of a model file: the first 10 hex digits of its SHA-256, as model sites and the A1111 web UI
show it, so a run's provenance names the exact checkpoint a user downloaded.

Hashing a 2-7 GB checkpoint takes seconds, so each digest is kept in a small JSON file in the user's cache folder
(`$XDG_CACHE_HOME/refineloop/hashes.json`, else `~/.cache/refineloop/hashes.json`), keyed by the file's absolute
path and trusted only while its size and modification time are the ones it was hashed at. The cache never lives
in a run folder: one checkpoint serves many runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

AUTOV2_DIGITS = 10
_LOCK = threading.Lock()


def cache_file() -> Path:
    """Where digests are kept, read from the environment at call time (tests point it elsewhere)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "refineloop" / "hashes.json"


def autov2_hash(path: str | Path) -> str:
    """The AutoV2 hash of the file at `path` (10 lowercase hex digits); OSError when it cannot be read."""
    return sha256_of(path)[:AUTOV2_DIGITS]


def sha256_of(path: str | Path) -> str:
    """The file's full SHA-256, from the cache while its size and modification time are unchanged."""
    where = Path(path).expanduser().resolve()
    stat = where.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    with _LOCK:
        known = _read_cache().get(str(where))
    if isinstance(known, dict) and all(known.get(k) == v for k, v in stamp.items()):
        digest = known.get("sha256")
        if isinstance(digest, str) and len(digest) == 64:
            return digest
    with where.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    with _LOCK:
        entries = _read_cache()  # read again: another run may have added its own digest meanwhile
        entries[str(where)] = {**stamp, "sha256": digest}
        _write_cache(entries)
    return digest


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text("utf-8"))
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: it is only a cache, the digest is computed again
    return data if isinstance(data, dict) else {}


def _write_cache(entries: dict[str, Any]) -> None:
    """Replace the cache file in one rename; a cache that cannot be written only costs a re-hash next time."""
    target = cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(prefix=".hashes-", suffix=".json", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entries, fh, indent=1, sort_keys=True)
        os.replace(scratch, target)
    except OSError:
        return
