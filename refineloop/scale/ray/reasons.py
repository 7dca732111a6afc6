"""The one line that says why a remote Ray call failed, out of the whole traceback Ray wraps around it."""

from __future__ import annotations


def reason(exc: BaseException) -> str:
    """The one line that says why a remote call failed: the last line of Ray's report, minus the class path.

    Ray wraps a remote exception's whole traceback into its message; the cause is its last line, which for
    refineloop's own errors is already a sentence meant for a person.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else type(exc).__name__
    head, sep, tail = last.partition(": ")
    if sep and head.replace(".", "").replace("_", "").isalnum() and "." in head:
        return tail
    return last
