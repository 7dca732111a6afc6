"""`propose`: ask the critic for a fresh idea from the image the search stands on.

A strategy that walks from the best image (climbing, img2img) proposes from it, one that walks from its
current image (annealing) from that; the ideas that already failed from there are listed so the proposer
looks elsewhere. Where the strategy cools, the proposer's sampling temperature follows the cooling schedule;
the judge never warms.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.chat.invoke import build_messages, traced_invoke
from refineloop.backends.model_cache import models_for
from refineloop.budgets import can_spare_call
from refineloop.judges.verdicts import parse_idea
from refineloop.prompt_text import usable_idea
from refineloop.prompts import proposer_messages_text, with_kept
from refineloop.schedules import STEADY_TEMPERATURE, proposer_temperature, temperature
from refineloop.settings import RunSettings
from refineloop.state import Candidate, RefineState
from refineloop.strategies import spec_for
from refineloop.tasks import Task


def propose(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Write a new idea into state; fall back to the escalation ladder when the reply is unusable."""
    settings = RunSettings.from_state(state["settings"])
    task = Task.from_dict(state["task"])
    iteration = state["iteration"]
    spec = spec_for(settings.strategy)
    if spec.cools:
        sampling = proposer_temperature(
            temperature(settings.initial_temp, settings.cooling_rate, iteration), settings.initial_temp
        )
    else:
        sampling = STEADY_TEMPERATURE
    base = proposal_base(state, settings)
    assert base is not None, "propose runs only after an image exists"
    failed = list(state.get("failed_ideas") or [])
    previous = base.get("next_idea") or base.get("idea", "")
    if not can_spare_call(state, settings):
        return {"idea": fallback_idea(task, previous, failed, iteration)}
    started = time.perf_counter()
    idea = ask_proposer(state, config, settings, base, failed, sampling) or fallback_idea(
        task, previous, failed, iteration
    )
    idea = with_kept(idea, task.keep, task.subject)  # a fallback carries the words to keep too
    return {"idea": idea, "critic_calls": 1, "seconds": time.perf_counter() - started}


def ask_proposer(
    state: RefineState,
    config: RunnableConfig,
    settings: RunSettings,
    base: Candidate,
    avoid: list[str],
    sampling: float = STEADY_TEMPERATURE,
) -> str | None:
    """One proposer call: a new idea from image `base`, told that the ideas in `avoid` were tried already; None
    when the reply holds no usable idea. The task's words to keep go back in when the proposer dropped them."""
    task = Task.from_dict(state["task"])
    # With --judge checklist the image's unmet questions are what the next image should fix.
    system, user = proposer_messages_text(task, base["prompt"], base.get("score"), avoid, base.get("unmet") or ())
    model = models_for(config).chat_at(settings, sampling)
    reply, _ = traced_invoke(
        model,
        build_messages(system, user, base["path"]),
        run_dir=state["run_dir"],
        role="propose",
        iteration=state["iteration"],
        image_path=base["path"],
        temperature=sampling,
        settings=settings,
    )
    idea = parse_idea(str(reply.content))
    return with_kept(idea, task.keep, task.subject) if usable_idea(idea) else None


def proposal_base(state: RefineState, settings: RunSettings) -> Candidate | None:
    """The image a new idea starts from: the best, or for a strategy that walks from its current image, that one."""
    if spec_for(settings.strategy).walks_from == "current":
        return state.get("current") or state.get("best") or state.get("candidate")
    return state.get("best") or state.get("current") or state.get("candidate")


def fallback_idea(task: Task, previous: str, failed: list[str], iteration: int) -> str:
    """A deterministic new idea: the next escalation step not yet tried, added to the last idea."""
    steps = [s for s in task.escalation if s not in " ".join(failed)] or list(task.escalation) or ["more intense"]
    return f"{previous or task.start_prompt}, {steps[iteration % len(steps)]}"
