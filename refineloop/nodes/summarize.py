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
import re
import time
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.chat.invoke import build_messages, traced_invoke
from refineloop.backends.chat.text_safety import clean_model_text
from refineloop.backends.image.protocol import ImageModel
from refineloop.backends.model_cache import models_for
from refineloop.budgets import can_spare_call
from refineloop.nodes.generate import compose_prompt
from refineloop.nodes.propose import usable_idea
from refineloop.prompts import summarizer_messages_text, with_kept
from refineloop.run_folder.trace import append_trace
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.tasks import Task

#: Tokens per English word, roughly, for CLIP and T5 tokenizers; used only to size the request.
TOKENS_PER_WORD = 1.4


def summarize(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Turn state.idea into state.prompt."""
    settings = RunSettings.from_dict(state["settings"])
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


def clean_prompt(text: str) -> str:
    """Strip preambles, quotes and line breaks a chat model tends to add (and any control characters)."""
    text = re.sub(r"^\s*(prompt|here is[^:]*|summary)\s*:\s*", "", clean_model_text(text).strip(), flags=re.I)
    return " ".join(text.strip().strip("\"'`").split())


def fit_to_budget(
    prompt: str, subject: str, model: ImageModel, run_dir: str, iteration: int, keep: tuple[str, ...] = ()
) -> str:
    """Drop trailing words until anchor + prompt fit, never a word of a `keep` phrase; record what was cut."""
    budget = model.traits.prompt_budget
    if budget is None:
        return prompt
    words = prompt.split()
    kept = _kept_words(words, keep)
    cut: list[str] = []
    while model.count_tokens(compose_prompt(subject, " ".join(words))) > budget:
        # The last word that is not part of a phrase to keep goes first.
        index = next((i for i in range(len(words) - 1, -1, -1) if not kept[i]), None)
        if index is None:
            if not words:
                break  # the anchor alone fills the budget: nothing of the prompt is left to cut
            append_trace(
                run_dir,
                {
                    "kind": "warning",
                    "iteration": iteration,
                    "message": f"the words to keep alone exceed the {budget}-token budget: kept anyway",
                },
            )
            break
        cut.insert(0, words.pop(index))
        kept.pop(index)
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


def _kept_words(words: list[str], keep: tuple[str, ...]) -> list[bool]:
    """For each word of a prompt, whether it belongs to an occurrence of one of the `keep` phrases."""
    kept = [False] * len(words)
    starts, position = [], 0
    text = " ".join(words)
    for word in words:
        starts.append(position)
        position += len(word) + 1
    for phrase in keep:
        at = text.find(phrase)
        while at != -1:
            end = at + len(phrase)
            for i, start in enumerate(starts):
                if start < end and start + len(words[i]) > at:
                    kept[i] = True
            at = text.find(phrase, end)
    return kept
