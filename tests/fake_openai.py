"""A scripted stand-in for an OpenAI-compatible `/v1` server, for tests that drive the real ChatOpenAI client.

In-process::

    with FakeOpenAI(models={"vis": VISION}, key="sk-test-0123456789") as fake:
        ... ChatOpenAI(base_url=fake.url, api_key="sk-test-0123456789", model="vis") ...
        assert fake.chat_requests()[-1]["temperature"] == 0

or as a process for CLI tests (`python tests/fake_openai.py --script script.json`): the first line on stdout is
the base URL (ending in /v1); it serves until SIGTERM or SIGINT.

Models are name -> capabilities: {"vision": bool, "json_schema": bool}. A request that sends an image to a model
without vision gets HTTP 400, as text-only servers answer; one asking `response_format: json_schema` of a model
without it gets HTTP 400 too. With `key` set, a request without `Authorization: Bearer <key>` gets HTTP 401, whose
message quotes the key it was sent (some servers do: the client must never pass that on).

With `litellm` set ("auth" or "no_db") it answers as LiteLLM's proxy does: a wrong or missing key, an unknown
model and an image sent to a model without vision all get HTTP 400, told apart only by their bodies (a key
refused with `auth_error`, or `no_db_connection` where the proxy has no key database; an unknown model with
"Invalid model name passed"; an image with "litellm.BadRequestError ... image_url is only supported"). Its
`GET /v1/models` checks the key the same way.

Replies: each role ("judge", "propose", "compare", "summarize", "probe", "text") has a queue, then the shared
"any" queue, then a default (a judge whose score climbs by one per call, answering in JSON when a schema was
asked for). An entry is a str (the content), {"status": N, "message": "..."} (an HTTP error), or
{"garbled": true} (a 200 whose body is not JSON). Both `stream: true` (server-sent events) and plain replies are
served, so the client's streamed and non-streamed paths both run.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

try:
    from tests.fake_http import QuietServer
except ModuleNotFoundError:  # run as a process (`python tests/fake_openai.py`): its own folder is on the path
    from fake_http import QuietServer

VISION = {"vision": True, "json_schema": True}
TEXT_ONLY = {"vision": False, "json_schema": True}
NO_SCHEMA = {"vision": True, "json_schema": False}
ROLES = ("judge", "propose", "compare", "summarize", "probe", "text")
SHARED = "any"


def role_of(body: Mapping[str, Any]) -> str:
    """Which refineloop role sent a request, from its system prompt (the probe has none)."""
    messages = body.get("messages") or []
    system = next((str(m.get("content")) for m in messages if m.get("role") in ("system", "developer")), "")
    if not system:
        return "probe"
    for marker, role in (("WINNER:", "compare"), ("SCORE:", "judge"), ("IDEA:", "propose"), ("words", "summarize")):
        if marker in system:
            return role
    return "text"


def has_image(body: Mapping[str, Any]) -> bool:
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content):
            return True
    return False


def default_reply(role: str, body: Mapping[str, Any], n: int) -> str:
    """What a cooperative vision model says when nothing is scripted."""
    wants_schema = (body.get("response_format") or {}).get("type") == "json_schema"
    if role == "judge":
        score = min(10, 4 + n)
        verdict = "DONE" if score >= 9 else "CONTINUE"
        idea = f"the same hotdog with flames, embers and a white-hot glow, step {n + 1}"
        if wants_schema:
            return json.dumps(
                {"score": score, "critique": "warm but not yet ablaze", "verdict": verdict, "next_idea": idea}
            )
        return f"SCORE: {score}\nCRITIQUE: warm but not yet ablaze\n{verdict}: {idea}"
    if role == "propose":
        return f"IDEA: a hotdog wrapped in roaring flames and molten lava, try {n + 1}"
    if role == "compare":
        return "WINNER: A\nWHY: it burns brighter"
    if role == "summarize":
        return "hotdog in roaring flames, glowing embers, heat haze"
    return "ok"


class FakeOpenAI:
    """A scripted OpenAI-compatible server on a free loopback port; records every request it gets."""

    def __init__(
        self,
        models: Mapping[str, Mapping[str, bool]] | None = None,
        replies: Iterable[Any] | Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: str | Path | None = None,
        litellm: str | None = None,
    ) -> None:
        self.models = {name: dict(caps) for name, caps in (models or {"vis": VISION}).items()}
        self.key = key
        self.litellm = litellm
        self.queues: dict[str, deque[Any]] = {role: deque() for role in (*ROLES, SHARED)}
        self.requests: list[dict[str, Any]] = []
        self.log_path = Path(log_path) if log_path else None
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()
        self._host, self._port = host, port
        self._server: ThreadingHTTPServer | None = None
        self.script(replies)

    def script(self, replies: Iterable[Any] | Mapping[str, Any] | None, role: str | None = None) -> None:
        """Queue replies: a list goes to `role` (or the shared queue), a dict maps role -> list."""
        if replies is None:
            return
        if isinstance(replies, Mapping):
            for name, entries in replies.items():
                self.script(entries, name)
            return
        with self._lock:
            self.queues[role or SHARED].extend(replies)

    def next_reply(self, role: str, body: Mapping[str, Any]) -> Any:
        with self._lock:
            for name in (role, SHARED):
                if self.queues[name]:
                    return self.queues[name].popleft()
            n = self._served.get(role, 0)
            self._served[role] = n + 1
        return default_reply(role, body, n)

    def chat_requests(self, role: str | None = None) -> list[dict[str, Any]]:
        """Bodies of chat-completion requests, oldest first, optionally one role's."""
        with self._lock:
            return [
                r["body"]
                for r in self.requests
                if r["path"].endswith("/chat/completions") and (role is None or r["role"] == role)
            ]

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if self.log_path:
                with self.log_path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")

    @property
    def url(self) -> str:
        """The base URL a client is given, ending in /v1."""
        return f"http://{self._host}:{self._port}/v1"

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = QuietServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, data: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _error(self, status: int, message: str, code: str = "") -> None:
        error = {"message": message, "type": "invalid_request_error", "code": code or None, "param": None}
        self._send(status, json.dumps({"error": error}).encode())

    def _litellm_error(self, message: str, kind: str | None) -> None:
        """An error body as LiteLLM's proxy writes it: HTTP 400, the code as a string, `param` often "None"."""
        error = {"message": message, "type": kind, "param": None, "code": "400"}
        self._send(400, json.dumps({"error": error}).encode())

    def _key_refused(self) -> bool:
        """Answer a request whose key is wrong or missing (True), as the server's mode does; False when it passes."""
        key = self.owner.key
        if key is None or self._auth() == f"Bearer {key}":
            return False
        sent = self._auth().removeprefix("Bearer ")
        if self.owner.litellm == "no_db":
            self._litellm_error("No connected db.", "no_db_connection")
        elif self.owner.litellm:
            self._litellm_error(
                f"Authentication Error, Invalid proxy server token passed. Received API Key = sk-...{sent[-4:]}, "
                "Key Hash (Token) =0f3a. Unable to find token in cache or `LiteLLM_VerificationTokenTable`",
                "auth_error",
            )
        else:
            self._error(401, f"Incorrect API key provided: {sent}. You can find your key on your account page.")
        return True

    def do_GET(self) -> None:
        self.owner._record({"method": "GET", "path": self.path, "body": None, "role": None, "auth": self._auth()})
        if self.path.endswith("/models") and self._key_refused():
            return
        if self.path.endswith("/models"):
            data = [{"id": name, "object": "model", "owned_by": "fake"} for name in self.owner.models]
            self._send(200, json.dumps({"object": "list", "data": data}).encode())
        else:
            self._error(404, "not found")

    def _auth(self) -> str:
        return self.headers.get("Authorization") or ""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        role = role_of(body)
        self.owner._record({"method": "POST", "path": self.path, "body": body, "role": role, "auth": self._auth()})
        if not self.path.endswith("/chat/completions"):
            self._error(404, f"unknown path {self.path}")
            return
        if self._key_refused():
            return
        model = str(body.get("model") or "")
        caps = self.owner.models.get(model)
        if caps is None and self.owner.litellm:
            self._litellm_error(
                f"/chat/completions: Invalid model name passed in model={model}. Call `/v1/models` to view available "
                "models for your key.",
                "invalid_request_error",
            )
            return
        if caps is None:
            self._error(404, f"The model `{model}` does not exist or you do not have access to it.", "model_not_found")
            return
        if has_image(body) and not caps.get("vision"):
            message = "Invalid content type. image_url is only supported by certain models."
            if self.owner.litellm:
                self._litellm_error(f"litellm.BadRequestError: OpenAIException - {message}", None)
            else:
                self._error(400, message)
            return
        if (body.get("response_format") or {}).get("type") == "json_schema" and not caps.get("json_schema"):
            self._error(400, "response_format of type json_schema is not supported by this server")
            return
        reply = self.owner.next_reply(role, body)
        if isinstance(reply, Mapping) and "status" in reply:
            self._error(int(reply["status"]), str(reply.get("message") or "server error"))
            return
        if isinstance(reply, Mapping) and reply.get("garbled"):
            self._send(200, b"<html>upstream proxy error</html>", "text/html")
            return
        if isinstance(reply, Mapping) and "delay" in reply:
            time.sleep(float(reply["delay"]))
            reply = str(reply.get("content", "ok"))
        content = str(reply)
        if body.get("stream"):
            self._stream(model, content, body)
        else:
            self._send(200, json.dumps(self._completion(model, content)).encode())

    def _completion(self, model: str, content: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": len(content.split()), "total_tokens": 10},
        }

    def _stream(self, model: str, content: str, body: Mapping[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        pieces = [content[i : i + 12] for i in range(0, len(content), 12)] or [""]
        events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
        events += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                {**base, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}
            )
        for event in events:
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def main(argv: list[str] | None = None) -> int:
    """Serve from a JSON script ({"models", "replies", "key"}); print the base URL first."""
    parser = argparse.ArgumentParser(description="Scripted fake OpenAI-compatible server for tests.")
    parser.add_argument("--script", type=Path)
    parser.add_argument("--log", type=Path)
    args = parser.parse_args(argv)
    script = json.loads(args.script.read_text(encoding="utf-8")) if args.script else {}
    fake = FakeOpenAI(
        script.get("models"),
        script.get("replies"),
        key=script.get("key"),
        log_path=args.log,
        litellm=script.get("litellm"),
    ).start()
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
