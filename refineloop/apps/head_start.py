"""The CLI's head start: the first image begun while the rest of the run starts up.

`refineloop run` spends a second or more, after the image model is loaded, on work the first draw does not need:
importing LangGraph and LangChain, probing the critic, compiling the graph, opening the checkpoints. So the CLI
resolves the run (refineloop.run_start) and opens its folder (refineloop.apps.new_run), then loads the image
model into the process's model cache (the one the graph is handed, so nothing loads twice), builds the first
round's request with the generate node's own function (refineloop.round_request) and begins the draw in a thread
(refineloop.backends.image.head_start), all before LangGraph is imported. The generate node takes the images when
its request is the same, else draws its own. `--no-head-start` turns it off.

A draw on the CPU with every core (diffusers without a GPU, torch's default threads) gets no head start unless
`--head-start` asks for one: the start-up beside it would slow it by more than it hides.

Only a run whose first request is known before the graph starts gets one: a new run of the shared loop, without
`--init-image` (its first round starts from the user's picture, copied into the folder later), and without a
first round of drafts. Agent modes let a model decide the first step, and resume, fork and batch start elsewhere.
When a diffusers image model shares a CUDA GPU with a local Ollama critic, the critic is loaded first
(refineloop.apps.critic_load), as a run without a head start loads it, so that the image model's placement sees
the memory it really leaves free. This module imports no LangGraph.
"""

from __future__ import annotations

import os

from refineloop.apps.critic_load import check_critic, load_critic, on_this_machine
from refineloop.apps.new_run import OpenedRun
from refineloop.backends.chat.ollama import settings_url
from refineloop.backends.image import head_start
from refineloop.backends.model_cache import MODELS, ModelCache
from refineloop.round_request import first_prompt, round_request
from refineloop.settings import RunSettings
from refineloop.strategies import spec_for


def first_request_known(settings: RunSettings) -> bool:
    """Whether a new run's first image can be asked for before its graph starts."""
    # A first round of screened drafts (--candidates 2 or more, no --draft-walk) asks for drafts, not this image;
    # a walk's first draft is its first image, and round_request asks for it.
    drafts_first = settings.screening and settings.candidates > 1
    return not settings.init_image and not drafts_first and spec_for(settings.strategy).shape == "loop"


def shares_memory_with_the_critic(settings: RunSettings, models: ModelCache = MODELS) -> bool:
    """Whether a diffusers image model is placed on the machine a local Ollama critic loads into."""
    if not settings.eval_model.startswith("ollama:"):
        return False
    entry = models.backends.find("image", settings.image_model)
    if entry is None or entry.name != "diffusers":  # placed by its own server
        return False
    return on_this_machine(settings_url(settings))


def begin_first_image(opened: OpenedRun, models: ModelCache = MODELS, *, always: bool = False) -> None:
    """When the first request of a new run (its folder opened) is known, load its image model, the critic first
    when they share a GPU, and begin that draw, if it leaves the start-up a CPU core (or `always`: the user
    asked with --head-start). The caller stops it on its way out (refineloop.backends.image.head_start.stop)."""
    settings, task = opened.run.settings, opened.run.task
    if not first_request_known(settings):
        return
    if shares_memory_with_the_critic(settings, models) and _has_a_gpu():
        check_critic(settings)  # a blind or missing model is refused before it takes any memory
        opened.critic_note = load_critic(settings)
    model = models.image_model(settings)
    if not always and not leaves_a_core_free(model):
        return  # loaded all the same: the run finds it in the cache
    planned = round_request(
        settings, task, model.traits, run_dir=settings.output_dir, iteration=0, prompt=first_prompt(task),
        best_path=None,
    )  # fmt: skip
    head_start.begin(model, planned.request, settings.output_dir)


def leaves_a_core_free(model: object) -> bool:
    """Whether drawing with `model` leaves a CPU core to the rest of the start-up: it draws on a GPU or in a
    server, or on the CPU with fewer torch threads than the machine has cores. A draw on every core would only
    be slowed by the start-up beside it, and more than it hides (docs/bench.md: +2.1 s against +0.5 to +1.3 s
    on 2 cores, where torch's threads wait on each other when one loses its core)."""
    if getattr(model, "device", "") != "cpu":  # diffusers names its device; servers and the sketch have none
        return True
    import torch

    return torch.get_num_threads() < (os.cpu_count() or 1)


def _has_a_gpu() -> bool:
    """Whether torch sees a CUDA GPU: only there does the image model's placement depend on the memory the critic
    holds. Without one the critic loads after LangGraph, while the first image is drawn (loading it first put
    Ollama's client and its imports, about 1 s on the 2-core machine, before the draw: docs/bench.md)."""
    import torch  # the image model imports it next anyway

    return bool(torch.cuda.is_available())
