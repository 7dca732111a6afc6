"""`generate`: draw the next image from the current prompt (or from the best image, for img2img)."""

from __future__ import annotations

import time
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.chat import critic_images
from refineloop.backends.image.head_start import take
from refineloop.backends.model_cache import models_for
from refineloop.files.trace import append_trace
from refineloop.progress_events import drawing
from refineloop.round_request import round_request
from refineloop.run_folder import image_writer
from refineloop.run_folder.image_files import image_path
from refineloop.run_folder.round_files import provenance_info
from refineloop.settings import RunSettings
from refineloop.state import Candidate, RefineState
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
    planned = round_request(
        settings,
        task,
        model.traits,
        run_dir=state["run_dir"],
        iteration=state["iteration"],
        prompt=state["prompt"],
        best_path=(state.get("best") or {}).get("path"),
    )
    request, numbers, init_image, used_strength = planned.request, planned.numbers, planned.init_image, planned.strength
    first, count = numbers[0], len(numbers)
    started = time.perf_counter()
    label = f"image {first}" if count == 1 else f"images {first}-{first + count - 1}"
    with drawing(label):
        # The CLI may have begun this very draw while the run started up (refineloop.apps.head_start).
        images, head_start = take(model, request, state["run_dir"])
        if images is None:
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
            **({"head_start": head_start} if head_start else {}),
        },
    )
    update: dict[str, Any] = {"iteration": first + count - 1, "candidate": batch[0], "seconds": seconds}
    if count > 1:
        update["batch"] = batch  # one image needs no batch: every checkpoint would carry the copy
    return update
