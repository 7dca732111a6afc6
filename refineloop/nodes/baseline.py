"""`baseline`: the user's own picture (`--init-image`), judged first as image 0.

    setup --(--init-image)--> baseline --> generate | router | generator    (whichever the graph draws with)
      '---------------------(no picture)--------------^

The picture is fitted to the run's size (refineloop.run_folder.init_picture), kept as `00.png`, and judged by
the run's own judge. It then stands as the current and best image, so every strategy must beat it, and the
report, summary.txt and the final pick show whether the run improved on it; the first image drawn is an
img2img of it (refineloop.nodes.generate). Its own checkpoint follows the node, so a resumed run never judges
it again; a crash inside the node re-runs it whole (it only writes `00.png`, `00.json` and its trace lines).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig

from refineloop.backends.model_cache import models_for
from refineloop.budgets import critic_calls_left
from refineloop.errors import ModelError
from refineloop.files.trace import append_trace
from refineloop.judges.audit import audit_each
from refineloop.judges.base import Budget, Judging
from refineloop.judges.checklist import prepare_checklist
from refineloop.judges.round import round_extras
from refineloop.judges.samples import score_image
from refineloop.outputs.report import refresh_live_report
from refineloop.prompt_text import compose_prompt
from refineloop.run_folder.image_files import image_path, save_image
from refineloop.run_folder.init_picture import fit_picture
from refineloop.run_folder.score_index import save_sidecar
from refineloop.settings import RunSettings
from refineloop.state import Candidate, HistoryEntry, RefineState
from refineloop.tasks import Task

#: The decision recorded for image 0 (sidecar, history, report tag).
BASELINE = "baseline"


def starts_from_picture(state: RefineState) -> bool:
    """Whether the run was given a picture of the user's own to start from."""
    return bool((state.get("settings") or {}).get("init_image"))


def after_setup_loop(state: RefineState) -> Literal["baseline", "generate"]:
    """The shared loop: judge the user's picture first, when there is one."""
    return "baseline" if starts_from_picture(state) else "generate"


def after_setup_agent(state: RefineState) -> Literal["baseline", "router"]:
    """Agent mode: judge the user's picture before the router's first pick."""
    return "baseline" if starts_from_picture(state) else "router"


def after_setup_writer(state: RefineState) -> Literal["baseline", "generator"]:
    """Evaluator-optimizer: judge the user's picture before the prompt writer's first prompt."""
    return "baseline" if starts_from_picture(state) else "generator"


def baseline(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Fit, keep and judge the user's picture as image 0: the current and best image until one beats it."""
    started = time.perf_counter()
    settings = RunSettings.from_state(state["settings"])
    task = Task.from_dict(state["task"])
    models = models_for(config)
    run_dir = state["run_dir"]
    path = _kept_picture(settings, models.image_model(settings), run_dir)
    budget = Budget(critic_calls_left(state, settings))
    judging = Judging(models, settings, task, run_dir, budget)
    task, checklist = prepare_checklist(judging, state)  # --judge checklist: the questions come first
    judging = dataclasses.replace(judging, task=task)
    picture: Candidate = {
        "iteration": 0,
        "path": str(path),
        # Judged against what the run aims for: the words the first drawn image is made from.
        "prompt": compose_prompt(task.subject, state["prompt"]),
        "idea": state["idea"],
        "strength": None,
        "init_image": None,
        "score": None,
        "verdict": "unknown",
        "critique": "",
        "next_idea": "",
    }
    judged = score_image(judging, picture, settings.judge_samples)
    (judged,) = audit_each(judging, [judged])
    entry: HistoryEntry = {
        "iteration": 0,
        "score": judged.get("score"),
        "verdict": judged["verdict"],
        "decision": BASELINE,
        "best_iteration": 0,
        "best_score": judged.get("score"),
        "temperature": None,
        "draw": None,
    }
    save_sidecar({**judged, **entry, "source": Path(settings.init_image).name}, run_dir, 0)
    update: dict[str, Any] = {
        "candidate": judged,
        "current": judged,
        "best": judged,
        "decision": BASELINE,
        "history": [entry],
        "critic_calls": budget.used,
        "seconds": time.perf_counter() - started,
        **round_extras([judged], judging, checklist),
    }
    refresh_live_report(run_dir, {**state, **update, "history": [entry]})
    return update


def _kept_picture(settings: RunSettings, model: Any, run_dir: str) -> Path:
    """`00.png`: the picture fitted to the run's size (the model's traits decide whether it can start from it)."""
    if not model.traits.img2img:
        raise ModelError(f"--init-image: {model.name} cannot start from a picture; use an img2img model")
    try:
        fitted = fit_picture(settings.init_image, settings, model)
    except OSError as exc:
        raise ModelError(f"--init-image {settings.init_image} can no longer be read ({type(exc).__name__})") from None
    path = image_path(run_dir, 0)
    save_image(fitted, path)
    append_trace(
        run_dir,
        {"kind": "baseline", "iteration": 0, "source": Path(settings.init_image).name, "size": list(fitted.size)},
    )
    return path
