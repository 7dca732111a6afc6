"""What a loaded pipeline can do, read from the pipeline itself: its call's parameters and defaults, and the
tokenizer whose budget caps the prompt (which also decides whether prompts are written as tags or sentences)."""

from __future__ import annotations

import inspect
import math
from typing import Any

# Tokenizers without a configured limit report a huge sentinel (int(1e30)) as model_max_length.
_UNSET_MAX_LENGTH = 1_000_000


def call_params(fn: Any) -> dict[str, inspect.Parameter]:
    """The parameters of `fn` by name; empty when its signature cannot be read."""
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def param_default(params: dict[str, inspect.Parameter], name: str) -> Any:
    """A call parameter's default, or None when absent or without one."""
    param = params.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def prompt_tokenizer(pipe: Any) -> tuple[Any, int | None, bool]:
    """The tokenizer whose budget caps the prompt: (tokenizer, budget, whether it outreaches the others).

    Only tokenizers paired with a loaded text encoder count (SD3 can run without T5). When the pipeline takes
    `max_sequence_length`, the encoder with the largest capacity reads that many tokens by default.
    """
    found: list[tuple[str, Any, int | None]] = []
    for attr in ("tokenizer", "tokenizer_2", "tokenizer_3", "tokenizer_4"):
        tok = getattr(pipe, attr, None)
        encoder = getattr(pipe, attr.replace("tokenizer", "text_encoder"), None)
        if tok is None or encoder is None:
            continue
        limit = getattr(tok, "model_max_length", None)
        known = int(limit) if isinstance(limit, int) and 0 < limit < _UNSET_MAX_LENGTH else None
        found.append((attr, tok, known))
    if not found:
        return None, None, False
    # Unknown limits sort as unbounded: such a tokenizer is the long one.
    attr, tok, limit = max(found, key=lambda f: math.inf if f[2] is None else f[2])
    seq = param_default(call_params(pipe.__call__), "max_sequence_length")
    budget = limit
    if isinstance(seq, int) and seq > 0:
        budget = seq if limit is None else min(seq, limit)
    others = [f[2] for f in found if f[0] != attr and f[2] is not None]
    longer = budget is not None and bool(others) and budget > max(others)
    return tok, budget, longer


def prompt_style(tokenizer: Any) -> str:
    """`tags` when the prompt's budget-defining tokenizer is CLIP's (keywords work best), else `sentences`
    (a T5 or LLM text encoder reads plain language)."""
    if tokenizer is None:
        return "tags"
    return "tags" if "clip" in type(tokenizer).__name__.lower() else "sentences"
