"""HTTP calls to an image server (ComfyUI, an A1111-compatible web UI), each failure explained in one line.

The standard library's client is enough for a handful of JSON calls per image, and it adds no dependency. Every
problem a user can meet (a server that is down, a wrong URL, refused credentials, a payload the server rejects,
a crash on its side, an answer that is not JSON) becomes a :class:`ServerError` whose message names the server,
its URL and what to do.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from refineloop.backends.broken_replies import broken_reply
from refineloop.backends.chat.text_safety import clean_model_text
from refineloop.errors import ModelError

#: Seconds one call may wait for an answer: drawing calls take their own, longer, limit.
CALL_TIMEOUT = 30.0
#: Characters of a server's own error text quoted in a message.
QUOTED = 300


class ServerError(ModelError):
    """An image server could not be reached, refused a call, or failed it."""


class ServerRefused(ServerError):
    """The server answered with an HTTP error status; `status` and `body` let a caller word it better."""

    def __init__(self, message: str, status: int, body: bytes) -> None:
        super().__init__(message)
        self.status, self.body = status, body


class ServerDown(ServerError):
    """Nothing answers at the server's address (refused, reset, timed out): it is down or moved."""


@dataclass(frozen=True)
class Server:
    """How to reach one image server, and how to name it in a message."""

    name: str
    """How messages call it: `ComfyUI`, `the A1111 server`."""
    url: str
    """Base URL without a trailing slash."""
    flag: str
    """The flag that sets the URL, named in the fix."""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    """Sent with every call (basic auth); never shown."""
    auth_fix: str = "check the server's credentials"
    """What to do when the server refuses the credentials (HTTP 401 or 403)."""

    def call(self, method: str, path: str, body: Any = None, *, timeout: float = CALL_TIMEOUT) -> Any:
        """The JSON answer of `method path` with a JSON `body`; ServerError with the fix otherwise."""
        data = None if body is None else json.dumps(body).encode()
        raw = self.send(method, path, data, {"Content-Type": "application/json"} if data else {}, timeout=timeout)
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            what = broken_reply(exc) or "something that is not JSON"
            raise ServerError(
                f"{self.name} at {self.url} answered {method} {path} with {what} ({_quote(raw)}): check {self.flag} "
                "points at the server itself, not a proxy's page"
            ) from None

    def send(
        self, method: str, path: str, data: bytes | None, headers: dict[str, str], *, timeout: float = CALL_TIMEOUT
    ) -> bytes:
        """The raw answer of one call; ServerError with the fix for anything but a 2xx."""
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={**self.headers, **headers})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                body: bytes = answer.read()
                return body
        except urllib.error.HTTPError as exc:
            body = _read(exc)
            raise ServerRefused(self.refusal(method, path, exc.code, body), exc.code, body) from None
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut off mid-answer
            reason = getattr(exc, "reason", exc)
            raise ServerDown(
                f"{self.name} at {self.url} is not answering ({clean_model_text(str(reason)) or type(exc).__name__}):"
                f" start it, or pass {self.flag} with its address"
            ) from None

    def refusal(self, method: str, path: str, status: int, body: bytes) -> str:
        """The one line for an HTTP error status."""
        said = _quote(body)
        where = f"{self.name} at {self.url}"
        if status in (401, 403):
            return f"{where} refused the credentials for {path} (HTTP {status}): {self.auth_fix}"
        if status == 404:
            return f"{where} has no {path} (HTTP 404): check {self.flag}, and that the server's API is switched on"
        if status == 422 or status == 400:
            return f"{where} refused the request to {path} (HTTP {status}): {said}"
        if status >= 500:
            return f"{where} failed {method} {path} (HTTP {status}): {said}; see the server's own log"
        return f"{where} answered {method} {path} with HTTP {status}: {said}"


def error_text(body: bytes) -> str:
    """The message inside a server's JSON error body (`error`, `detail`, `errors`, ...), else the text itself."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    if isinstance(data, dict):
        # A1111 answers a crash with {"error": <type>, "detail", "body", "errors": <message>}; FastAPI a 422
        # with {"detail": [...]}; ComfyUI with {"error": {"message": ...}}.
        parts = []
        for key in ("error", "detail", "errors", "message"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value
            if value:
                parts.append(value if isinstance(value, str) else json.dumps(value))
        if parts:
            return ": ".join(parts)
    return json.dumps(data)


def _quote(body: bytes) -> str:
    text = " ".join(clean_model_text(error_text(body)).split())
    return (text[:QUOTED] + "...") if len(text) > QUOTED else (text or "an empty answer")


def _read(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read() or b""
    except OSError:
        return b""
