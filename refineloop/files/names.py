"""Text from files and flags made into one safe path component.

Task names, goal slugs, batch item labels and goals-file stems end up in folder names. Whatever a user's file
says, the result is a single component inside the folder it is joined to: no separators, no `..`, no leading
dot (no hidden or special names), no control characters, never empty, and short enough for any filesystem.
"""

from __future__ import annotations

import re
import unicodedata

#: Characters kept besides letters and digits; everything else becomes a hyphen.
_KEPT = "-_"
#: Bytes, not characters: filesystems limit a name to 255 bytes, and a stamp or index is prefixed to these.
MAX_BYTES = 120


def safe_component(text: str, limit: int = 60, fallback: str = "run") -> str:
    """`text` as one folder-name component of at most `limit` characters; `fallback` when nothing is left."""
    # NFKC folds look-alikes (full-width letters, superscript digits) into plain ones before filtering.
    folded = unicodedata.normalize("NFKC", str(text))
    kept = "".join(ch if ch.isalnum() or ch in _KEPT else "-" for ch in folded)
    name = re.sub(r"-{2,}", "-", kept).strip("-_")[: max(1, limit)].rstrip("-_")
    while len(name.encode("utf-8")) > MAX_BYTES:
        name = name[:-1].rstrip("-_")
    if not name:
        name = safe_component(fallback, limit, "run") if fallback != text else "run"
    return name
