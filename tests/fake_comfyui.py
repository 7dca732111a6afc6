"""A ComfyUI stand-in on 127.0.0.1 that follows ComfyUI's published HTTP and websocket API (server.py).

It runs prompts one at a time on a worker thread, after validating them as ComfyUI does (an unknown node class
is a 400 with `node_errors`), and executes a small set of node classes for real: text encoders, empty latents,
LoadImage + VAEEncode, KSampler / KSamplerAdvanced, VAEDecode, SaveImage. "Drawing" is the sketch painter at the
sampler's seed and prompt, blended towards the init image for image-to-image, so images differ by prompt and seed
as a real model's do. Progress goes to each client's websocket (`/ws?clientId=`), opened with a hand-written
RFC 6455 handshake. Knobs let a test make prompts slow, fail, lose their websocket, or vanish in a restart.
"""

from __future__ import annotations

import base64
import email.parser
import hashlib
import io
import json
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import ThreadingHTTPServer
from typing import Any

from PIL import Image

from refineloop.backends.demo.sketch import paint, read_scene
from tests.fake_http import QuietHandler, QuietServer

KNOWN = {
    "CheckpointLoaderSimple",
    "CLIPTextEncode",
    "EmptyLatentImage",
    "LoadImage",
    "VAEEncode",
    "VAEDecode",
    "KSampler",
    "KSamplerAdvanced",
    "SaveImage",
    "PreviewImage",
}
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeComfyUI:
    """The server's state and the knobs tests turn."""

    def __init__(self) -> None:
        self.delay = 0.0
        """Seconds each prompt takes to draw (progress events go out meanwhile)."""
        self.fail_word = ""
        """A prompt whose positive text holds this word fails at its sampler with an execution error."""
        self.drop_sockets = False
        """Close every websocket right after its handshake (the client must poll /history)."""
        self.garbage = False
        """Answer POST /prompt with an HTML page instead of JSON."""
        self.socket_garbage: list[tuple[int, bytes]] = []
        """Frames (opcode, payload) sent on every websocket right after its handshake, before anything true: a
        proxy or a server build that garbles the socket (text that is not JSON, JSON of another shape, bytes that
        are not UTF-8 in a text frame)."""
        self.history_lag = 0.0
        """Seconds between announcing a prompt done on the websocket and filing its history."""
        self.restart_at = 0
        """When the Nth prompt arrives, forget every queued and finished prompt and drop every socket."""
        self.down_at = 0
        """When the Nth prompt arrives, accept it, then shut the whole server down (nothing answers after)."""
        self.server: ThreadingHTTPServer | None = None
        self.prompts: list[dict[str, Any]] = []
        """Every workflow received through POST /prompt, in order."""
        self.ids: list[str] = []
        """The id given to each of those prompts."""
        self.uploads: dict[str, bytes] = {}
        self.interrupts: list[Any] = []
        self.deletes: list[Any] = []
        self.history_calls = 0
        self.most_queued = 0
        """The longest the queue ever was (several prompts queued at once)."""
        self.history: dict[str, dict[str, Any]] = {}
        self.queue: list[tuple[str, dict[str, Any], str]] = []
        self.running: str | None = None
        self.outputs: dict[str, bytes] = {}
        self.sockets: dict[str, list[socket.socket]] = {}
        self.lock = threading.Condition()
        self.interrupted = False
        self.stopped = False

    # ------------------------------------------------------------------------------------------- queueing

    def accept(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        workflow, client = body.get("prompt"), str(body.get("client_id") or "")
        if not isinstance(workflow, dict):
            return 400, {"error": {"type": "invalid_prompt", "message": "no prompt"}, "node_errors": {}}
        bad = {
            node_id: {
                "errors": [{"type": "unknown", "message": "Node class not found", "details": str(n.get("class_type"))}],
                "dependent_outputs": [],
                "class_type": n.get("class_type"),
            }
            for node_id, n in workflow.items()
            if n.get("class_type") not in KNOWN
        }
        if bad:
            return 400, {"error": {"type": "prompt_outputs_failed_validation", "message": "failed"}, "node_errors": bad}
        with self.lock:
            self.prompts.append(workflow)
            prompt_id = str(uuid.uuid4())
            self.ids.append(prompt_id)
            if self.down_at and len(self.prompts) == self.down_at:
                threading.Thread(target=self.go_down, daemon=True).start()
            elif self.restart_at and len(self.prompts) == self.restart_at:
                self.forget()  # this prompt is accepted, then lost with everything else
            else:
                self.queue.append((prompt_id, workflow, client))
                self.most_queued = max(self.most_queued, len(self.queue) + (self.running is not None))
                self.lock.notify_all()
        return 200, {"prompt_id": prompt_id, "number": len(self.prompts), "node_errors": {}}

    def go_down(self) -> None:
        """The server process dies: queue, sockets and the listening port all go."""
        time.sleep(0.05)
        with self.lock:
            self.stopped = True
            self.forget()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def forget(self) -> None:
        """What a restart does to the server's memory: no queue, no history, no sockets."""
        self.queue.clear()
        self.history.clear()
        for connections in self.sockets.values():
            for conn in connections:
                _close(conn)
        self.sockets.clear()

    def work(self) -> None:
        while True:
            with self.lock:
                while not self.queue and not self.stopped:
                    self.lock.wait(0.1)
                if self.stopped:
                    return
                prompt_id, workflow, client = self.queue.pop(0)
                self.running, self.interrupted = prompt_id, False
            try:
                self.execute(prompt_id, workflow, client)
            finally:
                with self.lock:
                    self.running = None

    def execute(self, prompt_id: str, workflow: dict[str, Any], client: str) -> None:
        self.send(client, "execution_start", {"prompt_id": prompt_id})
        sampler = next(k for k, n in workflow.items() if n["class_type"] in ("KSampler", "KSamplerAdvanced"))
        self.send(client, "executing", {"node": sampler, "prompt_id": prompt_id})
        steps = 4
        for step in range(steps):
            until = time.monotonic() + self.delay / steps
            while time.monotonic() < until and not self.interrupted and not self.stopped:
                time.sleep(0.01)
            if self.interrupted:
                self.finish(prompt_id, client, "error", [["execution_interrupted", {"prompt_id": prompt_id}]])
                self.send(client, "execution_interrupted", {"prompt_id": prompt_id, "node_id": sampler})
                return
            self.send(client, "progress", {"value": step + 1, "max": steps, "prompt_id": prompt_id, "node": sampler})
        try:
            image = Evaluator(self, workflow).run(sampler)
        except RuntimeError as exc:
            error = {
                "prompt_id": prompt_id,
                "node_id": sampler,
                "node_type": workflow[sampler]["class_type"],
                "exception_message": str(exc),
                "exception_type": "RuntimeError",
                "traceback": [],
            }
            self.finish(prompt_id, client, "error", [["execution_error", error]])
            self.send(client, "execution_error", error)
            return
        output = next(k for k, n in workflow.items() if n["class_type"] in ("SaveImage", "PreviewImage"))
        name = f"ComfyUI_{len(self.outputs):05d}_.png"
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        self.outputs[name] = buffer.getvalue()
        reference = {"filename": name, "subfolder": "", "type": "output"}
        self.send(client, "executed", {"node": output, "output": {"images": [reference]}, "prompt_id": prompt_id})
        # As in ComfyUI, the prompt is announced done before its history is filed.
        self.send(client, "execution_success", {"prompt_id": prompt_id})
        self.send(client, "executing", {"node": None, "prompt_id": prompt_id})
        time.sleep(self.history_lag)
        self.finish(prompt_id, client, "success", [["execution_success", {"prompt_id": prompt_id}]], output, reference)

    def finish(
        self, prompt_id: str, client: str, status: str, messages: list[Any], node: str = "", ref: Any = None
    ) -> None:
        with self.lock:
            self.history[prompt_id] = {
                "prompt": [0, prompt_id, {}, {}, []],
                "outputs": {node: {"images": [ref]}} if node else {},
                "status": {"status_str": status, "completed": status == "success", "messages": messages},
            }

    # ------------------------------------------------------------------------------------------- websocket

    def send(self, client: str, kind: str, data: dict[str, Any]) -> None:
        payload = json.dumps({"type": kind, "data": data}).encode()
        with self.lock:
            connections = list(self.sockets.get(client, []))
        for conn in connections:
            with suppress(OSError):
                conn.sendall(_frame(payload))

    def attach(self, client: str, conn: socket.socket) -> None:
        with self.lock:
            self.sockets.setdefault(client, []).append(conn)
        self.send(client, "status", {"status": {"exec_info": {"queue_remaining": len(self.queue)}}, "sid": client})

    def queue_view(self) -> dict[str, Any]:
        with self.lock:
            running = [[0, self.running, {}, {}, []]] if self.running else []
            pending = [[i + 1, pid, {}, {}, []] for i, (pid, _, _) in enumerate(self.queue)]
        return {"queue_running": running, "queue_pending": pending}


class Evaluator:
    """Executes the workflow's nodes a sampler depends on (the real server's job, in miniature)."""

    def __init__(self, fake: FakeComfyUI, workflow: dict[str, Any]) -> None:
        self.fake, self.workflow = fake, workflow

    def value(self, link: Any) -> Any:
        node = self.workflow[str(link[0])]
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CLIPTextEncode":
            return inputs["text"]
        if kind == "EmptyLatentImage":
            return ("empty", inputs["width"], inputs["height"])
        if kind == "LoadImage":
            with Image.open(io.BytesIO(self.fake.uploads[inputs["image"]])) as picture:
                return picture.convert("RGB")
        if kind == "VAEEncode":
            return ("image", self.value(inputs["pixels"]))
        return None

    def run(self, sampler: str) -> Image.Image:
        inputs = self.workflow[sampler]["inputs"]
        text = self.value(inputs["positive"])
        if self.fake.fail_word and self.fake.fail_word in text:
            raise RuntimeError("Expected all tensors to be on the same device")
        seed = int(inputs.get("seed", inputs.get("noise_seed", 0)))
        latent = self.value(inputs["latent_image"])
        if latent[0] == "empty":
            return paint(read_scene(text), latent[1], latent[2], seed)
        base = latent[1]
        drawn = paint(read_scene(text), base.width, base.height, seed)
        return Image.blend(drawn, base, 1.0 - float(inputs.get("denoise", 1.0)))


class Handler(QuietHandler):
    fake: FakeComfyUI

    def do_GET(self) -> None:
        address = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(address.query))
        fake = self.fake
        if address.path == "/ws":
            self.upgrade(query.get("clientId", ""))
        elif address.path == "/system_stats":
            self.reply(200, {"system": {"os": "posix", "comfyui_version": "fake"}, "devices": []})
        elif address.path.startswith("/history/"):
            fake.history_calls += 1
            prompt_id = address.path.removeprefix("/history/")
            with fake.lock:
                entry = fake.history.get(prompt_id)
            self.reply(200, {prompt_id: entry} if entry else {})
        elif address.path == "/queue":
            self.reply(200, fake.queue_view())
        elif address.path == "/view" and query.get("filename") in fake.outputs:
            self.reply(200, fake.outputs[query["filename"]], "image/png")
        else:
            self.reply(404, b"404: Not Found", "text/plain")

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake = self.fake
        if self.path == "/prompt":
            if fake.garbage:
                self.reply(200, b"<html><body>Bad gateway</body></html>", "text/html")
                return
            status, answer = fake.accept(json.loads(data))
            self.reply(status, answer)
        elif self.path == "/upload/image":
            message = email.parser.BytesParser().parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + data
            )
            parts = {part.get_param("name", header="content-disposition"): part for part in message.get_payload()}
            image = parts["image"]
            name = str(image.get_filename())
            fake.uploads[name] = image.get_payload(decode=True)
            self.reply(200, {"name": name, "subfolder": "", "type": "input"})
        elif self.path == "/interrupt":
            body = json.loads(data or b"{}")
            fake.interrupts.append(body)
            # Newer ComfyUI interrupts only the prompt named, and only while it runs; older ones whatever runs.
            fake.interrupted = body.get("prompt_id") in (None, fake.running)
            self.reply(200, b"", "text/plain")
        elif self.path == "/queue":
            body = json.loads(data or b"{}")
            fake.deletes.append(body.get("delete"))
            with fake.lock:
                fake.queue[:] = [item for item in fake.queue if item[0] not in (body.get("delete") or [])]
            self.reply(200, b"", "text/plain")
        else:
            self.reply(404, b"404: Not Found", "text/plain")

    def upgrade(self, client: str) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        self.wfile.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        self.wfile.flush()
        conn = self.connection
        if self.fake.drop_sockets:
            _close(conn)
            return
        for opcode, payload in self.fake.socket_garbage:
            conn.sendall(_frame(payload, 0x80 | opcode))
        self.fake.attach(client, conn)
        self.close_connection = True
        with suppress(OSError, ConnectionError):
            self.answer_frames(conn)

    def answer_frames(self, conn: socket.socket) -> None:
        """Read the client's frames (all masked): answer a ping with a pong and a close with a close."""
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, size = head[0] & 0x0F, head[1] & 0x7F
            if size == 126:
                size = struct.unpack("!H", self.rfile.read(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
            if opcode == 0x9:
                conn.sendall(_frame(payload, 0x8A))
            elif opcode == 0x8:
                conn.sendall(_frame(payload[:2], 0x88))
                return


def _frame(payload: bytes, first: int = 0x81) -> bytes:
    """One unmasked frame from server to client (a final text frame unless `first` says otherwise)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, size)
    elif size < 65536:
        head = struct.pack("!BBH", first, 126, size)
    else:
        head = struct.pack("!BBQ", first, 127, size)
    return head + payload


def _close(conn: socket.socket) -> None:
    with suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


@contextmanager
def fake_comfyui() -> Iterator[tuple[FakeComfyUI, str]]:
    """A running fake ComfyUI and its base URL; stopped after the block."""
    fake = FakeComfyUI()
    handler = type("BoundHandler", (Handler,), {"fake": fake})
    server = QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    fake.server = server
    threads = [
        threading.Thread(target=server.serve_forever, daemon=True),
        threading.Thread(target=fake.work, daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        with fake.lock:
            fake.stopped = True
            fake.forget()
        server.shutdown()
        server.server_close()


def api_workflow(*, negative: bool = True) -> dict[str, Any]:
    """ComfyUI's default text-to-image workflow, as 'Export (API)' writes it."""
    workflow: dict[str, Any] = {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 156680208700286,
                "steps": 20,
                "cfg": 8,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
            "_meta": {"title": "KSampler"},
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a bottle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    if not negative:
        del workflow["7"]
        del workflow["3"]["inputs"]["negative"]
    return workflow
