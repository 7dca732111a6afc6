"""ComfyUI's HTTP and websocket API, as refineloop uses it: upload, queue, follow, fetch, interrupt.

- `POST /upload/image` (multipart) puts an init image on the server, named by its content, so sending it again
  changes nothing;
- `POST /prompt` queues a filled-in workflow with this client's id; an invalid one answers HTTP 400 with the
  nodes at fault, which becomes one line;
- the websocket `/ws?clientId=` says when each prompt is done (`executing` with no node, or
  `execution_success`) or failed (`execution_error`, `execution_interrupted`); when it drops, or never opens,
  `GET /history/{id}` is polled instead, and `GET /queue` tells a prompt that is still waiting from one a
  restarted server has lost;
- `GET /view` fetches each output image;
- Ctrl-C while waiting takes this client's prompts off the queue and sends `POST /interrupt`.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.parse
import uuid
from collections.abc import Iterable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refineloop.backends.chat.text_safety import clean_model_text
from refineloop.backends.image.http_calls import Server, ServerDown, ServerError, ServerRefused

if TYPE_CHECKING:
    from PIL import Image
    from websockets.sync.client import ClientConnection

#: Seconds between two looks at the history when the websocket is not there, and the longest silence on the
#: socket before the history is asked anyway (a server may finish a prompt without a word, all of it cached).
POLL_SECONDS = 0.2
QUIET_SECONDS = 2.0
#: Seconds between two looks at the history of a prompt announced done but not yet filed there.
FILING_SECONDS = 0.002
#: Seconds to open the websocket; past them the client polls.
SOCKET_OPEN_SECONDS = 3.0


class ComfyClient:
    """One ComfyUI server, reached at `url` under one client id."""

    def __init__(self, url: str) -> None:
        self.server = Server("ComfyUI", url.rstrip("/"), "--comfyui-url")
        self.client_id = f"refineloop-{uuid.uuid4().hex}"
        self.socket_drops = 0
        """How often the websocket dropped (or never opened) and the client polled instead."""
        self._socket: ClientConnection | None = None
        self._sockets = ExitStack()

    def check(self) -> None:
        """Fail in one line now when no ComfyUI answers at the URL."""
        stats = self.server.call("GET", "/system_stats")
        if not isinstance(stats, dict):
            raise ServerError(f"{self.server.url} does not answer like ComfyUI (/system_stats): check --comfyui-url")

    def upload(self, path: str) -> str:
        """Put the image at `path` on the server; the name a LoadImage node reads it by."""
        data = Path(path).read_bytes()
        name = upload_name(data)
        boundary = uuid.uuid4().hex
        body = form_data(
            boundary,
            [
                (f'name="image"; filename="{name}"\r\nContent-Type: image/png', data),
                ('name="type"', b"input"),
                ('name="overwrite"', b"true"),
            ],
        )
        raw = self.server.send(
            "POST", "/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("name"), str):
            raise ServerError(f"ComfyUI at {self.server.url} answered an upload without the image's name")
        sub = str(answer.get("subfolder") or "")
        return f"{sub}/{answer['name']}" if sub else str(answer["name"])

    def progress_socket(self) -> ClientConnection | None:
        """The websocket that reports this client's progress, opened once and kept (a dropped one is opened
        again at the next call); None when it cannot be opened, and the client then polls."""
        if self._socket is not None:
            return self._socket
        from websockets.sync.client import connect

        address = urllib.parse.urlsplit(self.server.url)
        scheme = "wss" if address.scheme == "https" else "ws"
        target = f"{scheme}://{address.netloc}{address.path}/ws?clientId={self.client_id}"
        try:
            self._socket = self._sockets.enter_context(
                connect(target, open_timeout=SOCKET_OPEN_SECONDS, close_timeout=1.0, max_size=None, compression=None)
            )
        except Exception:  # any failure to open only means: poll the history instead
            self.socket_drops += 1
        return self._socket

    def drop_socket(self) -> None:
        """Close the websocket (it dropped, or the client is done with it)."""
        self._socket = None
        with suppress(Exception):  # closing a socket that already failed may fail again
            self._sockets.close()

    def queue(self, workflow: dict[str, Any]) -> str:
        """Queue a filled-in workflow; its prompt id. One line naming the nodes when ComfyUI refuses it."""
        try:
            answer = self.server.call("POST", "/prompt", {"prompt": workflow, "client_id": self.client_id})
        except ServerRefused as exc:
            if exc.status == 400:
                raise ServerError(f"ComfyUI refused the workflow: {node_errors(exc.body)}") from None
            raise
        if not isinstance(answer, dict) or not isinstance(answer.get("prompt_id"), str):
            raise ServerError(f"ComfyUI at {self.server.url} queued a prompt without answering its id")
        if answer.get("node_errors"):
            raise ServerError(f"ComfyUI refused the workflow: {node_errors(json.dumps(answer).encode())}")
        return str(answer["prompt_id"])

    def wait(self, ids: list[str], socket: ClientConnection | None) -> dict[str, dict[str, Any]]:
        """Each prompt's history entry, once all are done; one line for a failed or lost prompt (the caller
        cancels the prompts on Ctrl-C: it also knows those it was still queueing)."""
        pending, done = list(ids), {}
        told: set[str] = set()  # done by the socket's word; ComfyUI files the history a moment after saying so
        quiet_since = time.monotonic()
        while pending:
            if socket is None:
                asked: Iterable[str] = list(pending)
            else:
                try:
                    # Briefly while a prompt announced done awaits its history; otherwise until the next event.
                    finished = self._listen(socket, pending, FILING_SECONDS if told else POLL_SECONDS)
                except ServerError:
                    raise
                except Exception:  # the socket dropped (closed, reset, garbled): poll the history from here on
                    socket, self.socket_drops = None, self.socket_drops + 1
                    self.drop_socket()
                    continue
                told.update(finished)
                quiet = time.monotonic() - quiet_since > QUIET_SECONDS
                if finished or quiet:
                    quiet_since = time.monotonic()
                asked = list(pending) if quiet else [prompt_id for prompt_id in pending if prompt_id in told]
            for prompt_id in asked:
                entry = self.history(prompt_id)
                if entry is not None:
                    done[prompt_id] = entry
                    pending.remove(prompt_id)
                    told.discard(prompt_id)
                elif socket is None:
                    self._check_queued(prompt_id)
            if pending and socket is None:
                time.sleep(POLL_SECONDS)
        return done

    def _listen(self, socket: ClientConnection, pending: list[str], wait: float) -> list[str]:
        """Prompts the socket says are done within `wait` seconds; ServerError for one it says failed."""
        try:
            message = socket.recv(timeout=wait)
        except TimeoutError:
            return []
        if isinstance(message, bytes):
            return []  # a preview image
        event = json.loads(message)
        kind, data = event.get("type"), event.get("data") or {}
        prompt_id = data.get("prompt_id")
        if prompt_id not in pending:
            return []
        if kind == "execution_error":
            raise ServerError(execution_error(data))
        if kind == "execution_interrupted":
            raise ServerError(
                f"ComfyUI interrupted prompt {prompt_id} at node {data.get('node_id')}: someone cancelled it on the "
                "server; `refineloop resume` draws it again"
            )
        if (kind == "executing" and data.get("node") is None) or kind == "execution_success":
            return [str(prompt_id)]
        return []

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry once it has finished; None while it has not; ServerError if it failed."""
        answer = self.server.call("GET", f"/history/{urllib.parse.quote(prompt_id)}")
        entry = answer.get(prompt_id) if isinstance(answer, dict) else None
        if not isinstance(entry, dict):
            return None
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            for message in status.get("messages") or []:
                if isinstance(message, list) and len(message) == 2 and message[0] == "execution_error":
                    raise ServerError(execution_error(message[1]))
            raise ServerError(f"ComfyUI failed prompt {prompt_id} without saying why: see the server's own log")
        if status and not status.get("completed", True):
            return None
        return entry

    def _check_queued(self, prompt_id: str) -> None:
        """ServerError when the prompt is neither finished nor queued: the server was restarted and lost it."""
        answer = self.server.call("GET", "/queue")
        queued = [
            item[1]
            for key in ("queue_running", "queue_pending")
            for item in (answer or {}).get(key, [])
            if isinstance(item, list) and len(item) > 1
        ]
        if prompt_id not in queued and self.history(prompt_id) is None:
            raise ServerDown(
                f"ComfyUI at {self.server.url} lost prompt {prompt_id} (was it restarted?): `refineloop resume` "
                "sends it again"
            )

    def image(self, reference: dict[str, Any]) -> Image.Image:
        """One output image, by its history reference."""
        from PIL import Image

        query = urllib.parse.urlencode(
            {key: str(reference.get(key) or "") for key in ("filename", "subfolder", "type")}
        )
        raw = self.server.send("GET", f"/view?{query}", None, {})
        try:
            with Image.open(io.BytesIO(raw)) as picture:
                return picture.convert("RGB")
        except OSError:
            raise ServerError(
                f"ComfyUI at {self.server.url} sent {clean_model_text(str(reference.get('filename')))} as something "
                f"that is not an image: check {self.server.flag} points at the server itself, then resume the run"
            ) from None

    def cancel(self, ids: list[str]) -> None:
        """Take `ids` off the queue and interrupt the one of them drawing (never another client's prompt);
        a server that is gone needs neither."""
        try:
            self.server.call("POST", "/queue", {"delete": ids}, timeout=2.0)
            for prompt_id in self._running(ids):
                self.server.call("POST", "/interrupt", {"prompt_id": prompt_id}, timeout=2.0)
        except ServerError:
            return

    def _running(self, ids: list[str]) -> list[str]:
        answer = self.server.call("GET", "/queue", timeout=2.0)
        running = (answer or {}).get("queue_running", []) if isinstance(answer, dict) else []
        return [item[1] for item in running if isinstance(item, list) and len(item) > 1 and item[1] in ids]


def form_data(boundary: str, parts: list[tuple[str, bytes]]) -> bytes:
    """A multipart/form-data body; each part is its Content-Disposition parameters (and headers) and its bytes."""
    mark = b"--" + boundary.encode()
    body = b"".join(
        mark + b"\r\nContent-Disposition: form-data; " + head.encode() + b"\r\n\r\n" + value + b"\r\n"
        for head, value in parts
    )
    return body + mark + b"--\r\n"


def upload_name(data: bytes) -> str:
    """The name an init image is uploaded under: its content's, so the same picture is the same file."""
    return f"refineloop-{hashlib.sha256(data).hexdigest()[:20]}.png"


def execution_error(data: dict[str, Any]) -> str:
    """ComfyUI's `execution_error` as one line: the node, its class and the message."""
    message = " ".join(clean_model_text(str(data.get("exception_message") or "no message")).split())
    return (
        f"ComfyUI failed at node {data.get('node_id')} ({data.get('node_type') or 'unknown node'}): "
        f"{data.get('exception_type') or 'error'}: {message}"
    )


def node_errors(body: bytes) -> str:
    """The `node_errors` of a refused prompt as one line: each node, its class and its first message."""
    try:
        answer = json.loads(body)
    except ValueError:
        return clean_model_text(body.decode("utf-8", "replace"))[:300]
    parts = []
    for node_id, report in (answer.get("node_errors") or {}).items():
        errors = report.get("errors") or [{}]
        first = errors[0]
        detail = f"{first.get('message', '')}: {first.get('details', '')}".strip(": ")
        parts.append(f"node {node_id} ({report.get('class_type', '?')}): {detail}")
    error = answer.get("error")
    head = error.get("message") if isinstance(error, dict) else error
    return " ".join(clean_model_text("; ".join(parts) or str(head or "no reason given")).split())
