"""What the model libraries log during a run goes into the run's trace, not onto the console.

diffusers, transformers and huggingface_hub print their warnings (a LoRA without text-encoder keys, say, with
an issues link, on every run) and progress bars on the console by default. A run's console belongs to its own
progress lines: the diffusers backend turns the libraries' own console output off when it loads a pipeline
(refineloop.backends.image.diffusers.log_filters.quiet_library_output), and while a run goes on their log
records are kept in its trace.jsonl as `library-log` lines, where a person who wonders finds them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from refineloop.backends.chat.text_safety import redact
from refineloop.files.trace import append_trace

LIBRARIES = ("diffusers", "transformers", "huggingface_hub", "peft", "accelerate")
#: A record's message is cut to this many characters in the trace.
MAX_MESSAGE = 2000


class TraceHandler(logging.Handler):
    """Appends each record (warnings and worse) to a run's trace.jsonl."""

    def __init__(self, run_dir: str) -> None:
        super().__init__(logging.WARNING)
        self.run_dir = run_dir

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = redact(record.getMessage())[:MAX_MESSAGE]
            entry = {"kind": "library-log", "logger": record.name, "level": record.levelname, "message": message}
            append_trace(self.run_dir, entry)
        except Exception:  # a log line that cannot be kept must never fail the run
            self.handleError(record)


@contextlib.contextmanager
def library_logs_in_trace(run_dir: str) -> Iterator[None]:
    """Keep the libraries' log records in `run_dir`'s trace for the duration of the block, and off the console."""
    handler = TraceHandler(run_dir)
    loggers = [logging.getLogger(name) for name in LIBRARIES]
    kept = [(lg, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False  # not on to the root logger, whose last-resort handler prints to the console
    try:
        yield
    finally:
        for lg, propagate in kept:
            lg.removeHandler(handler)
            lg.propagate = propagate
