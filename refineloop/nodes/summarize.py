"""`summarize`: condense the idea to the image model's prompt budget (prompt chaining).

Skipped when the model is uncapped or the idea already fits. The reply is checked before it becomes a
prompt: refusals and judge-format echoes are discarded, and a prompt still over budget is cut with a
warning in the trace that names what was dropped.

Two things come from the task and the image model. The style: comma-separated tags for a CLIP-only pipeline,
which reads keywords, and sentences for one whose prompt goes through T5 or an LLM (ImageTraits.prompt_style;
a task's `prompt_style` overrides it). The words to keep (a task's `keep`, such as a LoRA's trigger words): the
summarizer is told to carry them, any it dropped are put back in front, verbatim, and the cut to the budget
never takes them; they count in the budget like every other word.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.chat.invoke import build_messages, traced_invoke
from refineloop.backends.image.protocol import ImageModel
from refineloop.backends.model_cache import models_for
from refineloop.budgets import can_spare_call
from refineloop.prompt_text import TOKENS_PER_WORD, clean_prompt, compose_prompt, fit_to_budget, usable_idea
from refineloop.prompts import summarizer_messages_text, with_kept
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.tasks import Task


def summarize(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Turn state.idea into state.prompt."""
    settings = RunSettings.from_state(state["settings"])
    task = Task.from_dict(state["task"])
    models = models_for(config)
    image_model = models.image_model(settings)
    style = prompt_style(task, image_model)
    # Recorded once (summary.txt says which instructions ran); an unchanged value writes nothing.
    recorded = {} if state.get("prompt_style") == style else {"prompt_style": style}
    idea = with_kept(state["idea"], task.keep, task.subject)
    budget = image_model.traits.prompt_budget
    if budget is None or image_model.count_tokens(compose_prompt(task.subject, idea)) <= budget:
        return {"prompt": idea, **recorded}
    fit = functools.partial(
        fit_to_budget, subject=task.subject, model=image_model, run_dir=state["run_dir"], keep=task.keep
    )
    if not can_spare_call(state, settings):
        return {"prompt": fit(idea, iteration=state["iteration"]), **recorded}
    started = time.perf_counter()
    room = budget - image_model.count_tokens(compose_prompt(task.subject, ""))
    words = max(4, int(room / TOKENS_PER_WORD))
    system, user = summarizer_messages_text(idea, words, style, task.keep)
    model = models.chat_at(settings, 0.0)
    reply, _ = traced_invoke(
        model,
        build_messages(system, user),
        run_dir=state["run_dir"],
        role="summarize",
        iteration=state["iteration"],
        image_path=None,
        temperature=0.0,
        settings=settings,
    )
    prompt = clean_prompt(str(reply.content))
    if not usable_idea(prompt):
        prompt = idea
    prompt = fit(with_kept(prompt, task.keep, task.subject), iteration=state["iteration"])
    return {"prompt": prompt, "critic_calls": 1, "seconds": time.perf_counter() - started, **recorded}


def prompt_style(task: Task, image_model: ImageModel) -> str:
    """`tags` or `sentences`: the task's choice, else what the image model's text encoder reads best."""
    return task.prompt_style or getattr(image_model.traits, "prompt_style", "tags")
