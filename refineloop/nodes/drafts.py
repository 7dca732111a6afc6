"""Drafts (--draft-steps, --draft-size): judge a round's candidates from cheap drafts, draw only a winner in full.

A draft is the same request as the image it stands for (prompt, seed, init image) with fewer denoising steps
and/or a smaller size, so it costs a fraction of an image. The round's drafts are judged (refineloop.judges.drafts);
the best is drawn in full, as the run's next image, only when its score beats the best's by --draft-margin, and
that full image is judged and accepted as any other, with its draft's score pooled with its own as one more
sample. Drafts live in the run folder's drafts/ with a JSON record each, never among the numbered images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.chat import critic_images
from refineloop.backends.image.protocol import ImageModel, ImageRequest
from refineloop.backends.image.requests import run_request
from refineloop.backends.model_cache import models_for
from refineloop.files.trace import append_trace
from refineloop.nodes.round_draw import draw_round, new_candidate
from refineloop.nodes.round_ideas import split_by_idea
from refineloop.progress_events import drawing
from refineloop.prompt_text import compose_prompt
from refineloop.round_request import draft_request
from refineloop.run_folder.image_files import save_image
from refineloop.settings import RunSettings
from refineloop.state import Candidate, RefineState
from refineloop.tasks import Task

#: The folder, inside the run folder, that holds the drafts.
DRAFTS = "drafts"


def draw_drafts(
    state: RefineState, model: ImageModel, request: ImageRequest, ideas: list[tuple[str, str]], settings: RunSettings
) -> dict[str, Any]:
    """Draw the round's drafts into drafts/ and hand them to evaluate; no image number is used."""
    task = Task.from_dict(state["task"])
    draft = draft_request(request, settings)
    requests = split_by_idea(draft, ideas, task.subject)
    round_number = state.get("draft_rounds", 0) + 1
    started = time.perf_counter()
    with drawing(f"drafts of round {round_number}"):
        pictures = [p for drawn in model.generate_many(requests) for p in drawn] if ideas else model.generate(draft)
    folder = Path(state["run_dir"]) / DRAFTS
    folder.mkdir(exist_ok=True)
    drafts: list[Candidate] = []
    for k, (seed, picture) in enumerate(zip(draft.seeds, pictures, strict=True)):
        path = folder / f"{round_number:03d}-{k + 1}.png"
        save_image(picture, path)  # at once: a draft is judged in this round or never
        critic_images.remember(path, picture)
        idea, prompt = ideas[k] if ideas else (state["idea"], state["prompt"])
        # Numbered as its full image would be; its record says it is a draft.
        record = new_candidate(state["iteration"] + 1, path, compose_prompt(task.subject, prompt), idea, seed, draft)
        drafts.append({**record, "draft": {"round": round_number, "prompt": prompt, **draft_size(draft)}})
    seconds = time.perf_counter() - started
    append_trace(
        state["run_dir"],
        {
            "kind": "drafts",
            "round": round_number,
            "model": model.name,
            "paths": [d["path"] for d in drafts],
            "seeds": list(draft.seeds),
            "steps": draft.steps,
            "width": draft.width,
            "height": draft.height,
            "seconds": round(seconds, 4),
        },
    )
    return {"drafts": drafts, "draft_rounds": 1, "draft_missed": False, "seconds": seconds}


def draft_size(request: ImageRequest) -> dict[str, int | None]:
    """The steps and size a draft was drawn with, for its record."""
    return {"steps": request.steps, "width": request.width, "height": request.height}


def draw_in_full(state: RefineState, config: RunnableConfig, winner: Candidate) -> dict[str, Any]:
    """Draw the round's winning draft in full as the run's next image, which evaluate then judges like any
    other."""
    model = models_for(config).image_model(RunSettings.from_state(state["settings"]))
    draft = winner.get("draft") or {}
    update = draw_full(state, config, model, winner, draft.get("prompt", state["prompt"]), state["iteration"] + 1)
    record = {"path": winner["path"], "score": winner.get("score"), **{k: draft.get(k) for k in draft_keys()}}
    # The draft was a look at this very idea and seed: its judge samples count among the full image's, which the
    # judge then adds its own look to (as --judge-samples would), so one noisy look does not decide alone.
    update["candidate"] = {**update["candidate"], "draft": record, "samples": list(winner.get("samples") or [])}
    return {**update, "draft_winner": None}


def draw_full(
    state: RefineState, config: RunnableConfig, model: ImageModel, draft: Candidate, base_prompt: str, number: int
) -> dict[str, Any]:
    """Draw the image a draft's record stands for, in full, as image `number`: the run's steps and size, the
    draft's seed, prompt and init image; `base_prompt` is the prompt before the subject was composed in (for the
    image's provenance). The update draw_round makes (screened drafts' winners, and a walk's crowned draft at
    the stop: refineloop.nodes.walk)."""
    request = run_request(
        RunSettings.from_state(state["settings"]),
        Task.from_dict(state["task"]),
        model.traits,
        prompt=draft["prompt"],
        seeds=(draft["seed"],),
        init_image=draft.get("init_image"),
        strength=draft.get("strength"),
    )
    view: RefineState = {**state, "idea": draft["idea"], "prompt": base_prompt}
    return draw_round(view, config, model, request, [], range(number, number + 1))


def draft_keys() -> tuple[str, ...]:
    """What a full image's record keeps of its draft besides the path and score."""
    return ("round", "steps", "width", "height")
