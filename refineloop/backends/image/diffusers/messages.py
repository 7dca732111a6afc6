"""One-line messages out of library exceptions: diffusers and the hub raise multi-line, path-heavy errors that
a ModelError must squeeze into a single readable line."""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 240) -> str:
    """`exc`'s message on one line, whitespace collapsed and cut to `limit` characters (its class name when empty)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
