"""`summarize`: condense the idea to the image model's prompt budget (prompt chaining).

Skipped when the model is uncapped or the idea already fits. The reply is checked before it becomes a
prompt: refusals and judge-format echoes are discarded, and a prompt still over budget is cut with a
warning in the trace that names what was dropped.
"""

from __future__ import annotations

import re
import time
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.budgets import can_spare_call
from refineloop.nodes.generate import compose_prompt
from refineloop.nodes.propose import usable_idea
from refineloop.prompts import summarizer_messages_text
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.tasks import Task
from refineloop.tools.chat import build_messages, traced_invoke
from refineloop.tools.image_models import ImageModel
from refineloop.tools.models import models_for
from refineloop.tools.text_safety import clean_model_text
from refineloop.tools.trace import append_trace

#: Tokens per English word, roughly, for CLIP and T5 tokenizers; used only to size the request.
TOKENS_PER_WORD = 1.4


def summarize(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Turn state.idea into state.prompt."""
    settings = RunSettings.from_dict(state["settings"])
    task = Task.from_dict(state["task"])
    models = models_for(config)
    image_model = models.image_model(settings)
    idea = state["idea"]
    budget = image_model.traits.prompt_budget
    if budget is None or image_model.count_tokens(compose_prompt(task.subject, idea)) <= budget:
        return {"prompt": idea}
    if not can_spare_call(state, settings):
        return {"prompt": fit_to_budget(idea, task.subject, image_model, state["run_dir"], state["iteration"])}
    started = time.perf_counter()
    room = budget - image_model.count_tokens(compose_prompt(task.subject, ""))
    words = max(4, int(room / TOKENS_PER_WORD))
    system, user = summarizer_messages_text(idea, words)
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
    prompt = fit_to_budget(prompt, task.subject, image_model, state["run_dir"], state["iteration"])
    return {"prompt": prompt, "critic_calls": 1, "seconds": time.perf_counter() - started}


def clean_prompt(text: str) -> str:
    """Strip preambles, quotes and line breaks a chat model tends to add (and any control characters)."""
    text = re.sub(r"^\s*(prompt|here is[^:]*|summary)\s*:\s*", "", clean_model_text(text).strip(), flags=re.I)
    return " ".join(text.strip().strip("\"'`").split())


def fit_to_budget(prompt: str, subject: str, model: ImageModel, run_dir: str, iteration: int) -> str:
    """Drop trailing words until anchor + prompt fit; record what was cut."""
    budget = model.traits.prompt_budget
    if budget is None:
        return prompt
    words = prompt.split()
    cut: list[str] = []
    while words and model.count_tokens(compose_prompt(subject, " ".join(words))) > budget:
        cut.insert(0, words.pop())
    if cut:
        append_trace(
            run_dir,
            {
                "kind": "warning",
                "iteration": iteration,
                "message": f"prompt over the {budget}-token budget; cut: {' '.join(cut)}",
            },
        )
    return " ".join(words)
