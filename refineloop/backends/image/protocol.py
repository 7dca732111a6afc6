"""The image-model protocol every backend implements.

A backend turns a prompt (and optionally an init image) into PIL images. Nodes only ever see this
protocol, so the sketch renderer, a diffusers pipeline and a remote batcher are interchangeable. A server
that gathers many runs' requests (the Ray generator) groups them by `ImageRequest.batch_key()` and draws
each group with `ImageModel.generate_many`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class ImageTraits:
    """What an image model can do; read from the loaded model, never from a hard-coded list."""

    prompt_budget: int | None
    """Most prompt tokens the model reads; None when uncapped (the summarize step is then skipped)."""
    negative_prompt: bool
    """Whether the model takes a negative prompt."""
    img2img: bool
    """Whether the model can start from an init image."""
    strength: bool
    """Whether image-to-image takes a `strength` knob (False for unified pipelines such as FLUX.2 Klein)."""
    prompt_style: str = "tags"
    """How the condense step writes prompts for it: `tags` (comma-separated phrases) for CLIP-only encoders,
    which read keywords best, or `sentences` for T5 and LLM encoders, which read plain language."""


@dataclass(frozen=True)
class ImageRequest:
    """One generate call: n images from one prompt, each with its own seed."""

    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    """One seed per image; len(seeds) is the number of images asked for."""
    init_image: str | None = None
    """Path of the image to start from (img2img), or None for text-to-image."""
    strength: float | None = None
    """How far img2img may stray from the init image, 0..1; ignored without an init image."""
    width: int | None = None
    """Image width in pixels; None takes the model's default."""
    height: int | None = None
    """Image height in pixels; None takes the model's default."""
    steps: int | None = None
    """Denoising steps; None takes the model's default."""
    guidance: float | None = None
    """Classifier-free guidance scale; None takes the model's default."""
    scheduler: str = ""
    """Sampler name from refineloop.samplers (`--scheduler`); empty keeps the model's own."""

    def batch_key(self) -> tuple[object, ...]:
        """Requests with equal keys can share one batched call: they may differ only in prompt, negative prompt,
        seeds and init image, while a pipeline call takes one mode, size, step count, guidance, strength and
        sampler."""
        mode = "txt2img" if self.init_image is None else "img2img"
        return (mode, self.width, self.height, self.steps, self.guidance, self.strength, self.scheduler)


def check_one_batch(requests: Sequence[ImageRequest]) -> None:
    """Raise ValueError unless every request shares the first one's `batch_key()` (what `generate_many` takes)."""
    keys = {request.batch_key() for request in requests}
    if len(keys) > 1:
        raise ValueError(f"requests of different batch keys cannot share one call: {sorted(map(str, keys))}")


@runtime_checkable
class ImageModel(Protocol):
    """A loaded image model, shared by every node and iteration in the process.

    A model drawn by a server may also have `interrupt()`: called from another thread, it asks the server to drop
    what this model's call is drawing (refineloop.backends.image.head_start uses it on a stop).
    """

    name: str
    """How the user named the model (`sketch`, `hf:org/id`, a local folder)."""
    traits: ImageTraits

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        """Return one image per seed in `request.seeds`, in order."""
        ...

    def generate_many(self, requests: Sequence[ImageRequest]) -> list[list[Image.Image]]:
        """Return each request's images (one per seed, in order), drawn together in one batched call.

        The requests must share one `ImageRequest.batch_key()` (`check_one_batch`); each image depends only on
        its own request and seed, so it is the image `generate` would make alone (up to batched rounding).
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Count prompt tokens the way the model's own tokenizer does; safe to call while another thread draws."""
        ...
