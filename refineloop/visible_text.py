"""Untrusted text made safe to show: one sanitizer for every output boundary.

Text from files, PNGs, models and goals reaches the terminal (progress, `show`, `runs`, batch tables, `--json`),
summary.txt and report.html. Printed raw, a control character or an escape sequence can recolour a terminal,
move its cursor or set its title, and a bidirectional control can make a line read differently from what it
holds. `visible` masks secrets (refineloop.redaction), drops whole terminal escape sequences (their text would
be litter), spells every other such character out as a JSON-style `\\uXXXX` escape (readable, and still valid
inside JSON text), and cuts long values with a note.
"""

from __future__ import annotations

import re

from refineloop.redaction import redact

#: C0 controls but tab, newline and carriage return; DEL; C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: The same and carriage return, for text that is kept rather than shown.
_KEPT_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Bidirectional embeddings, overrides, isolates and marks; zero-width and other invisible format characters
#: that hide text; line and paragraph separators, which break a line where no newline shows.
_FORMAT = re.compile(r"[\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]")
#: Whole terminal sequences (CSI, OSC/DCS/... strings, other escapes), for `without_sequences`.
SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]"
)


def _spelled(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group(0)):04x}"


#: refineloop's own terminal codes, the only ones that reach a terminal: back to the line's start, then clear it
#: (the updating progress line). Written through `ReaderSafeOutput.write_control`, never inside text.
WIPE_LINE = "\r\x1b[K"
CONTROL_CODES = (WIPE_LINE,)


def visible(text: object, *, limit: int = 0, one_line: bool = False) -> str:
    """`text` fit for a terminal or a text file: secrets masked, escape sequences dropped, other control and
    bidirectional characters spelled out (`\\u202e`), and cut after `limit` characters (0: never) with a note
    saying how much was left out. `one_line`: newlines, carriage returns and tabs are spelled out too, so a
    value cannot break a table's row."""
    shown = SEQUENCE.sub("", redact(text if isinstance(text, str) else str(text)))
    if one_line:
        shown = shown.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")
    else:
        shown = shown.replace("\r\n", "\n").replace("\r", "\\r")
    shown = _FORMAT.sub(_spelled, _CONTROL.sub(_spelled, shown))
    if limit and len(shown) > limit:
        shown = f"{shown[:limit]}... [{len(shown) - limit} more characters not shown]"
    return shown


def without_sequences(text: str) -> str:
    """`text` without terminal escape sequences and control characters (tabs and newlines stay): for text that
    is kept (a model's reply becomes a prompt), where spelled-out escapes would be litter."""
    return _KEPT_CONTROL.sub("", SEQUENCE.sub("", text))
