"""Prompt text: how an idea becomes the words an image model reads, and which model replies can become one.

Shared by the nodes that write prompts (summarize, propose, review, evaluator-optimizer's writer) and the one
that draws them (generate), so none of them imports another for its text helpers.
"""

from __future__ import annotations

import re

from refineloop.backends.chat.text_safety import clean_model_text
from refineloop.backends.image.protocol import ImageModel
from refineloop.files.trace import append_trace

#: Tokens per English word, roughly, for CLIP and T5 tokenizers; used only to size the request.
TOKENS_PER_WORD = 1.4


def compose_prompt(subject: str, prompt: str) -> str:
    """The anchor first (it is what keeps the subject single and centred), then the idea; once, when the idea
    already opens with it (a task made from a goal starts from the goal itself, and critics often restate it)."""
    if not prompt:
        return subject
    if re.match(re.escape(subject) + r"(?!\w)", prompt, flags=re.IGNORECASE):
        return prompt
    return f"{subject}, {prompt}"


def usable_idea(text: str) -> bool:
    """Reject empty replies, refusals and judge-format echoes as image ideas."""
    lowered = text.lower()
    refusals = ("i cannot", "i can't", "sorry", "as an ai", "unable to")
    return len(text.split()) >= 3 and not any(r in lowered for r in refusals) and "score:" not in lowered


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
