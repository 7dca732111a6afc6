"""Model text made safe to store and show.

A model's reply ends up in prompts, sidecars, summary.txt, report.html, trace.jsonl and the terminal. A stray
or hostile control character there can corrupt a file for other tools (NUL), or, printed to a terminal, recolour
it, move the cursor, set the window title or worse (escape sequences). Replies are cleaned once, where they enter
the system (`refineloop.backends.chat.invoke.traced_invoke` and the reply parsers in `refineloop.judges.verdicts`),
so everything downstream can trust them.
"""

from __future__ import annotations

import re

from refineloop.redaction import redact, register_secret

__all__ = ["clean_model_text", "redact", "register_secret"]

# Whole terminal sequences go, not only their ESC, or "[31m" and "0;title" would be left behind as litter.
_SEQUENCE = re.compile(
    # CSI (colours, cursor moves, erasing): ESC [ or the 8-bit CSI, parameters, intermediates, a final byte.
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    # OSC, DCS, SOS, PM, APC strings (window titles, hyperlinks...): up to BEL or the string terminator.
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    # Any other escape (charset switches, keypad modes, a full reset), and an unterminated string's introducer.
    r"|\x1b[ -/]*[0-~]"
)
# C0 except tab and newline, DEL, and C1: whatever a sequence above did not already take.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_model_text(text: str) -> str:
    """`text` without control characters and terminal escape sequences, and with every registered secret
    masked (refineloop.redaction); tabs and newlines stay."""
    if not isinstance(text, str):
        text = str(text)
    return redact(_CONTROL.sub("", _SEQUENCE.sub("", text)))
