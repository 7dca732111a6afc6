"""The image-model protocol every backend implements.

A backend turns a prompt (and optionally an init image) into PIL images. Nodes only ever see this
protocol, so the sketch renderer, a diffusers pipeline and a remote batcher are interchangeable.
"""

from __future__ import annotations

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


@runtime_checkable
class ImageModel(Protocol):
    """A loaded image model, shared by every node and iteration in the process."""

    name: str
    """How the user named the model (`sketch`, `hf:org/id`, a local folder)."""
    traits: ImageTraits

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        """Return one image per seed in `request.seeds`, in order."""
        ...

    def count_tokens(self, text: str) -> int:
        """Count prompt tokens the way the model's own tokenizer does."""
        ...
