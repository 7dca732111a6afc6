"""An A1111-compatible server on 127.0.0.1 that follows the web UI's published API (`/sdapi/v1/...`).

txt2img and img2img check their payload as the server's pydantic models do (a wrong type or an unknown sampler
is a 422 with `detail`), draw a batch at seed, seed + 1, ... with the sketch painter (img2img blends towards
the init image by 1 - denoising_strength), and answer base64 PNGs with an `info` JSON string holding
`all_seeds`. `--api-auth` is mimicked by `auth`, a crash by `fail`, a proxy's page by `garbage`.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from PIL import Image

from refineloop.backends.demo.sketch import paint, read_scene
from tests.fake_http import QuietHandler, QuietServer

SAMPLERS = ("Euler a", "Euler", "DPM++ 2M", "DDIM")
MODELS = [
    {
        "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        "model_name": "v1-5-pruned-emaonly",
        "hash": "6ce0161689",
        "filename": "/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
    },
    {
        "title": "dreamshaper_8.safetensors [879db523c3]",
        "model_name": "dreamshaper_8",
        "hash": "879db523c3",
        "filename": "/models/Stable-diffusion/dreamshaper_8.safetensors",
    },
]


class FakeA1111:
    """The server's state and the knobs tests turn."""

    def __init__(self) -> None:
        self.auth = ""
        """`user:password` the server demands (empty: none)."""
        self.fail = False
        """Answer every drawing call with a 500 and the error the web UI reports."""
        self.fail_at = 0
        """Answer the Nth drawing call (only that one) with a 500, as a server crashing mid-run does."""
        self.garbage = False
        self.calls: list[tuple[str, dict[str, Any]]] = []
        """Every drawing call: its path and payload."""
        self.interrupts = 0
        self.delay = 0.0
        """Seconds each drawing call takes (cut short by POST /sdapi/v1/interrupt, as the web UI does)."""
        self.loaded = MODELS[0]["title"]


class Handler(QuietHandler):
    fake: FakeA1111

    def allowed(self) -> bool:
        wanted = self.fake.auth
        if wanted and self.headers.get("Authorization") != "Basic " + base64.b64encode(wanted.encode()).decode():
            self.reply(401, {"detail": "Incorrect username or password"})
            return False
        return True

    def do_GET(self) -> None:
        if not self.allowed():
            return
        if self.path == "/sdapi/v1/sd-models":
            self.reply(200, MODELS)
        elif self.path == "/sdapi/v1/samplers":
            self.reply(200, [{"name": name, "aliases": [], "options": {}} for name in SAMPLERS])
        else:
            self.reply(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.allowed():
            return
        if self.path == "/sdapi/v1/interrupt":
            self.fake.interrupts += 1
            self.reply(200, {})
        elif self.path in ("/sdapi/v1/txt2img", "/sdapi/v1/img2img"):
            self.draw(json.loads(body), img2img=self.path.endswith("img2img"))
        else:
            self.reply(404, {"detail": "Not Found"})

    def draw(self, payload: dict[str, Any], *, img2img: bool) -> None:
        fake = self.fake
        fake.calls.append((self.path, payload))
        if fake.garbage:
            self.reply(200, b"<html>502 Bad Gateway</html>", "text/html")
            return
        problem = _invalid(payload, img2img=img2img)
        if problem:
            self.reply(422, {"detail": [{"loc": ["body", problem[0]], "msg": problem[1], "type": "value_error"}]})
            return
        if fake.fail or len(fake.calls) == fake.fail_at:
            self.reply(500, {"error": "OutOfMemoryError", "detail": "", "body": "", "errors": "CUDA out of memory"})
            return
        started = fake.interrupts
        until = time.monotonic() + fake.delay
        while time.monotonic() < until and fake.interrupts == started:
            time.sleep(0.01)
        checkpoint = (payload.get("override_settings") or {}).get("sd_model_checkpoint")
        if checkpoint:
            fake.loaded = checkpoint
        seed, count = int(payload.get("seed", -1)), int(payload.get("batch_size", 1))
        width, height = int(payload.get("width", 512)), int(payload.get("height", 512))
        init = None
        if img2img:
            with Image.open(io.BytesIO(base64.b64decode(payload["init_images"][0]))) as picture:
                init = picture.convert("RGB").resize((width, height))
        seeds = [seed + k for k in range(count)]
        images = []
        for each in seeds:
            image = paint(read_scene(payload["prompt"]), width, height, each)
            if init is not None:
                image = Image.blend(image, init, 1.0 - float(payload["denoising_strength"]))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            images.append(base64.b64encode(buffer.getvalue()).decode())
        info = {"all_seeds": seeds, "sd_model_name": fake.loaded, "prompt": payload["prompt"]}
        self.reply(200, {"images": images, "parameters": payload, "info": json.dumps(info)})


def _invalid(payload: dict[str, Any], *, img2img: bool) -> tuple[str, str] | None:
    """The first field the server's request model would refuse."""
    if not isinstance(payload.get("prompt"), str):
        return "prompt", "str type expected"
    if not isinstance(payload.get("seed", -1), int):
        return "seed", "value is not a valid integer"
    if payload.get("sampler_name") not in (None, *SAMPLERS):
        return "sampler_name", f"Sampler not found: {payload.get('sampler_name')}"
    if int(payload.get("width", 512)) > 2048:
        return "width", "ensure this value is less than or equal to 2048"
    if img2img and not payload.get("init_images"):
        return "init_images", "field required"
    return None


@contextmanager
def fake_a1111() -> Iterator[tuple[FakeA1111, str]]:
    """A running fake A1111 server and its base URL; stopped after the block."""
    fake = FakeA1111()
    server = QuietServer(("127.0.0.1", 0), type("BoundHandler", (Handler,), {"fake": fake}))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
