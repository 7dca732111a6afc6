"""The CLI's head start: the first image begun while the rest of the run starts up.

`refineloop run` spends a second or more, after the image model is loaded, on work the first draw does not need:
importing LangGraph and LangChain, probing the critic, compiling the graph, opening the checkpoints. So the CLI
resolves the run (refineloop.run_start), loads the image model into the process's model cache (the one the graph
is handed, so nothing loads twice), builds the first round's request with the generate node's own function
(refineloop.round_request) and begins the draw in a thread (refineloop.backends.image.head_start), all before
LangGraph is imported. The generate node takes the images when its request is the same, else draws its own.

Only a run whose first request is known before the graph starts gets one: a new run of the shared loop, without
`--init-image` (its first round starts from the user's picture, copied into the folder later), and without a
first round of drafts. Agent modes let a
model decide the first step, and resume, fork and batch start elsewhere. Nor does a run whose image model would be
placed on a GPU beside a local Ollama critic: the critic is loaded first there (refineloop.apps.engine.load_models),
so that the image model's placement sees the memory it really leaves free. This module imports no LangGraph.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from refineloop.apps.stop_signals import stop_ends_loading
from refineloop.backends.chat.ollama import resolve_base_url
from refineloop.backends.image import head_start
from refineloop.backends.model_cache import MODELS, ModelCache
from refineloop.redaction import reveal
from refineloop.round_request import first_prompt, round_request
from refineloop.run_folder.folder import refuse_filled
from refineloop.run_start import ResolvedRun, resolve_run
from refineloop.settings import RunSettings
from refineloop.strategies import spec_for


def first_request_known(settings: RunSettings) -> bool:
    """Whether a new run's first image can be asked for before its graph starts."""
    # A first round of drafts (drafting with --candidates 2 or more) asks for drafts, not this image.
    drafts_first = settings.drafting and settings.candidates > 1
    return not settings.init_image and not drafts_first and spec_for(settings.strategy).shape == "loop"


def shares_a_gpu_with_the_critic(settings: RunSettings, models: ModelCache = MODELS) -> bool:
    """Whether a diffusers image model may be placed on a GPU that a local Ollama critic loads into too."""
    if not settings.eval_model.startswith("ollama:") or settings.device == "cpu":
        return False
    entry = models.backends.find("image", settings.image_model)
    if entry is None or entry.name != "diffusers":  # placed by its own server, or drawn on the CPU
        return False
    host = urlsplit(resolve_base_url(reveal(settings.ollama_url) or None)).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        return False
    import torch  # the image model imports it next anyway

    return bool(torch.cuda.is_available())


def begin_first_image(settings: RunSettings, models: ModelCache = MODELS) -> ResolvedRun:
    """Resolve a new run and, when its first request is known, load its image model and begin that draw.

    A --output-dir that is not empty is refused here, before the model loads, as the run's own claim of the
    folder would refuse it; a stop while the model loads ends the process in one line, nothing made.
    """
    run = resolve_run(settings)
    if not first_request_known(run.settings):
        return run
    run_dir = run.settings.output_dir
    if run.named:
        refuse_filled(Path(run_dir))
    with stop_ends_loading("nothing was kept"):
        if shares_a_gpu_with_the_critic(run.settings, models):
            return run
        model = models.image_model(run.settings)
    settings, task = run.settings, run.task
    planned = round_request(
        settings, task, model.traits, run_dir=run_dir, iteration=0, prompt=first_prompt(task), best_path=None
    )
    head_start.begin(model, planned.request, run_dir)
    return run
