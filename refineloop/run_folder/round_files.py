"""The files of a round of images: their provenance, waiting for the writer, and remaking lost ones.

`generate` hands each new picture to the writer thread (refineloop.run_folder.image_writer); `evaluate` remakes at
its top what a crash kept from landing and waits at its end until the round is on disk, so every checkpoint
after it names only files that exist.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from langchain_core.runnables import RunnableConfig
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from refineloop.backends.chat import critic_images
from refineloop.backends.image.protocol import ImageModel, ImageRequest
from refineloop.backends.image.requests import run_request
from refineloop.backends.model_cache import models_for
from refineloop.files.trace import append_trace
from refineloop.run_folder import image_writer
from refineloop.run_folder.provenance import image_record, png_info
from refineloop.settings import RunSettings
from refineloop.state import Candidate, RefineState
from refineloop.tasks import Task


def provenance_info(
    state: RefineState,
    config: RunnableConfig,
    settings: RunSettings,
    task: Task,
    model: ImageModel,
    request: ImageRequest,
    number: int,
    seed: int,
    image: Image.Image,
) -> PngInfo:
    """The text chunks image `number` carries: how it was made (refineloop.run_folder.provenance). The state is the
    round's (its prompt and idea are those the image was drawn from until the round is accepted)."""
    configurable = (config or {}).get("configurable") or {}
    record = image_record(
        request=request,
        image=image,
        seed=seed,
        model=model,
        run_id=str(configurable.get("thread_id") or Path(state["run_dir"]).name),
        iteration=number,
        base_prompt=state["prompt"],
        idea=state["idea"],
        task=task,
        loras=settings.lora,
        scheduler=settings.scheduler,
    )
    return png_info(record)


def round_images(state: RefineState) -> list[Candidate]:
    """The images of the round `generate` made last (the candidate alone, or the whole best-of-N batch)."""
    batch = state.get("batch") or []
    candidate = state.get("candidate")
    if candidate and any(c["iteration"] == candidate["iteration"] for c in batch):
        return list(batch)
    return [candidate] if candidate else []


def remake_missing(state: RefineState, config: RunnableConfig) -> None:
    """Remake the round's PNGs that are not on disk (the process died before the writer finished them), from
    the same request and seeds, byte for byte; the whole round is drawn again so a batched model makes each
    image exactly as it did. Nothing happens when every file is there or still being written."""
    round_ = round_images(state)
    # Asked in this order: a write that lands between the two questions is renamed into place before it stops
    # being pending, so a file neither pending nor there is truly missing (the other order drew a round twice).
    missing = [c for c in round_ if not image_writer.pending(c["path"]) and not Path(c["path"]).exists()]
    if not missing:
        return
    settings = RunSettings.from_state(state["settings"])
    task = Task.from_dict(state["task"])
    model = models_for(config).image_model(settings)
    first = round_[0]
    request = run_request(
        settings,
        task,
        model.traits,
        prompt=first["prompt"],
        seeds=tuple(c["seed"] for c in round_),
        init_image=first.get("init_image"),
        strength=first.get("strength"),
    )
    if first.get("walk_draft"):  # a walk's draft is remade as it was drawn, from its record's steps and size
        drawn = first["walk_draft"]
        request = dataclasses.replace(request, steps=drawn["steps"], width=drawn["width"], height=drawn["height"])
    # A round of distinct ideas (--distinct-ideas) was drawn one request per prompt: it is remade the same way.
    requests = [dataclasses.replace(request, prompt=c["prompt"], seeds=(c["seed"],)) for c in round_]
    distinct = len({c["prompt"] for c in round_}) > 1
    pictures = [p for drawn in model.generate_many(requests) for p in drawn] if distinct else model.generate(request)
    remade = dict(zip((c["iteration"] for c in round_), pictures, strict=True))
    for candidate in missing:
        number, picture = candidate["iteration"], remade[candidate["iteration"]]
        critic_images.remember(candidate["path"], picture)
        view: RefineState = {**state, "idea": candidate.get("idea", state["idea"])} if distinct else state
        info = provenance_info(view, config, settings, task, model, request, number, candidate["seed"], picture)
        image_writer.save_later(candidate["path"], picture, info)
    append_trace(state["run_dir"], {"kind": "remade", "images": [c["iteration"] for c in missing]})
    image_writer.wait_for([c["path"] for c in missing])


def wait_for_round(state: RefineState) -> None:
    """Block until the round's PNGs are on disk, so the checkpoint that follows never names a missing file."""
    image_writer.wait_for([c["path"] for c in round_images(state)])
