"""Model text made safe to store and show.

A model's reply ends up in prompts, sidecars, summary.txt, report.html, trace.jsonl and the terminal. A stray
or hostile control character there can corrupt a file for other tools (NUL), or, printed to a terminal, recolour
it, move the cursor, set the window title or worse (escape sequences). Replies are cleaned once, where they enter
the system (`refineloop.backends.chat.invoke.traced_invoke` and the reply parsers in `refineloop.judges.verdicts`),
so everything downstream can trust them.
"""

from __future__ import annotations

from refineloop.redaction import redact, register_secret
from refineloop.visible_text import without_sequences

__all__ = ["clean_model_text", "redact", "register_secret"]


def clean_model_text(text: str) -> str:
    """`text` without control characters and terminal escape sequences, and with every registered secret
    masked (refineloop.redaction); tabs and newlines stay."""
    if not isinstance(text, str):
        text = str(text)
    return redact(without_sequences(text))
