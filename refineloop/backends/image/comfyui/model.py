"""`ComfyImageModel`: a user's ComfyUI workflow behind the ImageModel protocol.

Each image is one queued prompt: the workflow with the run's prompt, negative prompt, seed (and steps,
guidance, size, init image and denoise where the run sets them) filled in, and one image asked of its empty
latent. A round's candidates are queued together, so the server works through them without waiting on
refineloop between images.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refineloop.backends.image.comfyui.client import ComfyClient
from refineloop.backends.image.comfyui.workflow import (
    Placement,
    Values,
    Workflow,
    fill,
    hidden_values,
    image_to_image_gap,
)
from refineloop.backends.image.http_calls import ServerError
from refineloop.backends.image.protocol import ImageRequest, ImageTraits, check_one_batch

if TYPE_CHECKING:
    from PIL import Image


class ComfyImageModel:
    """Draws through ComfyUI with the user's workflow; the values refineloop sets go where `places` says."""

    placement = "the ComfyUI server"

    def __init__(self, path: Path, text: str, workflow: Workflow, placement: Placement, client: ComfyClient) -> None:
        self.name = f"comfyui:{path.name}"
        self.workflow_file = path.name
        self.workflow_sha256 = hashlib.sha256(text.encode()).hexdigest()
        self.workflow = workflow
        self.places = placement
        self.client = client
        self.traits = ImageTraits(
            prompt_budget=None,  # ComfyUI's text encoders read long prompts in 77-token chunks
            negative_prompt=placement.negative is not None,
            img2img=not image_to_image_gap(placement),
            strength=True,
        )
        self._uploads: dict[str, str] = {}
        self._queued: list[str] = []

    def count_tokens(self, text: str) -> int:
        """Words and punctuation marks: close to a CLIP tokenizer's count for plain English."""
        return len(re.findall(r"\w+|[^\w\s]", text))

    def call_defaults(self, *, img2img: bool) -> dict[str, Any]:
        """The workflow's own steps and guidance, which a run that leaves them empty draws with."""
        return hidden_values(self.workflow, self.places)

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        """One queued prompt per seed, drawn by the server; the images in seed order."""
        return self.generate_many([request])[0]

    def generate_many(self, requests: Sequence[ImageRequest]) -> list[list[Image.Image]]:
        """Every request's prompts queued at once, then collected in order."""
        check_one_batch(requests)
        workflows = [self.filled(request, seed)[0] for request in requests for seed in request.seeds]
        ids: list[str] = []
        self._queued = ids  # what `interrupt` takes back, as it fills
        socket = self.client.progress_socket()  # open before queueing: no message is missed
        try:
            for workflow in workflows:
                ids.append(self.client.queue(workflow))
            entries = self.client.wait(ids, socket)
        except KeyboardInterrupt:
            self.client.cancel(ids)
            raise
        images = iter([self._output(prompt_id, entries[prompt_id]) for prompt_id in ids])
        return [[next(images) for _ in request.seeds] for request in requests]

    def interrupt(self) -> None:
        """Take this model's prompts of the latest call off the queue and stop the one drawing (from another
        thread: the call itself is left to end with the server's answer)."""
        if self._queued:
            self.client.cancel(list(self._queued))

    def filled(self, request: ImageRequest, seed: int) -> tuple[Workflow, dict[str, Any]]:
        """The workflow for one image of `request`, and the values filled in (`node.input` -> value)."""
        values = Values(
            prompt=request.prompt,
            negative=request.negative_prompt,
            seed=seed,
            steps=request.steps,
            guidance=request.guidance,
            width=request.width,
            height=request.height,
            image=self._uploaded(request.init_image) if request.init_image else None,
            denoise=request.strength if request.init_image else None,
        )
        return fill(self.workflow, self.places, values)

    def provenance(self, request: ImageRequest, seed: int) -> dict[str, Any]:
        """What an image's record says about the server's part: the workflow and the values filled in."""
        return {
            "server": "comfyui",
            "workflow": self.workflow_file,
            "workflow_sha256": self.workflow_sha256,
            "filled": self.filled(request, seed)[1],
        }

    def _uploaded(self, path: str) -> str:
        """The init image's name on the server, uploaded once per process."""
        if path not in self._uploads:
            self._uploads[path] = self.client.upload(path)
        return self._uploads[path]

    def _output(self, prompt_id: str, entry: dict[str, Any]) -> Image.Image:
        node = self.places.output
        images = ((entry.get("outputs") or {}).get(node) or {}).get("images") or []
        if not images:
            raise ServerError(
                f"ComfyUI finished prompt {prompt_id} but output node {node} gave no image: check the workflow runs "
                "in ComfyUI itself"
            )
        return self.client.image(images[0])
