"""The image request a run's settings make: one home for what every draw of a run shares.

A round's images, a draft's winner drawn in full and an image remade on resume differ only in prompt, seeds and
starting picture; the size, steps, guidance, sampler and negative prompt come from the run, and must come the same
way for each, or a remade image would not be the one first drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from refineloop.backends.image.protocol import ImageRequest, ImageTraits

if TYPE_CHECKING:
    from refineloop.settings import RunSettings
    from refineloop.tasks import Task


def run_request(
    settings: RunSettings,
    task: Task,
    traits: ImageTraits,
    *,
    prompt: str,
    seeds: tuple[int, ...],
    init_image: str | None = None,
    strength: float | None = None,
) -> ImageRequest:
    """A request at the run's size, steps, guidance and sampler, with the task's negative prompt where the model
    takes one."""
    return ImageRequest(
        prompt=prompt,
        negative_prompt=task.negative_prompt if traits.negative_prompt else "",
        seeds=seeds,
        init_image=init_image,
        strength=strength,
        width=settings.width,
        height=settings.height,
        steps=settings.steps,
        guidance=settings.guidance,
        scheduler=settings.scheduler,
    )
