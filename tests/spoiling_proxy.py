"""A proxy on 127.0.0.1 in front of any fake server that spoils the answers of one endpoint.

Every request is passed to the server behind it; from the `nth` request whose path starts with `path` on, the
answer is replaced by a broken one of a chosen `kind`:

- `binary`: 200 with bytes that are no text at all (a PNG header, NULs, stray high bytes);
- `encoding`: the real answer with a byte that is not UTF-8 put inside its first string (a Latin-1 server);
- `cut`: the first half of the real answer, then the connection closed (a body cut mid-JSON, a stream cut
  mid-line), with no length announced, so the client sees a clean end;
- `lines`: the real answer's first half up to its last whole line or event (a stream cut between two lines,
  so every line the client reads is whole and only the closing one is missing);
- `html`: 200 with a web page (a proxy's or a login page) where JSON was expected.

Websocket upgrades are refused, so clients that listen on one fall back to asking over plain HTTP.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from tests.fake_http import QuietServer

KINDS = ("binary", "encoding", "cut", "html")
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00\x80\x81\xc3\x28\xa0\xa1\x00"
HTML = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
_HOP = {"connection", "transfer-encoding", "content-length", "keep-alive"}


def spoiled(kind: str, body: bytes) -> bytes:
    """The broken version of a real answer `body`."""
    if kind == "binary":
        return BINARY
    if kind == "html":
        return HTML
    if kind == "cut":
        return body[: max(1, len(body) // 2)]
    if kind == "lines":
        half = body[: len(body) // 2]
        end = half.rfind(b"\n\n") if b"\n\n" in half else half.rfind(b"\n")
        return half[: end + 1]
    for marker in (b'": "', b'":"'):
        at = body.find(marker)
        if at >= 0:
            at += len(marker)
            return body[:at] + b"caf\xe9 " + body[at:]
    return b"\xe9" + body


class SpoilingProxy:
    """Forwards to `upstream`, spoiling `path`'s answers from the `nth` on (see the module notes)."""

    def __init__(self, upstream: str, path: str, kind: str, nth: int = 1, *, distinct: bool = False) -> None:
        self.upstream, self.path, self.kind, self.nth = urlsplit(upstream), path, kind, nth
        self.distinct = distinct
        """Count each full path once (`/history/<id>` polled until its prompt is done is one request), so that
        the nth is the nth thing asked for, however often a client had to ask."""
        self.seen = 0
        """How many requests matched `path` so far (with `distinct`, how many different full paths)."""
        self.paths: list[str] = []
        self.spoilt = 0
        """How many answers were spoilt."""
        self.lock = threading.Lock()

    def should_spoil(self, path: str) -> bool:
        if not path.startswith(self.path):
            return False
        with self.lock:
            if not self.distinct:
                self.seen += 1
                hit = self.seen >= self.nth
            else:
                if path not in self.paths:
                    self.paths.append(path)
                self.seen = len(self.paths)
                hit = self.paths.index(path) + 1 >= self.nth
            self.spoilt += hit
            return hit

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list[Any], bytes]:
        host, port = self.upstream.hostname or "127.0.0.1", self.upstream.port or 80
        connection = http.client.HTTPConnection(host, port, timeout=60)
        try:
            connection.request(method, path, body or None, headers)
            answer = connection.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            connection.close()


class _Handler(BaseHTTPRequestHandler):
    proxy: SpoilingProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _any(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP | {"host"}}
        status, answer_headers, answer = self.proxy.forward(self.command, self.path, headers, body)
        if self.proxy.should_spoil(self.path):
            self._spoiled(answer_headers, spoiled(self.proxy.kind, answer))
            return
        self.send_response(status)
        for name, value in answer_headers:
            if name.lower() not in _HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _spoiled(self, answer_headers: list[Any], body: bytes) -> None:
        kind = self.proxy.kind
        kept = dict((k.lower(), v) for k, v in answer_headers).get("content-type", "application/json")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8" if kind == "html" else kept)
        if kind in ("cut", "lines"):
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = kind in ("cut", "lines")

    do_GET = do_POST = do_DELETE = do_PUT = _any


@contextmanager
def spoiling_proxy(
    upstream: str, path: str, kind: str, nth: int = 1, *, distinct: bool = False
) -> Iterator[tuple[SpoilingProxy, str]]:
    """A running proxy in front of `upstream` and its base URL (with upstream's path); stopped after the block."""
    proxy = SpoilingProxy(upstream, path, kind, nth, distinct=distinct)
    server = QuietServer(("127.0.0.1", 0), type("BoundHandler", (_Handler,), {"proxy": proxy}))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy, f"http://127.0.0.1:{server.server_address[1]}{proxy.upstream.path.rstrip('/')}"
    finally:
        server.shutdown()
        server.server_close()
