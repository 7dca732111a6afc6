"""A scripted stand-in for the Ollama HTTP API, for tests that drive the real ChatOllama client.

Use it in-process::

    with FakeOllama(models={"llava:7b": ["completion", "vision"]}, replies={"judge": [{"score": 7}]}) as fake:
        llm = ChatOllama(model="llava:7b", base_url=fake.url)
        ...
        assert fake.chat_requests()[-1]["options"]["temperature"] == 0

or as a process for CLI tests (`python tests/fake_ollama.py --port 0 --script script.json`): the first line
on stdout is the URL; it serves until SIGTERM or SIGINT.

Script file (JSON)::

    {"models": {"llava:7b": ["completion", "vision"], "old:1b": null},
     "replies": {"judge": [{"score": 7, "done": false}, "garbage"], "text": ["a red fox"], "any": []},
     "version": "0.12.6"}

`replies` may also be a plain list (the shared queue). A role's value "garbage" (instead of a list) or an
entry "garbage" inside a list expands to GARBAGE_REPLIES.

Reply entries: a str (plain content), a dict (sent as JSON text), {"error": msg} (an NDJSON error line;
add "status": 500 to fail with that HTTP status instead), {"tool_calls": [{"name": n, "arguments": {...}}]},
{"hang": seconds} (say nothing for that long, then an empty reply), {"drop": true} (close the connection
without answering), or {"reply": {...}} holding the fields of :class:`Reply` for full control (thinking, delay,
drop, ...).

Misbehaving-server modes, for tests of timeouts and retries: `fail_first=K` (script key "fail_first", with
"fail_status", default 500) answers the first K chat requests with that HTTP status, whatever their role,
before any scripted reply is taken; `hang(seconds, role)`, `drop(role)` and `fail(k, status, role)` queue the
same misbehaviour as script entries.

Roles, detected per chat request (override with ``role_of=``): "tools" when the request offers tools;
"judge" when a message carries images and the text talks about judging, scoring, rating or critique;
"vision" for other requests with images; "text" otherwise. A request takes the next entry of its role's
queue, else of the shared "any" queue, else the default reply (a judge whose score climbs by one each call).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

try:
    from tests.fake_http import QuietServer
except ModuleNotFoundError:  # run as a process (`python tests/fake_ollama.py`): its own folder is on the path
    from fake_http import QuietServer

GARBAGE_REPLIES: list[Any] = [
    "Sorry, I cannot judge images.",
    "SCORE: 11/10",
    "",
    "I'd say 8/10. DONE: perfect. CONTINUE: more flames",
    "score:7\ncontinue: sparks and smoke",
]
"""Replies a weak model really gives a judge prompt: refusals, out-of-range scores, nothing, loose formats."""

DEFAULT_MODELS: dict[str, list[str] | None] = {"llava:7b": ["completion", "vision"]}

ROLES = ("judge", "vision", "tools", "text")
SHARED = "any"

_JUDGE_WORDS = re.compile(r"judg|scor|rating|\brate\b|critic|critique|evaluat|grade", re.IGNORECASE)


@dataclass
class Reply:
    """One scripted answer to POST /api/chat, with every knob the fake offers."""

    content: str = ""
    thinking: str = ""
    """Streamed as `message.thinking` before the content when the request lets the model think."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Each {"name": ..., "arguments": {...}}; sent in Ollama's {"function": {...}} shape."""
    error: str | None = None
    """Sent as an NDJSON {"error": ...} line after the content (or as the HTTP body when status is set)."""
    status: int = 200
    """An HTTP status other than 200 fails the request before any streaming, like a missing model."""
    delay: float = 0.0
    """Seconds to wait before the first line (to test timeouts and Ctrl-C)."""
    drop_after: int | None = None
    """Close the connection abruptly after this many content chunks (a server dying mid-reply)."""
    chunks: int = 3
    """How many pieces the content is streamed in."""
    hangup: bool = False
    """Close the connection without sending any response at all (a server that died on the request)."""
    logprobs: list[dict[str, Any]] | None = None
    """Token log probabilities, in Ollama's shape ({"token", "logprob", "top_logprobs": [...]}), sent with the first
    content chunk when the request asks for them (`"logprobs": true`), as a server that supports them does."""


def _as_reply(entry: Any) -> Reply:
    """Turn a script entry (str, dict, Reply) into a Reply."""
    if isinstance(entry, Reply):
        return entry
    if entry is None:
        return Reply()
    if isinstance(entry, str):
        return Reply(content=entry)
    if isinstance(entry, Mapping):
        if set(entry) <= {"error", "status"} and "error" in entry:
            return Reply(error=str(entry["error"]), status=int(entry.get("status", 200)))
        if set(entry) == {"tool_calls"}:
            return Reply(tool_calls=list(entry["tool_calls"]))
        if set(entry) == {"hang"}:
            return Reply(delay=float(entry["hang"]))
        if set(entry) == {"drop"} and entry["drop"]:
            return Reply(hangup=True)
        if set(entry) == {"reply"}:
            known = {f.name for f in fields(Reply)}
            return Reply(**{k: v for k, v in entry["reply"].items() if k in known})
        return Reply(content=json.dumps(entry))
    raise TypeError(f"cannot script a reply from {type(entry).__name__}: use a str, dict or Reply")


def _expand(entries: Any) -> list[Any]:
    """Expand the "garbage" preset, wherever it appears."""
    if entries == "garbage":
        return list(GARBAGE_REPLIES)
    if isinstance(entries, str | Mapping | Reply):
        return [entries]
    out: list[Any] = []
    for entry in entries:
        out.extend(GARBAGE_REPLIES if entry == "garbage" else [entry])
    return out


def message_text(body: Mapping[str, Any]) -> str:
    """All message text of a chat request, joined."""
    return "\n".join(str(m.get("content") or "") for m in body.get("messages", []))


def has_images(body: Mapping[str, Any]) -> bool:
    """Whether any message of a chat request carries images."""
    return any(m.get("images") for m in body.get("messages", []))


def detect_role(body: Mapping[str, Any]) -> str:
    """Guess which part of the loop sent a chat request (see the module docstring)."""
    if body.get("tools"):
        return "tools"
    if has_images(body):
        return "judge" if _JUDGE_WORDS.search(message_text(body)) else "vision"
    return "text"


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local $ref and pick the first non-null branch of anyOf/oneOf."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {})
        return _resolve(node, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [b for b in schema[key] if b.get("type") != "null"]
            if branches:
                return _resolve(branches[0], root)
    return schema


def fill_schema(schema: Mapping[str, Any], score: float, root: Mapping[str, Any] | None = None) -> Any:
    """Make a value that fits a JSON schema, in the spirit of a judge that gives `score` out of 10."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        out = {}
        for name, sub in props.items():
            sub = _resolve(sub, root)
            low = name.lower()
            if sub.get("type") in ("integer", "number") and "score" not in low:
                out[name] = sub.get("minimum", 1)
            elif sub.get("type") == "boolean":
                out[name] = score >= 9 and any(w in low for w in ("done", "accept", "finish", "good"))
            else:
                out[name] = fill_schema(sub, score, root)
        return out
    if kind in ("integer", "number"):
        hi = schema.get("maximum", 10)
        value = score if hi > 1 else score / 10  # a 0..1 scale gets a fraction
        value = min(max(value, schema.get("minimum", value)), hi)
        return int(round(value)) if kind == "integer" else float(value)
    if kind == "boolean":
        return score >= 9
    if kind == "array":
        return [fill_schema(schema.get("items", {"type": "string"}), score, root)]
    return "add more detail and sharper light"


def default_reply(role: str, body: Mapping[str, Any], n: int) -> Any:
    """What the fake answers when no scripted reply is left; n counts earlier defaults for this role."""
    fmt = body.get("format")
    if role == "judge":
        score = min(10, 4 + n)  # climbs so a loop with no script still ends
        if isinstance(fmt, Mapping):
            return fill_schema(fmt, score)
        verdict = "DONE" if score >= 9 else "CONTINUE"
        return f"SCORE: {score}/10\nVERDICT: {verdict}\nCRITIQUE: sharpen the subject and warm the light"
    if isinstance(fmt, Mapping):
        return fill_schema(fmt, 5)
    if role == "vision":
        return "A small picture with a few shapes on a plain background."
    if role == "tools":
        return "I see nothing to call."
    return f"a detailed, well lit scene, revision {n + 1}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _split(text: str, pieces: int) -> list[str]:
    """Cut text into about `pieces` chunks without losing characters."""
    if not text:
        return []
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i : i + size] for i in range(0, len(text), size)]


class FakeOllama:
    """A scripted Ollama server on a free loopback port; records every request it gets."""

    def __init__(
        self,
        models: Mapping[str, Iterable[str] | None] | None = None,
        replies: Iterable[Any] | Mapping[str, Any] | None = None,
        *,
        default: Callable[[str, Mapping[str, Any], int], Any] | None = default_reply,
        role_of: Callable[[Mapping[str, Any]], str] = detect_role,
        version: str = "0.12.6",
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: str | Path | None = None,
        fail_first: int = 0,
        fail_status: int = 500,
        resident_bytes: tuple[int, int] = (5_100_000_000, 5_100_000_000),
    ) -> None:
        """models: name -> capabilities (None leaves the field out, like an older server).

        default: called as default(role, body, n) when the queues are empty; None answers "" instead.
        log_path: also append every request as one JSON line there (for subprocess tests).
        fail_first: answer the first this many chat requests with HTTP `fail_status` (settable later too).
        resident_bytes: (size, size_vram) /api/ps reports for a loaded model.
        """
        src = DEFAULT_MODELS if models is None else models
        self.models: dict[str, list[str] | None] = {k: None if v is None else list(v) for k, v in src.items()}
        self.queues: dict[str, deque[Any]] = {role: deque() for role in (*ROLES, SHARED)}
        self.default = default
        self.role_of = role_of
        self.version = version
        self.requests: list[dict[str, Any]] = []
        """Every request: {"method", "path", "body", "role"} (role only for chat)."""
        self.log_path = Path(log_path) if log_path else None
        self._defaults_served: dict[str, int] = {}
        self.fail_first = fail_first
        """Chat requests still to fail with `fail_status` before any scripted reply is served."""
        self.fail_status = fail_status
        self.resident_bytes = resident_bytes
        self.load_delay = 0.0
        """Seconds an empty chat (a model load) takes to answer: a slow load for a test to stop a run during."""
        self.loaded: dict[str, Any] = {}
        """Models held in memory (a chat request loads one; keep_alive 0 unloads it again) -> their keep_alive."""
        self._lock = threading.Lock()
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.script(replies)

    # -- scripting -------------------------------------------------------------------------------------

    def script(self, replies: Iterable[Any] | Mapping[str, Any] | None, role: str | None = None) -> None:
        """Queue more replies: a list goes to `role` (or the shared queue), a dict maps role -> list."""
        if replies is None:
            return
        if isinstance(replies, Mapping) and not role and set(replies) <= {*ROLES, SHARED}:
            for name, entries in replies.items():
                self.script(entries, name)
            return
        target = role or SHARED
        if target not in self.queues:
            raise ValueError(f"unknown role {target!r}: use one of {', '.join((*ROLES, SHARED))}")
        with self._lock:
            self.queues[target].extend(_expand(replies))

    def hang(self, seconds: float, role: str | None = None, times: int = 1) -> None:
        """Queue `times` replies that stay silent for `seconds` (then answer empty), like a stuck model."""
        self.script([{"hang": seconds}] * times, role)

    def drop(self, role: str | None = None, times: int = 1) -> None:
        """Queue `times` requests answered by closing the connection, like a server crashing on them."""
        self.script([{"drop": True}] * times, role)

    def fail(self, times: int, status: int = 500, role: str | None = None, message: str = "internal error") -> None:
        """Queue `times` replies failing with HTTP `status`."""
        self.script([{"error": message, "status": status}] * times, role)

    def _take_failure(self) -> int | None:
        """The status to fail this chat request with, while `fail_first` lasts."""
        with self._lock:
            if self.fail_first <= 0:
                return None
            self.fail_first -= 1
            return self.fail_status

    def next_reply(self, role: str, body: Mapping[str, Any]) -> Reply:
        """The reply for one chat request: the role's queue, then the shared one, then the default."""
        with self._lock:
            for name in (role, SHARED):
                queue = self.queues.get(name)
                if queue:
                    return _as_reply(queue.popleft())
            n = self._defaults_served.get(role, 0)
            self._defaults_served[role] = n + 1
        return _as_reply(self.default(role, body, n) if self.default else "")

    # -- what tests read -------------------------------------------------------------------------------

    def chat_requests(self, role: str | None = None) -> list[dict[str, Any]]:
        """Bodies of POST /api/chat requests, oldest first, optionally only one role's; the empty requests that
        only load a model are left out unless asked for with role "load"."""
        with self._lock:
            return [
                r["body"]
                for r in self.requests
                if r["path"] == "/api/chat" and (r.get("role") == role or (role is None and r.get("role") != "load"))
            ]

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if self.log_path:
                with self.log_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL to give ChatOllama / OLLAMA_HOST, e.g. http://127.0.0.1:54321; kept after stop()."""
        if not self._port:
            raise RuntimeError("FakeOllama was never started: call start() or use it as a context manager")
        return f"http://{self._host}:{self._port}"

    def start(self) -> FakeOllama:
        """Bind the port (the same one again after a stop) and serve from a daemon thread."""
        if self._server is not None:
            return self
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = QuietServer((self._host, self._port), Handler)
        # Remember the port so a later start() comes back at the same URL, like a restarted Ollama.
        self._port = self._server.server_address[1]
        self._server.daemon_threads = True
        # A short poll interval makes stop() quick; the default 0.5 s adds up over a test session.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="fake-ollama", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port; later requests get 'connection refused', like a dead Ollama."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def from_script(cls, script: Mapping[str, Any], **kwargs: Any) -> FakeOllama:
        """Build from the JSON script format described in the module docstring."""
        return cls(
            models=script.get("models"),
            replies=script.get("replies"),
            version=script.get("version", "0.12.6"),
            fail_first=int(script.get("fail_first", 0)),
            fail_status=int(script.get("fail_status", 500)),
            **kwargs,
        )


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection; every reply closes it, so a stopped server cannot linger on keep-alives."""

    protocol_version = "HTTP/1.1"  # chunked streaming like the real server; a cut stream is then an error
    owner: FakeOllama

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    # -- plumbing --------------------------------------------------------------------------------------

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            data = {"_raw": raw.decode("utf-8", "replace")}
        return data if isinstance(data, dict) else {"_raw": data}

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _chunk(self, line: Mapping[str, Any]) -> None:
        data = json.dumps(line).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # -- routes ----------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self.owner._record({"method": "GET", "path": self.path, "body": None})
        if self.path == "/api/tags":
            self._json(200, {"models": [self._tag(name) for name in self.owner.models]})
        elif self.path == "/api/ps":
            self._json(200, {"models": [self._running(name, keep) for name, keep in self.owner.loaded.items()]})
        elif self.path == "/api/version":
            self._json(200, {"version": self.owner.version})
        elif self.path in ("/", ""):
            self._json(200, "Ollama is running")
        else:
            self._json(404, {"error": "404 page not found"})

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/api/chat":
            # An empty chat only loads the model: its own role, so no test counts it as a model call.
            role = "load" if body.get("messages") == [] else self.owner.role_of(body)
            self.owner._record({"method": "POST", "path": self.path, "body": body, "role": role})
            self._chat(body, role)
            return
        self.owner._record({"method": "POST", "path": self.path, "body": body})
        if self.path == "/api/show":
            self._show(body)
        else:
            self._json(404, {"error": "404 page not found"})

    def _tag(self, name: str) -> dict[str, Any]:
        caps = self.owner.models[name] or []
        return {
            "name": name,
            "model": name,
            "modified_at": "2025-01-01T00:00:00Z",
            "size": 4_100_000_000,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {
                "format": "gguf",
                "family": "llama",
                "families": ["llama", "clip"] if "vision" in caps else ["llama"],
                "parameter_size": "7B",
                "quantization_level": "Q4_0",
            },
        }

    def _running(self, name: str, keep_alive: Any) -> dict[str, Any]:
        """One /api/ps entry, as the real server lists a loaded model."""
        size, vram = self.owner.resident_bytes
        return {
            **self._tag(name),
            "expires_at": "2099-01-01T00:00:00Z" if keep_alive in (-1, "-1") else "2026-01-01T00:05:00Z",
            "size": size,
            "size_vram": vram,
            "context_length": 4096,
        }

    def _load(self, name: str, keep_alive: Any) -> None:
        """What a request does to the server's memory: loads the model, or unloads it with keep_alive 0."""
        with self.owner._lock:
            if keep_alive in (0, "0", "0s"):
                self.owner.loaded.pop(name, None)
            else:
                self.owner.loaded[name] = keep_alive

    def _lookup(self, name: str) -> str | None:
        """Resolve a name the way Ollama does: an untagged name means ':latest'."""
        models = self.owner.models
        if name in models:
            return name
        if ":" not in name and f"{name}:latest" in models:
            return f"{name}:latest"
        return None

    def _show(self, body: Mapping[str, Any]) -> None:
        name = self._lookup(str(body.get("model") or body.get("name") or ""))
        if name is None:
            self._json(404, {"error": f"model '{body.get('model')}' not found"})
            return
        reply: dict[str, Any] = {
            "license": "",
            "modelfile": f"FROM {name}\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": self._tag(name)["details"],
            "model_info": {"general.architecture": "llama", "general.parameter_count": 7_000_000_000},
            "modified_at": "2025-01-01T00:00:00Z",
        }
        caps = self.owner.models[name]
        if caps is not None:  # None: leave the field out like older servers
            reply["capabilities"] = caps
        self._json(200, reply)

    def _chat(self, body: Mapping[str, Any], role: str) -> None:
        requested = str(body.get("model") or "")
        name = self._lookup(requested)
        if name is None:
            self._json(404, {"error": f'model "{requested}" not found, try pulling it first'})
            return
        caps = self.owner.models[name]
        think = body.get("think")
        thinks = caps is not None and "thinking" in caps
        if think is True and caps is not None and not thinks:
            # The real server refuses think=true for a model without the capability (false is fine).
            self._json(400, {"error": f'"{requested}" does not support thinking'})
            return
        if body.get("messages") == []:
            # An empty chat only loads the model (how clients warm one up), answering when it is loaded.
            time.sleep(self.owner.load_delay)
            self._load(name, body.get("keep_alive"))
            self._json(
                200,
                {
                    "model": requested,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "load",
                    "done": True,
                },
            )
            return
        self._load(name, body.get("keep_alive"))
        failure = self.owner._take_failure()
        if failure is not None:
            self._json(failure, {"error": f"scripted failure (HTTP {failure})"})
            return
        reply = self.owner.next_reply(role, body)
        if reply.hangup:
            self._drop()
            return
        if reply.status != 200:
            self._json(reply.status, {"error": reply.error or "internal error"})
            return
        if reply.delay:
            time.sleep(reply.delay)

        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        # The client may give up mid-stream (timeout, Ctrl-C): nothing to tell anyone then.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._stream(body, requested, reply, think_out=thinks and think is not False)

    def _stream(self, body: Mapping[str, Any], model: str, reply: Reply, *, think_out: bool) -> None:
        started = time.monotonic()
        base = {"model": model}
        if think_out and reply.thinking:
            for piece in _split(reply.thinking, reply.chunks):
                msg = {"role": "assistant", "content": "", "thinking": piece}
                self._chunk({**base, "created_at": _now(), "message": msg, "done": False})
        pieces = _split(reply.content, reply.chunks)
        for i, piece in enumerate(pieces):
            if reply.drop_after is not None and i >= reply.drop_after:
                self._drop()
                return
            msg = {"role": "assistant", "content": piece}
            line = {**base, "created_at": _now(), "message": msg, "done": False}
            if i == 0 and reply.logprobs is not None and body.get("logprobs"):
                line["logprobs"] = reply.logprobs
            self._chunk(line)
        if reply.drop_after is not None and reply.drop_after >= len(pieces):
            self._drop()
            return
        if reply.error is not None:
            self._chunk({"error": reply.error})
            self.wfile.write(b"0\r\n\r\n")
            return
        if reply.tool_calls:
            calls = [{"function": {"name": c["name"], "arguments": c.get("arguments", {})}} for c in reply.tool_calls]
            msg = {"role": "assistant", "content": "", "tool_calls": calls}
            self._chunk({**base, "created_at": _now(), "message": msg, "done": False})
        elapsed = max(1, int((time.monotonic() - started) * 1e9))
        self._chunk(
            {
                **base,
                "created_at": _now(),
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "stop",
                "total_duration": elapsed + 1_000_000,
                "load_duration": 1_000_000,
                "prompt_eval_count": max(1, len(message_text(body).split())),
                "prompt_eval_duration": elapsed // 2 + 1,
                "eval_count": max(1, len(reply.content.split())),
                "eval_duration": elapsed // 2 + 1,
            }
        )
        self.wfile.write(b"0\r\n\r\n")

    def _drop(self) -> None:
        """Cut the connection without finishing the chunked body, as a crashed server does."""
        self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()


def main(argv: list[str] | None = None) -> int:
    """Run the fake as a process; print its URL first, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description="Scripted fake Ollama server for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--script", type=Path, help="JSON file: {models, replies, version}")
    parser.add_argument("--log", type=Path, help="append every request as one JSON line to this file")
    args = parser.parse_args(argv)

    script = json.loads(args.script.read_text(encoding="utf-8")) if args.script else {}
    fake = FakeOllama.from_script(script, host=args.host, port=args.port, log_path=args.log).start()
    print(fake.url, flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
