"""`generate`: draw the next image from the current prompt (or from the best image, for img2img)."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.model_cache import models_for
from refineloop.nodes.drafts import draft_size, draw_drafts, draw_in_full
from refineloop.nodes.round_draw import draw_round
from refineloop.nodes.round_ideas import round_ideas
from refineloop.round_request import round_request
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.tasks import Task


def generate(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Make the next round's images (one, or --candidates in one batched call) from the current prompt.

    Images are numbered on from state.iteration; each has its own seed derived from the run seed and its
    number, so any image can be remade alone (refineloop.round_request). Their PNGs are written by the writer
    thread while the critic judges them from memory (refineloop.run_folder.image_writer); `evaluate` waits for
    the files. With --distinct-ideas each candidate after the first follows an idea of its own
    (refineloop.nodes.round_ideas); with drafts the round is drawn as drafts first, and the one that earns it is
    drawn in full on the next call (refineloop.nodes.drafts); on a walk on drafts every image is a draft, and
    the stop draws the crowned draft in full (refineloop.nodes.walk).
    """
    settings = RunSettings.from_state(state["settings"])
    task = Task.from_dict(state["task"])
    model = models_for(config).image_model(settings)
    winner = state.get("draft_winner")
    if winner:
        return draw_in_full(state, config, winner)
    # A lone candidate with no best to beat would be drawn in full whatever its draft scored: no draft for it.
    drafting = settings.screening and (settings.candidates > 1 or state.get("best") is not None)
    planned = round_request(
        settings,
        task,
        model.traits,
        run_dir=state["run_dir"],
        iteration=state["iteration"],
        prompt=state["prompt"],
        best_path=(state.get("best") or {}).get("path"),
        draft_round=state.get("draft_rounds", 0) if drafting else None,
    )
    ideas, calls = round_ideas(state, config, settings, len(planned.numbers))
    if drafting:
        return {**draw_drafts(state, model, planned.request, ideas, settings), "critic_calls": calls}
    walk = draft_size(planned.request) if settings.draft_walk else None
    update = draw_round(state, config, model, planned.request, ideas, planned.numbers, walk=walk)
    return {**update, "critic_calls": calls, **({"draft_rounds": 1} if settings.screening else {})}
