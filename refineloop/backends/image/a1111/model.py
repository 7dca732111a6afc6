"""`A1111ImageModel`: an A1111-compatible server (A1111 WebUI, Forge, SD.Next) behind the ImageModel protocol.

Text-to-image goes to `POST /sdapi/v1/txt2img`, image-to-image to `/sdapi/v1/img2img` (the init image as base64
in `init_images`, the strength as `denoising_strength`); the checkpoint rides in `override_settings`, so the
server switches to it for the run and stays there (`override_settings_restore_afterwards` off: switching back
after every image would reload the weights each time).

Seeds: refineloop gives every image its own seed, derived from the run seed and the image's number. An A1111
batch draws its images at seed, seed + 1, ..., so a round's images are one batch call only where their seeds run
on like that; otherwise each image is its own call (the server works through calls one at a time anyway). Either
way image k is drawn at exactly the seed its provenance records, and that seed alone, at batch size 1, draws it
again. The seeds the server reports back (`info.all_seeds`) are checked against those sent.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refineloop.backends.image.http_calls import Server, ServerError
from refineloop.backends.image.protocol import ImageRequest, ImageTraits, check_one_batch

if TYPE_CHECKING:
    from PIL import Image

#: Seconds one drawing call may take (a large batch on a slow card, a checkpoint switch first).
DRAW_TIMEOUT = 1800.0


class A1111ImageModel:
    """Draws on an A1111-compatible server with one checkpoint (None: whatever the server has loaded)."""

    traits = ImageTraits(prompt_budget=None, negative_prompt=True, img2img=True, strength=True)
    placement = "the A1111-compatible server"

    def __init__(self, server: Server, name: str, checkpoint: str | None, sampler: str, scheduler: str) -> None:
        self.server = server
        self.name = name
        self.checkpoint = checkpoint
        """The server's title of the checkpoint (`model.safetensors [6ce0161689]`), sent as sd_model_checkpoint."""
        self.sampler = sampler
        self.scheduler = scheduler

    def count_tokens(self, text: str) -> int:
        """Words and punctuation marks: close to a CLIP tokenizer's count for plain English."""
        return len(re.findall(r"\w+|[^\w\s]", text))

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        """One image per seed, in order."""
        images: list[Image.Image] = []
        for seeds in consecutive_runs(request.seeds):
            images.extend(self._draw(request, seeds))
        return images

    def generate_many(self, requests: Sequence[ImageRequest]) -> list[list[Image.Image]]:
        """Each request's images, one call per run of consecutive seeds."""
        check_one_batch(requests)
        return [self.generate(request) for request in requests]

    def payload(self, request: ImageRequest, seeds: Sequence[int]) -> dict[str, Any]:
        """The JSON body of the call that draws `seeds` (consecutive) of `request`."""
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": seeds[0],
            "batch_size": len(seeds),
            "n_iter": 1,
            "send_images": True,
            "save_images": False,
            "do_not_save_grid": True,
        }
        optional = {
            "steps": request.steps,
            "cfg_scale": request.guidance,
            "width": request.width,
            "height": request.height,
            "sampler_name": self.sampler or None,
            "scheduler": self.scheduler or None,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        if self.checkpoint:
            body["override_settings"] = {"sd_model_checkpoint": self.checkpoint}
            body["override_settings_restore_afterwards"] = False
        if request.init_image:
            body["init_images"] = [base64.b64encode(Path(request.init_image).read_bytes()).decode()]
            body["denoising_strength"] = request.strength if request.strength is not None else 0.75
        return body

    def provenance(self, request: ImageRequest, seed: int) -> dict[str, Any]:
        """What an image's record says about the server's part (never its address or credentials)."""
        return {
            "server": "a1111",
            "checkpoint": self.checkpoint,
            "sampler_name": self.sampler or None,
            "scheduler": self.scheduler or None,
        }

    def _draw(self, request: ImageRequest, seeds: list[int]) -> list[Image.Image]:
        path = "/sdapi/v1/img2img" if request.init_image else "/sdapi/v1/txt2img"
        try:
            answer = self.server.call("POST", path, self.payload(request, seeds), timeout=DRAW_TIMEOUT)
        except KeyboardInterrupt:
            self.interrupt()
            raise
        encoded = answer.get("images") if isinstance(answer, dict) else None
        if not isinstance(encoded, list) or not all(isinstance(item, str) for item in encoded):
            raise ServerError(f"{self.server.name} at {self.server.url} answered {path} without a list of images")
        if len(encoded) == len(seeds) + 1 and len(seeds) > 1:
            encoded = encoded[1:]  # a server that still returns the batch's grid puts it first
        if len(encoded) != len(seeds):
            raise ServerError(
                f"{self.server.name} at {self.server.url} sent {len(encoded)} images for {len(seeds)} asked"
            )
        self._check_seeds(answer.get("info"), seeds)
        return [_decode(item, self.server) for item in encoded]

    def _check_seeds(self, info: Any, seeds: list[int]) -> None:
        """ServerError when the server says it drew other seeds than those sent (its info is optional)."""
        try:
            drawn = json.loads(info).get("all_seeds") if isinstance(info, str) else None
        except (ValueError, AttributeError):
            return
        if isinstance(drawn, list) and len(drawn) == len(seeds) and drawn != seeds:
            raise ServerError(
                f"{self.server.name} at {self.server.url} drew seeds {drawn} when asked for {seeds}: check the "
                "server keeps the seeds it is sent (no seed-changing extension)"
            )

    def interrupt(self) -> None:
        """Ask the server to stop the image it is drawing; a server that is gone needs nothing."""
        with contextlib.suppress(ServerError):
            self.server.call("POST", "/sdapi/v1/interrupt", {}, timeout=2.0)


def consecutive_runs(seeds: Sequence[int]) -> list[list[int]]:
    """`seeds` cut where one does not follow on from the last (an A1111 batch draws seed, seed + 1, ...)."""
    runs: list[list[int]] = []
    for seed in seeds:
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return runs


def _decode(item: str, server: Server) -> Image.Image:
    from PIL import Image

    try:
        data = base64.b64decode(item.split(",", 1)[-1], validate=False)
        with Image.open(io.BytesIO(data)) as picture:
            return picture.convert("RGB")
    except (ValueError, OSError):
        raise ServerError(f"{server.name} at {server.url} sent an image that cannot be read") from None
