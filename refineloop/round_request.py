"""The image request of a round: what the generate node asks the image model for, worked out in one place.

The generate node builds every round's request here, and the CLI's head start (refineloop.apps.head_start)
builds the first round's request here too, before LangGraph is even imported: the two must agree to the byte,
or the image drawn ahead would not be the one the run asks for. Kept free of LangGraph and LangChain imports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from refineloop.backends.image.protocol import ImageRequest, ImageTraits
from refineloop.backends.image.requests import run_request
from refineloop.prompt_text import compose_prompt
from refineloop.prompts import with_kept
from refineloop.run_folder.image_files import image_path
from refineloop.schedules import image_seed, strength
from refineloop.settings import RunSettings
from refineloop.strategies import spec_for
from refineloop.tasks import Task


@dataclass(frozen=True)
class RoundRequest:
    """One round's call to the image model, and what the round's records say about it."""

    request: ImageRequest
    numbers: range
    """The image numbers the round makes, one per seed."""
    init_image: str | None
    """The image the round starts from (img2img), as its records name it."""
    strength: float | None
    """The img2img strength used, None for text-to-image or a model without the knob."""


def first_prompt(task: Task) -> str:
    """The first image's prompt: the task's start, with the words it must keep (later prompts get them from
    summarize)."""
    return with_kept(task.start_prompt, task.keep, task.subject)


def round_request(
    settings: RunSettings,
    task: Task,
    traits: ImageTraits,
    *,
    run_dir: str,
    iteration: int,
    prompt: str,
    best_path: str | None,
    draft_round: int | None = None,
) -> RoundRequest:
    """The request of the round after image `iteration` (one image, or --candidates in one call), drawn from
    `prompt`, or from the best image (`best_path`) when the strategy works in image space.

    Images are numbered on from `iteration`; each has its own seed derived from the run seed and its number, so
    any image can be remade alone. A round of drafts (`draft_round`, counted from 0) is --candidates drafts
    whatever the image cap (drafts are not images), seeded by their place among all drafts of the run; the one
    drawn in full keeps its draft's seed (refineloop.nodes.drafts).
    """
    first = iteration + 1
    if draft_round is not None:
        count = settings.candidates
        numbers = range(draft_round * count + 1, (draft_round + 1) * count + 1)
        round_number = draft_round + 1
    else:
        count = max(1, min(settings.candidates, settings.image_cap() - iteration))
        numbers = range(first, first + count)
        round_number = (first - 1) // settings.candidates + 1
    init_image, used_strength = None, None
    # The user's own picture (--init-image, image 0) starts the first round, whatever the strategy.
    from_picture = bool(settings.init_image) and iteration == 0
    if (from_picture or (spec_for(settings.strategy).from_image and best_path)) and traits.img2img:
        init_image = str(image_path(run_dir, 0)) if from_picture else best_path
        if traits.strength:
            # The schedule reaches --initial-strength at round 2 (round 1 is text-to-image); a picture's round 1 too.
            used_strength = strength(
                max(2, round_number), settings.max_iterations, settings.initial_strength, settings.final_strength
            )
    request = run_request(
        settings,
        task,
        traits,
        prompt=compose_prompt(task.subject, prompt),
        seeds=tuple(image_seed(settings.seed or 0, n, settings.first_seed) for n in numbers),
        init_image=init_image,
        strength=used_strength,
    )
    if settings.draft_walk:  # the walk's images are drafts; the stop draws the crowned one in full
        request = draft_request(request, settings)
    return RoundRequest(request, numbers, init_image, used_strength)


def draft_request(request: ImageRequest, settings: RunSettings) -> ImageRequest:
    """The draft of `request`: --draft-steps steps (else the image's), and --draft-size on its longest side at the
    run's aspect (square when the run leaves its size to the model)."""
    width, height = request.width, request.height
    if settings.draft_size:
        side = settings.draft_size
        if width and height:
            scale = side / max(width, height)
            width, height = (max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8))
        else:
            width = height = side
    return dataclasses.replace(request, steps=settings.draft_steps or request.steps, width=width, height=height)
