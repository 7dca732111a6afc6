"""`evaluate`: the judge. Cold, stateless, one image in; never crashes on what a model says."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig

from refineloop.prompts import JUDGE_REMINDER, judge_messages_text
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.tasks import Task
from refineloop.tools.chat import build_messages, traced_invoke
from refineloop.tools.models import models_for
from refineloop.verdicts import JudgeReply, Verdict, from_structured, parse_judge_text


def judge_image(
    runnable: Runnable, task: Task, candidate: dict[str, Any], *, attempts: int, run_dir: str
) -> Verdict | None:
    """Ask the judge (`ModelCache.judge_model`) up to `attempts` times; None when no reply yields a score.

    Structured replies are read first; a raw text reply still goes through the tolerant parser.
    """
    system, user = judge_messages_text(task, candidate["prompt"])
    messages = build_messages(system, user, candidate["path"])
    for attempt in range(attempts):
        reply, _ = traced_invoke(
            runnable,
            messages,
            run_dir=run_dir,
            role=f"judge#{attempt + 1}",
            iteration=candidate["iteration"],
            image_path=candidate["path"],
            temperature=0.0,
        )
        verdict = _read(reply)
        if verdict is not None:
            return verdict
        if attempt == 0:
            # The image stays in the first message; the reminder only restates the format.
            messages = [*messages, HumanMessage(JUDGE_REMINDER)]
    return None


def _read(reply: Any) -> Verdict | None:
    if isinstance(reply, dict):
        parsed = reply.get("parsed")
        if isinstance(parsed, JudgeReply):
            verdict = from_structured(parsed)
            if verdict is not None:
                return verdict
        reply = reply.get("raw")
    content = getattr(reply, "content", reply)
    return parse_judge_text(content if isinstance(content, str) else str(content))


def evaluate(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Score the candidate; an unparseable judge leaves the score None and the verdict 'unknown'."""
    settings = RunSettings.from_dict(state["settings"])
    judge = models_for(config).judge_model(settings)
    candidate = dict(state["candidate"] or {})
    verdict = judge_image(
        judge, Task.from_dict(state["task"]), candidate, attempts=settings.judge_attempts, run_dir=state["run_dir"]
    )
    if verdict is None:
        candidate.update(score=None, verdict="unknown", critique="the judge's replies could not be read", next_idea="")
    else:
        candidate.update(
            score=verdict.score, verdict=verdict.verdict, critique=verdict.critique, next_idea=verdict.next_idea
        )
    return {"candidate": candidate}
