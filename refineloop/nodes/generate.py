"""`generate`: draw the next image from the current prompt (or from the best image, for img2img)."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.image.protocol import ImageRequest
from refineloop.backends.model_cache import models_for
from refineloop.nodes.drafts import draw_drafts, draw_in_full
from refineloop.nodes.round_draw import draw_round
from refineloop.nodes.round_ideas import round_ideas
from refineloop.prompt_text import compose_prompt
from refineloop.run_folder.image_files import image_path
from refineloop.schedules import image_seed, strength
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.strategies import spec_for
from refineloop.tasks import Task


def generate(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Make the next round's images (one, or --candidates in one batched call) from the current prompt.

    Images are numbered on from state.iteration; each has its own seed derived from the run seed and its
    number, so any image can be remade alone. Their PNGs are written by the writer thread while the critic
    judges them from memory (refineloop.run_folder.image_writer); `evaluate` waits for the files. With
    --distinct-ideas each candidate after the first follows an idea of its own (refineloop.nodes.round_ideas);
    with drafts the round is drawn as drafts first, and the one that earns it is drawn in full on the next call
    (refineloop.nodes.drafts).
    """
    settings = RunSettings.from_state(state["settings"])
    task = Task.from_dict(state["task"])
    model = models_for(config).image_model(settings)
    winner = state.get("draft_winner")
    if winner:
        return draw_in_full(state, config, winner)
    first = state["iteration"] + 1
    # A lone candidate with no best to beat would be drawn in full whatever its draft scored: no draft for it.
    drafting = settings.drafting and (settings.candidates > 1 or state.get("best") is not None)
    if drafting:  # drafts are not images: the round is as many as --candidates, whatever the image cap
        count = settings.candidates
        slots = range(state.get("draft_rounds", 0) * count + 1, (state.get("draft_rounds", 0) + 1) * count + 1)
    else:
        count = max(1, min(settings.candidates, settings.image_cap() - state["iteration"]))
        slots = range(first, first + count)
    best = state.get("best")
    init_image, used_strength = None, None
    # The user's own picture (--init-image, image 0) starts the first round, whatever the strategy.
    from_picture = bool(settings.init_image) and state["iteration"] == 0
    if (from_picture or (spec_for(settings.strategy).from_image and best)) and model.traits.img2img:
        init_image = str(image_path(state["run_dir"], 0)) if from_picture else (best or {})["path"]
        if model.traits.strength:
            round_number = state.get("draft_rounds", 0) + 1 if drafting else (first - 1) // settings.candidates + 1
            # The schedule reaches --initial-strength at round 2 (round 1 is text-to-image); a picture's round 1 too.
            used_strength = strength(
                max(2, round_number), settings.max_iterations, settings.initial_strength, settings.final_strength
            )
    request = ImageRequest(
        prompt=compose_prompt(task.subject, state["prompt"]),
        negative_prompt=task.negative_prompt if model.traits.negative_prompt else "",
        seeds=tuple(image_seed(settings.seed or 0, n, settings.first_seed) for n in slots),
        init_image=init_image,
        strength=used_strength,
        width=settings.width,
        height=settings.height,
        steps=settings.steps,
        guidance=settings.guidance,
        scheduler=settings.scheduler,
    )
    ideas, calls = round_ideas(state, config, settings, count)
    if drafting:
        return {**draw_drafts(state, model, request, ideas, settings), "critic_calls": calls}
    update = draw_round(state, config, model, request, ideas, range(first, first + count))
    return {**update, "critic_calls": calls, **({"draft_rounds": 1} if settings.drafting else {})}
