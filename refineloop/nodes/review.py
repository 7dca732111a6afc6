"""`review`: a person approves, rewrites or stops each next image (`--review`, or `review` in Studio's form).

In the four strategy graphs the review sits just before the next image is drawn:

    accept_<strategy> -> [propose ->] summarize -> review -> generate     (review on)
                                                  |         '-> stop      (the reviewer stopped the run)
                                                  '-> generate            (review off: no pause, no extra step)

So the pause comes after the image was judged and accepted or rejected, and after the strategy chose the next
prompt (the critic's idea, or the proposer's when the image was rejected): the person sees exactly the prompt
the next image would get, and an edited prompt cannot be overwritten by a proposer that runs later. When the
strategy stops on its own (DONE, the cap, patience) there is nothing left to decide, so no pause is made.

The node calls `langgraph.types.interrupt` first: the graph checkpoints and returns, and the answer comes back
through `Command(resume=answer)` (the terminal runner, or `runs.wait(..., command={"resume": answer})` from
Studio). The node then re-runs from its top with `interrupt` returning the answer, so everything before the
interrupt is pure and everything after it rewrites the same files.

An answer is one of `{"action": "approve"}`, `{"action": "edit", "prompt": "..."}` or
`{"action": "stop", "reason": "..."}` (the reason is optional); the strings "approve" and "stop" also work. An
answer that is none of these asks again, with the problem named in the payload. With --judge checklist,
`{"action": "checklist", "questions": [...]}` replaces the run's checklist (each question text, optionally ending
`| weight`, or {"question", "weight"}) and asks again, so the person still approves, edits or stops.
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import interrupt

from refineloop.backends.model_cache import models_for
from refineloop.files.trace import append_trace
from refineloop.judges.checklist import edited_checklist
from refineloop.prompt_text import clean_prompt, fit_to_budget
from refineloop.run_folder.image_files import read_record, sidecar_path
from refineloop.run_folder.score_index import save_sidecar
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.tasks import Task

ACTIONS = ("approve", "edit", "stop", "checklist")
#: Short forms a terminal user or a Studio user may type instead of the dict.
ALIASES = {
    "a": "approve",
    "approve": "approve",
    "e": "edit",
    "edit": "edit",
    "s": "stop",
    "stop": "stop",
    "c": "checklist",
    "checklist": "checklist",
}


class ReviewState(RefineState, total=False):
    """The refinement state plus the reviewer's stop (checkpointed, so a resumed run still stops)."""

    review_stop: str
    """Why the reviewer stopped the run, in words; empty unless a person chose stop."""


def review_payload(
    state: RefineState, problem: str = "", checklist: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """What the person is shown: builtins only, so the terminal, the API and Studio all read it as is. With
    --judge checklist it holds the checklist (`checklist`: a replacement given at this pause) and its answer."""
    candidate = state.get("candidate") or {}
    best = state.get("best") or {}
    from_critic = bool(candidate.get("next_idea")) and state.get("idea") == candidate.get("next_idea")
    payload: dict[str, Any] = {
        "question": "approve the next prompt, edit it, or stop the run",
        "iteration": state.get("iteration", 0),
        "cap": RunSettings.from_state(state.get("settings")).image_cap(),
        "image": candidate.get("path", ""),
        "score": candidate.get("score"),
        "verdict": candidate.get("verdict", "unknown"),
        "critique": candidate.get("critique", ""),
        "decision": state.get("decision", ""),
        "best_iteration": best.get("iteration"),
        "best_score": best.get("score"),
        "next_idea": state.get("idea", ""),
        "next_prompt": state.get("prompt", ""),
        "next_from": "critic" if from_critic else "proposer",
        "answers": [{"action": "approve"}, {"action": "edit", "prompt": "..."}, {"action": "stop", "reason": "..."}],
    }
    questions = checklist if checklist is not None else state.get("checklist")
    if questions:
        payload["checklist"] = questions
        payload["answers"].append({"action": "checklist", "questions": ["a yes/no question", "another | 2"]})
    if problem:
        payload["problem"] = problem
    return payload


def parse_answer(answer: Any) -> tuple[str, str, str]:
    """(action, text, problem): text is the new prompt for edit or the reason for stop; problem is empty when
    the answer is usable, else says what is wrong with it."""
    if isinstance(answer, str):
        answer = {"action": answer}
    if not isinstance(answer, dict):
        return "", "", f"an answer is a dict like {{'action': 'approve'}}, not {type(answer).__name__}"
    action = ALIASES.get(str(answer.get("action", "")).strip().lower(), "")
    if not action:
        return "", "", f"unknown action {answer.get('action')!r}: use one of {', '.join(ACTIONS)}"
    if action == "edit":
        text = clean_prompt(str(answer.get("prompt") or answer.get("idea") or ""))
        if not text:
            return "", "", "edit needs a non-empty 'prompt'"
        return action, text, ""
    return action, str(answer.get("reason") or "").strip() if action == "stop" else "", ""


def review(state: ReviewState, config: RunnableConfig) -> dict[str, Any]:
    """Pause for the person's answer, then apply it: nothing for approve, the new prompt for edit, the reason
    for stop."""
    problem, checklist = "", None
    while True:
        # Each interrupt() call in a node is matched to the resume values by order, so a re-run after an
        # unusable answer replays the same questions and the loop lands on the first unanswered one.
        answer = interrupt(review_payload(state, problem, checklist))
        action, text, problem = parse_answer(answer)
        if action == "checklist" and not problem:
            # A new checklist is not a decision about the next image: it is kept, and the question asked again.
            given, problem = _checklist_answer(state, answer)
            checklist = given if given is not None else checklist
            continue
        if not problem:
            break
    iteration = state["iteration"]
    record: dict[str, Any] = {"action": action}
    update: dict[str, Any] = {}
    if checklist is not None:
        update["checklist"] = record["checklist"] = checklist
    if action == "edit":
        settings = RunSettings.from_state(state["settings"])
        task = Task.from_dict(state["task"])
        image_model = models_for(config).image_model(settings)
        # The person's words go in as written; only a prompt over the model's budget is cut (with a warning
        # in the trace), exactly as summarize treats the critic's.
        prompt = fit_to_budget(text, task.subject, image_model, state["run_dir"], iteration)
        update = {"idea": text, "prompt": prompt}
        record["prompt"] = prompt
    elif action == "stop":
        reason = f"stopped by the reviewer at image {iteration}" + (f": {text}" if text else "")
        # The stop node says this reason: no stop rule fires on a run the reviewer ends mid-way.
        update = {"review_stop": reason, "stop_reason": reason}
        record["reason"] = reason
    _record(state["run_dir"], iteration, record)
    return update


def _checklist_answer(state: ReviewState, answer: Any) -> tuple[list[dict[str, Any]] | None, str]:
    """The reviewer's new checklist, or None and what is wrong with the answer."""
    if RunSettings.from_state(state["settings"]).judge != "checklist":
        return None, "this run does not judge with a checklist (--judge checklist): approve, edit or stop"
    questions, problem = edited_checklist(answer.get("questions") if isinstance(answer, dict) else None)
    return (None, problem) if problem else (questions, "")


def _record(run_dir: str, iteration: int, record: dict[str, Any]) -> None:
    """Keep the answer beside the image it was about, and in the trace (a rewrite on re-run, not a second
    sidecar entry)."""
    append_trace(run_dir, {"kind": "review", "iteration": iteration, **record})
    path = sidecar_path(run_dir, iteration)
    sidecar = read_record(path)
    if sidecar is None:
        return  # no sidecar to annotate (the image's own record is the accept node's job)
    save_sidecar({**sidecar, "review": record}, run_dir, iteration)


def route_to_review(state: ReviewState) -> Literal["review", "generate"]:
    """Ask the person only when the run was started with review on; otherwise draw at once."""
    return "review" if RunSettings.from_state(state["settings"]).review else "generate"


def route_after_review(state: ReviewState) -> Literal["generate", "stop"]:
    """The reviewer's stop ends the run; approve and edit draw the next image."""
    return "stop" if state.get("review_stop") else "generate"
