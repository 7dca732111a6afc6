"""What the fake image servers' request handlers share (tests/fake_a1111.py, tests/fake_comfyui.py): no log
lines, no Nagle delay between headers and body, and no traceback when a client has gone away mid-answer."""

from __future__ import annotations

import json
import socket
from contextlib import suppress
from http.server import BaseHTTPRequestHandler
from typing import Any


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
