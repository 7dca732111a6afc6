"""What the fake servers share. Every one of them (Ollama, OpenAI-compatible, A1111, ComfyUI, the spoiling proxy)
runs on `QuietServer`; the image servers' request handlers are also `QuietHandler`s: no log lines, no Nagle delay
between headers and body, and no traceback when a client has gone away mid-answer."""

from __future__ import annotations

import json
import socket
import sys
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that says nothing when a client went away mid-answer. A handler thread can outlive
    the test that started its server (a stop ends the accept loop, not the answers under way), and socketserver
    would print its traceback into whichever test runs next, one that may check "one line, no traceback"."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class QuietHandler(BaseHTTPRequestHandler):
    """A handler that answers with `reply` and prints nothing."""

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the client's delayed ACK
        # hold the body back for up to 40 ms (a real server writes both at once).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        # Any write to a client already gone (a reply, a websocket handshake, a frame) ends this request quietly:
        # socketserver would print its traceback to stderr, into a test that checks "one line, no traceback".
        with suppress(ConnectionError):
            super().handle()

    def reply(self, status: int, body: Any, kind: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        # A client stopped with Ctrl-C, or done with an error status, may have gone before the headers are out.
        with suppress(ConnectionError):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
