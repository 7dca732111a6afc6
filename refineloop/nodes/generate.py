"""`generate`: draw the next image from the current prompt (or from the best image, for img2img)."""

from __future__ import annotations

import time
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.chat import critic_images
from refineloop.backends.image.protocol import ImageRequest
from refineloop.backends.model_cache import models_for
from refineloop.files.trace import append_trace
from refineloop.progress_events import drawing
from refineloop.prompt_text import compose_prompt
from refineloop.run_folder import image_writer
from refineloop.run_folder.image_files import image_path
from refineloop.run_folder.round_files import provenance_info
from refineloop.schedules import image_seed, strength
from refineloop.settings import RunSettings
from refineloop.state import Candidate, RefineState
from refineloop.strategies import spec_for
from refineloop.tasks import Task


def generate(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Make the next round's images (one, or --candidates in one batched call) from the current prompt.

    Images are numbered on from state.iteration; each has its own seed derived from the run seed and its
    number, so any image can be remade alone. Their PNGs are written by the writer thread while the critic
    judges them from memory (refineloop.run_folder.image_writer); `evaluate` waits for the files.
    """
    settings = RunSettings.from_state(state["settings"])
    task = Task.from_dict(state["task"])
    model = models_for(config).image_model(settings)
    first = state["iteration"] + 1
    count = max(1, min(settings.candidates, settings.image_cap() - state["iteration"]))
    numbers = range(first, first + count)
    best = state.get("best")
    init_image, used_strength = None, None
    # The user's own picture (--init-image, image 0) starts the first round, whatever the strategy.
    from_picture = bool(settings.init_image) and state["iteration"] == 0
    if (from_picture or (spec_for(settings.strategy).from_image and best)) and model.traits.img2img:
        init_image = str(image_path(state["run_dir"], 0)) if from_picture else (best or {})["path"]
        if model.traits.strength:
            round_number = (first - 1) // settings.candidates + 1
            # The schedule reaches --initial-strength at round 2 (round 1 is text-to-image); a picture's round 1 too.
            used_strength = strength(
                max(2, round_number), settings.max_iterations, settings.initial_strength, settings.final_strength
            )
    request = ImageRequest(
        prompt=compose_prompt(task.subject, state["prompt"]),
        negative_prompt=task.negative_prompt if model.traits.negative_prompt else "",
        seeds=tuple(image_seed(settings.seed or 0, n, settings.first_seed) for n in numbers),
        init_image=init_image,
        strength=used_strength,
        width=settings.width,
        height=settings.height,
        steps=settings.steps,
        guidance=settings.guidance,
        scheduler=settings.scheduler,
    )
    started = time.perf_counter()
    label = f"image {first}" if count == 1 else f"images {first}-{first + count - 1}"
    with drawing(label):
        images = model.generate(request)
    batch: list[Candidate] = []
    for number, seed, image in zip(numbers, request.seeds, images, strict=True):
        path = image_path(state["run_dir"], number)
        critic_images.remember(path, image)  # the critic reads it from memory, not back from disk
        info = provenance_info(state, config, settings, task, model, request, number, seed, image)
        image_writer.save_later(path, image, info)
        batch.append(
            {
                "iteration": number,
                "path": str(path),
                "prompt": request.prompt,
                "idea": state["idea"],
                "seed": seed,
                "strength": used_strength,
                "init_image": init_image,
                "score": None,
                "verdict": "unknown",
                "critique": "",
                "next_idea": "",
            }
        )
    seconds = time.perf_counter() - started
    append_trace(
        state["run_dir"],
        {
            "kind": "image",
            "iteration": first,
            "images": [c["iteration"] for c in batch],
            "model": model.name,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seeds[0],
            "seeds": list(request.seeds),
            "init_image": init_image,
            "strength": used_strength,
            "path": batch[0]["path"],
            "seconds": round(seconds, 4),
        },
    )
    update: dict[str, Any] = {"iteration": first + count - 1, "candidate": batch[0], "seconds": seconds}
    if count > 1:
        update["batch"] = batch  # one image needs no batch: every checkpoint would carry the copy
    return update
