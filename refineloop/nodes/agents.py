"""Evaluator-optimizer: a prompt-writing generator agent and a critic agent take turns.

    START -> setup -> generator -> generate -> critic -> accept_evaluator_optimizer --> stop -> END
                          ^                                          |
                          '------------------------------------------'

The generator agent asks the agent model (`agent_model`, else the critic's model) for the next prompt,
given the goal and the critic's last verdict; the generate node draws it, as in every other graph. The
critic agent judges it with the evaluate node (its judge: `refineloop.judges.score.ask_judge`). The image
travels in state as a path, never as text relayed between the agents, and every image is judged, the last
one included. Acceptance is greedy and best is tracked by the shared accept helpers, so the runner's
progress lines, the stop node and the artifacts work unchanged. The run stops on the judge's DONE (on an
image at least as good as the best, the rule every strategy shares) or at the image cap.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.runnables import RunnableConfig

from refineloop.backends.chat.invoke import build_messages, traced_invoke
from refineloop.backends.image.protocol import ImageModel
from refineloop.backends.model_cache import models_for
from refineloop.files.trace import append_trace
from refineloop.prompt_text import TOKENS_PER_WORD, clean_prompt, compose_prompt, fit_to_budget, usable_idea
from refineloop.prompts import with_kept
from refineloop.prompts_agents import writer_messages_text
from refineloop.schedules import STEADY_TEMPERATURE
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.stopping import stop_reason
from refineloop.tasks import Task

#: Word budget asked of the writer when the image model reads any length (the judge's own idea limit).
UNCAPPED_WORDS = 60


def prompt_words(image_model: ImageModel, subject: str) -> int:
    """How many words the writer may use: what the image model's token budget leaves after the anchor."""
    budget = image_model.traits.prompt_budget
    if budget is None:
        return UNCAPPED_WORDS
    room = budget - image_model.count_tokens(compose_prompt(subject, ""))
    return max(4, int(room / TOKENS_PER_WORD))


def generator(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """The generator agent: write the next prompt from the goal and the last critique (generate draws it)."""
    settings = RunSettings.from_state(state["settings"])
    task = Task.from_dict(state["task"])
    models = models_for(config)
    image_model = models.image_model(settings)
    iteration = state["iteration"] + 1
    # Greedy acceptance has already moved the critic's description of the next image into `idea`.
    idea = state["idea"]
    last = state.get("candidate")
    system, user = writer_messages_text(task, last, state.get("best"), idea, prompt_words(image_model, task.subject))
    writer = models.agent_model(settings, STEADY_TEMPERATURE)
    reply, _ = traced_invoke(
        writer,
        build_messages(system, user),
        run_dir=state["run_dir"],
        role="writer",
        iteration=iteration,
        image_path=None,
        temperature=STEADY_TEMPERATURE,
        settings=settings,
    )
    prompt = clean_prompt(str(reply.content))
    if not usable_idea(prompt):
        # A refusal or an empty reply must not become a prompt; the critic's own description still works.
        append_trace(
            state["run_dir"],
            {"kind": "warning", "iteration": iteration, "message": f"writer reply unusable, drew the idea: {idea}"},
        )
        prompt = clean_prompt(idea)
    # The task's words to keep (a LoRA's trigger words, say) survive the writer and the budget, as in summarize.
    prompt = with_kept(prompt, task.keep, task.subject)
    return {"prompt": fit_to_budget(prompt, task.subject, image_model, state["run_dir"], iteration, keep=task.keep)}


def route_after_critique(state: RefineState) -> Literal["stop", "generator"]:
    """Stop on DONE or at the cap (the shared stop rules); otherwise the generator writes again."""
    return "stop" if stop_reason(state) is not None else "generator"
