"""Prompts for the agent roles: agent mode's router and evaluator-optimizer's prompt writer.

The router is shown a compact text view of the run, never an image: choosing the next step needs the
numbers and the critic's words, not pixels. The writer's prompt keeps the critic's description of the
next image under a `Description:` heading, the same shape the summarizer uses, so the offline demo critic
can play the writer too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refineloop.prompts import keep_line
from refineloop.state import score_words
from refineloop.tasks import Task

ROUTER_SYSTEM = """You direct an image refinement loop towards a goal.
Goal: {goal}
Each turn you pick the next step by calling exactly one tool:
- generate: draw the next image from the current prompt
- evaluate: have the vision critic score the newest image
- summarize: turn the critic's latest description into the prompt for the next image
- stop: end the run; the best image so far is kept
A sound cycle is generate, evaluate, summarize, then generate again; stop when the critic says DONE or when
more images will not help. Only the steps listed as allowed will be followed. Call one tool, write nothing else."""

ROUTER_USER = """Images made: {made} of at most {cap}{cap_note}
Newest image: {newest}
Critique: {critique}
Best so far: {best}
Idea for the next image: {idea}
Prompt for the next image: {prompt}{prompt_note}
Last step: {last}
Allowed now: {allowed}"""

WRITER_SYSTEM = """You write the prompts for an image model, taking turns with a critic who judges each image.
Goal: {goal}
Subject (it is put in front of every prompt for you; do not repeat it): {subject}
Ways to push further, mildest first:
{escalation}
Read the critic's verdict on the last image and write the prompt for the next one: keep what worked and fix
what the critique says holds it back.
Answer with the prompt only: comma-separated visual phrases, at most {words} words, no quotes, no preamble."""

WRITER_FIRST_USER = """There is no image yet: write the prompt for the first one.
Description:
{idea}"""

WRITER_USER = """Last image: #{iteration}, score {score}/10 ({verdict}); best so far {best}.
It was drawn from: {prompt}
Critique: {critique}
The critic's description of the next image follows.
Description:
{idea}"""


def router_messages_text(task: Task, view: dict[str, Any]) -> tuple[str, str]:
    """System and user text for one routing decision; `view` comes from the router's state summary."""
    return ROUTER_SYSTEM.format(goal=task.goal), ROUTER_USER.format(**view)


def writer_messages_text(
    task: Task, last: Mapping[str, Any] | None, best: Mapping[str, Any] | None, idea: str, words: int
) -> tuple[str, str]:
    """System and user text for the prompt writer; `last` is the newest judged image, None before the first."""
    system = WRITER_SYSTEM.format(
        goal=task.goal,
        subject=task.subject,
        escalation="\n".join(f"- {step}" for step in task.escalation) or "- (use your own judgement)",
        words=words,
    ) + keep_line(task.keep)
    if last is None:
        return system, WRITER_FIRST_USER.format(idea=idea)
    best_text = f"{score_words(best.get('score'))}/10 on #{best['iteration']}" if best else "none yet"
    user = WRITER_USER.format(
        iteration=last["iteration"],
        score=score_words(last.get("score")),
        verdict=last.get("verdict", "unknown"),
        best=best_text,
        prompt=last.get("prompt", ""),
        critique=last.get("critique") or "(none)",
        idea=idea,
    )
    return system, user
