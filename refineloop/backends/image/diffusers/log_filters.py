"""Log lines diffusers and transformers print that are noise for refineloop, and the filters that drop them.

Two kinds: CLIP truncation warnings while a longer encoder (T5) reads the whole prompt, dropped only during
that model's own calls; and transformers' "requires torchvision" notes, dropped for the whole process.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator

_CLIP_TRUNCATION = "The following part of your input was truncated because CLIP"
_TOKEN_LENGTH = re.compile(r"Token indices sequence length is longer than .*\(\d+ > (\d+)\)")

TOKENIZER_LOGGER = "transformers.tokenization_utils_base"
"""Where transformers logs the token-length warning (a fixed module of the library)."""


class DropBenignTruncation(logging.Filter):
    """Drops truncation warnings about the short CLIP encoders while a longer one reads the whole prompt.

    Two messages: diffusers' "truncated because CLIP can only handle ..." and transformers' "Token indices
    sequence length is longer ... (n > 77)" from the pipeline tokenizing the prompt untruncated. A length
    warning about the budget-defining tokenizer itself is kept: then words really are lost.
    """

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for a CLIP cut, or a length warning below the real budget."""
        msg = str(record.msg)
        if msg.startswith(_CLIP_TRUNCATION):
            return False
        match = _TOKEN_LENGTH.match(msg)
        return not (match and int(match.group(1)) < self.budget)


@contextlib.contextmanager
def filtered(logger_names: Iterable[str], log_filter: logging.Filter | None) -> Iterator[None]:
    """Install `log_filter` on the named loggers for the duration of the block only (nothing when None).

    Only for the block, so another model of the same pipeline class (say SD3 without T5, where the CLIP cut
    is real) still shows the warning.
    """
    if log_filter is None:
        yield
        return
    loggers = [logging.getLogger(n) for n in sorted(set(logger_names))]
    for lg in loggers:
        lg.addFilter(log_filter)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(log_filter)


class _DropTorchvisionFallback(logging.Filter):
    """transformers warns, for every image processor it falls back on, that torchvision is missing; the
    PIL processors it falls back to are what diffusers pipelines used all along, so the lines are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


def quiet_torchvision_fallback() -> None:
    """Drop transformers' "requires torchvision" notes for the rest of the process (installed once)."""
    target = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _DropTorchvisionFallback) for f in target.filters):
        target.addFilter(_DropTorchvisionFallback())


def quiet_library_output() -> None:
    """Turn off the console output diffusers, transformers and huggingface_hub print by themselves: their
    default log handlers and their progress bars (loading, downloading). Their log records still reach any
    handler a caller installs (a run keeps them in its trace: refineloop.apps.library_logs)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging
    from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]

    for library in (diffusers_logging, transformers_logging):
        library.disable_default_handler()
        library.disable_progress_bar()
    disable_progress_bars()
