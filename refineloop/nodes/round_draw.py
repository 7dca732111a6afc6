"""Drawing one round's images and recording them: files, provenance, trace, and the records the judge fills in."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.chat import critic_images
from refineloop.backends.image.head_start import take
from refineloop.backends.image.protocol import ImageModel, ImageRequest
from refineloop.files.trace import append_trace
from refineloop.nodes.round_ideas import split_by_idea
from refineloop.progress_events import drawing
from refineloop.run_folder import image_writer
from refineloop.run_folder.image_files import image_path
from refineloop.run_folder.round_files import provenance_info
from refineloop.settings import RunSettings
from refineloop.state import Candidate, RefineState
from refineloop.tasks import Task


def draw_round(
    state: RefineState,
    config: RunnableConfig,
    model: ImageModel,
    request: ImageRequest,
    ideas: list[tuple[str, str]],
    numbers: range,
    *,
    walk: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Draw the round's images, numbered `numbers` with the request's seeds, one per (idea, prompt) in `ideas`
    when they differ (else all from the request's prompt, in one batched call), and record them. `walk`: the
    steps and size of a walk's drafts (--draft-walk), which the records keep with each image's own prompt."""
    settings = RunSettings.from_state(state["settings"])
    task = Task.from_dict(state["task"])
    requests = split_by_idea(request, ideas, task.subject)
    started = time.perf_counter()
    count = len(numbers)
    first = numbers[0]
    label = f"image {first}" if count == 1 else f"images {first}-{first + count - 1}"
    with drawing(label):
        # The CLI may have begun this very draw while the run started up (refineloop.apps.head_start); `take`
        # also waits for a draw still running on the model, which must not be called from two threads at once.
        drawn_ahead, head_start = take(model, request, state["run_dir"])
        if len(requests) > 1:
            head_start = "discarded" if head_start else None  # a round of several ideas was not drawn ahead
            images = [picture for drawn in model.generate_many(requests) for picture in drawn]
        else:
            images = model.generate(request) if drawn_ahead is None else drawn_ahead
    batch: list[Candidate] = []
    for k, (number, seed, image) in enumerate(zip(numbers, request.seeds, images, strict=True)):
        one = requests[k] if len(requests) > 1 else request
        idea, prompt = ideas[k] if len(ideas) > 1 else (state["idea"], state["prompt"])
        path = image_path(state["run_dir"], number)
        critic_images.remember(path, image)  # the critic reads it from memory, not back from disk
        view: RefineState = {**state, "idea": idea, "prompt": prompt}
        info = provenance_info(view, config, settings, task, model, one, number, seed, image)
        image_writer.save_later(path, image, info)
        record = new_candidate(number, path, one.prompt, idea, seed, request)
        if walk is not None:  # the prompt too: the stop draws this draft in full from its record alone
            record["walk_draft"] = {**walk, "base_prompt": prompt}
        batch.append(record)
    seconds = time.perf_counter() - started
    append_trace(
        state["run_dir"],
        {
            "kind": "image",
            "iteration": first,
            "images": [c["iteration"] for c in batch],
            "model": model.name,
            "prompt": request.prompt,
            **({"prompts": [c["prompt"] for c in batch]} if len(requests) > 1 else {}),
            "negative_prompt": request.negative_prompt,
            "seed": request.seeds[0],
            "seeds": list(request.seeds),
            "init_image": request.init_image,
            "strength": request.strength,
            "path": batch[0]["path"],
            "seconds": round(seconds, 4),
            **({"head_start": head_start} if head_start else {}),
        },
    )
    update: dict[str, Any] = {"iteration": first + count - 1, "candidate": batch[0], "seconds": seconds}
    if count > 1:
        update["batch"] = batch  # one image needs no batch: every checkpoint would carry the copy
    return update


def new_candidate(number: int, path: Path, prompt: str, idea: str, seed: int, request: ImageRequest) -> Candidate:
    """The record of a freshly drawn, not yet judged image."""
    return {
        "iteration": number,
        "path": str(path),
        "prompt": prompt,
        "idea": idea,
        "seed": seed,
        "strength": request.strength,
        "init_image": request.init_image,
        "score": None,
        "verdict": "unknown",
        "critique": "",
        "next_idea": "",
    }
