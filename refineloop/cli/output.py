"""Standard output as the CLI's one output boundary: every line shown (progress, `show`, `runs`, batch tables,
`--json`) passes `refineloop.visible_text.visible`, and its reader may go away (`refineloop demo | head`).

A closed output is treated as a closed terminal is: for a command that makes runs the process gets SIGHUP, so
whatever handler the phase has installed decides (a run drains and stays resumable, a loading model stops in
one line); every later write goes nowhere instead of raising BrokenPipeError from wherever the next line
happened to be printed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
from typing import Any, TextIO

from refineloop.visible_text import CONTROL_CODES, visible


class ReaderSafeOutput(io.TextIOBase):
    """A text stream that forwards what it is given, made visible, to `stream` until its reader goes away,
    then to nothing (see the module). `stops`: a closed output stops the process's work (SIGHUP)."""

    def __init__(self, stream: TextIO, *, stops: bool = True) -> None:
        super().__init__()
        self.stream = stream
        self.stops = stops
        self.reader_gone = False
        """Whether the reader closed the output (the rest of the run's lines went nowhere)."""

    def write(self, text: str) -> int:
        if not self.reader_gone:
            self._guarded(self.stream.write, visible(text))
        return len(text)

    def write_control(self, code: str) -> None:
        """Write one of refineloop's own terminal codes (CONTROL_CODES) as it is: the one way past `visible`."""
        if code not in CONTROL_CODES:
            raise ValueError(f"not one of refineloop's terminal codes: {code!r}")
        if not self.reader_gone:
            self._guarded(self.stream.write, code)

    def flush(self) -> None:
        if not self.reader_gone:
            self._guarded(self.stream.flush)

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return not self.reader_gone and self.stream.isatty()

    def writable(self) -> bool:
        return True

    def _guarded(self, call: Any, *args: Any) -> None:
        try:
            call(*args)
        except BrokenPipeError:
            self._gone()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            self._gone()

    def _gone(self) -> None:
        self.reader_gone = True
        # What is still buffered for the closed pipe is dropped into /dev/null at exit, not raised again there.
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.stream.fileno())
            os.close(null)
        handler = signal.getsignal(signal.SIGHUP)
        if self.stops and callable(handler):  # a handler of ours decides what a closed output means in this phase
            os.kill(os.getpid(), signal.SIGHUP)


def reader_gone(stream: Any) -> bool:
    """Whether `stream` is a ReaderSafeOutput whose reader went away."""
    return bool(getattr(stream, "reader_gone", False))
