"""What was wrong with a server's answer that could not be read, whichever client read it.

Every server refineloop talks to (Ollama, an OpenAI-compatible API, ComfyUI, an A1111 web UI) can answer with
something that is not what its client expects: binary bytes, text in another encoding, a body or a stream cut off
half-way, a web page from a proxy in between. The clients (httpx under ollama and openai, the standard library's,
langchain's stream parsers, pydantic) then fail with their own exceptions, in whatever phase the answer came: the
start-up probes, the critic's warm-up, a call in the middle of a run. :func:`broken_reply` tells all of those apart
from the client's own faults in one place, and :func:`broken_reply_error` words them as the one line the CLI prints.
"""

from __future__ import annotations

import http.client
import json
import sys

from refineloop.errors import ModelError, causes


class CutStream(ConnectionError):
    """A streamed answer ended without its closing line or chunk (Ollama's `done`, OpenAI's `finish_reason`): the
    connection broke off, or a proxy cut it, between two lines. A transport failure, so the call is tried again."""


CUT_OFF = ("a stream cut off before its last line", "JSON cut off before its end", "an answer cut off before its end")
"""The broken answers that are a transfer broken off part-way (a connection or a proxy cut it), not a server that
answers wrongly: trying the same call again may well get the whole answer."""


def cut_off(exc: BaseException) -> bool:
    """Whether `exc` says the server's answer stopped part-way: mid-line, mid-JSON, or between two lines."""
    return broken_reply(exc) in CUT_OFF


def broken_reply(exc: BaseException) -> str | None:
    """What the server's answer was, when `exc` (or anything it was raised from) says the client could not read
    it; None when the failure is something else."""
    for current in causes(exc):
        what = _what(current)
        if what is not None:
            return what
    return None


def _what(exc: BaseException) -> str | None:
    if isinstance(exc, CutStream):
        return CUT_OFF[0]
    if isinstance(exc, UnicodeDecodeError):
        return "text that is not UTF-8 (binary data or another encoding)"
    if isinstance(exc, json.JSONDecodeError):
        if exc.pos == 0:
            return "something that is not JSON (a web page or binary data?)"
        # A string left open runs to the end of the text: the document stopped inside it.
        if exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string"):
            return CUT_OFF[1]
        return "malformed JSON"
    if isinstance(exc, http.client.IncompleteRead):
        return CUT_OFF[2]
    if "httpx" in sys.modules:
        import httpx

        if isinstance(exc, httpx.DecodingError):
            return "a body its client could not decode"
    if "pydantic" in sys.modules:
        import pydantic

        if isinstance(exc, pydantic.ValidationError):
            return "JSON of an unexpected shape"
    return None


def broken_reply_error(exc: BaseException, server: str, url: str, asked: str, fix: str) -> ModelError | None:
    """`server at url answered asked with <what>: fix`, or None when `exc` is not a broken answer."""
    what = broken_reply(exc)
    if what is None:
        return None
    return ModelError(f"{server} at {url} answered {asked} with {what}: {fix}")
