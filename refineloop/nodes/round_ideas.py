"""Distinct ideas for a round's candidates (--distinct-ideas): best-of-N over ideas rather than over seeds.

N seeds of one prompt only buy seed luck; N ideas buy the spread of what a new idea brings, which is wider. The
round's first candidate follows the idea the loop already chose (the critic's, or the proposer's); each further
one is asked of the proposer from the same image, told the ideas already taken so it looks elsewhere. Each idea
is cut to the image model's prompt budget without a summarizer call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.image.protocol import ImageRequest
from refineloop.backends.model_cache import models_for
from refineloop.budgets import can_spare_call
from refineloop.nodes.propose import ask_proposer, fallback_idea, proposal_base
from refineloop.prompt_text import compose_prompt, fit_to_budget
from refineloop.prompts import with_kept
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.tasks import Task


def round_ideas(
    state: RefineState, config: RunnableConfig, settings: RunSettings, count: int
) -> tuple[list[tuple[str, str]], int]:
    """(idea, prompt) for each of the round's `count` candidates, and the proposer calls made for them; an empty
    list when they all share the state's idea (no --distinct-ideas, one candidate, or no image to propose from)."""
    base = proposal_base(state, settings)
    if not settings.distinct_ideas or count < 2 or base is None:
        return [], 0
    task = Task.from_dict(state["task"])
    image_model = models_for(config).image_model(settings)
    ideas = [(state["idea"], state["prompt"])]
    failed = list(state.get("failed_ideas") or [])
    calls = 0
    for k in range(1, count):
        taken = failed + [idea for idea, _ in ideas]
        spent: dict[str, Any] = {**state, "critic_calls": state.get("critic_calls", 0) + calls}
        idea = None
        if can_spare_call(spent, settings):
            idea = ask_proposer(state, config, settings, base, taken)
            calls += 1
        previous = base.get("next_idea") or base.get("idea", "")
        idea = with_kept(idea or fallback_idea(task, previous, taken, state["iteration"] + k), task.keep, task.subject)
        prompt = fit_to_budget(
            idea,
            subject=task.subject,
            model=image_model,
            run_dir=state["run_dir"],
            iteration=state["iteration"],
            keep=task.keep,
        )
        ideas.append((idea, prompt))
    return ideas, calls


def split_by_idea(request: ImageRequest, ideas: list[tuple[str, str]], subject: str) -> list[ImageRequest]:
    """One request per candidate, each with its own prompt and seed, when the round's ideas differ; else the
    request itself (one batched call)."""
    if not ideas:
        return [request]
    return [
        dataclasses.replace(request, prompt=compose_prompt(subject, prompt), seeds=(seed,))
        for (_, prompt), seed in zip(ideas, request.seeds, strict=True)
    ]
