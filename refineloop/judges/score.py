"""One reading of the 1-10 judge: the building block of extra samples, second looks and the final pick.

`ask_judge` is the one loop that asks it (format reminder, budget, tracing); `score_samples` folds a round's
samples of one image into its record, and the other judging steps read single readings as `Look`s.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import HumanMessage

from refineloop.backends.chat.fan_out import run_all
from refineloop.backends.chat.invoke import build_messages, traced_invoke
from refineloop.backends.chat.replies import JudgeReply
from refineloop.judges.base import Budget, Judging, pooled
from refineloop.judges.knobs import COLD, sample_temperature
from refineloop.judges.verdicts import Verdict, from_structured, parse_judge_text
from refineloop.prompts import JUDGE_REMINDER, judge_messages_text
from refineloop.settings import RunSettings
from refineloop.state import Candidate
from refineloop.tasks import Task


@dataclass(frozen=True)
class Look:
    """What one look at an image said, whatever the judge: a score on 0-10 and a verdict."""

    score: float
    verdict: str
    critique: str = ""
    next_idea: str = ""
    answers: list[float] = field(default_factory=list)
    """With the checklist judge: P(yes) per question."""
    from_logprobs: bool = False
    """Whether the answers' chances came from token log probabilities (else from the yes/no text)."""


def read_verdict(reply: Any) -> Verdict | None:
    """A structured reply's verdict when it parsed, else whatever the tolerant text parser finds."""
    if isinstance(reply, dict):
        parsed = reply.get("parsed")
        if isinstance(parsed, JudgeReply) and (verdict := from_structured(parsed)) is not None:
            return verdict
        reply = reply.get("raw")
    content = getattr(reply, "content", reply)
    return parse_judge_text(content if isinstance(content, str) else str(content))


def ask_judge(
    runnable: Any,
    task: Task,
    candidate: Mapping[str, Any],
    *,
    settings: RunSettings,
    run_dir: str,
    budget: Budget,
    label: str = "judge",
    temperature: float = COLD,
) -> Verdict | None:
    """Ask the judge prompt of one image up to `judge_attempts` times (the first retry adds a format reminder;
    the image stays in the first message); None when no reply parsed or the budget ran out. Every reading of
    the 1-10 judge goes through here: the evaluate node's samples, second looks, the final pick, the audit."""
    system, user = judge_messages_text(task, candidate["prompt"])
    messages = build_messages(system, user, candidate["path"])
    for attempt in range(settings.judge_attempts):
        if not budget.take():
            return None
        reply, _ = traced_invoke(
            runnable,
            messages,
            run_dir=run_dir,
            role=f"{label}#{attempt + 1}",
            kind="judge",
            iteration=candidate["iteration"],
            image_path=candidate["path"],
            temperature=temperature,
            settings=settings,
        )
        verdict = read_verdict(reply)
        if verdict is not None:
            return verdict
        if attempt == 0:
            messages = [*messages, HumanMessage(JUDGE_REMINDER)]
    return None


def look(
    j: Judging, candidate: Mapping[str, Any], *, temperature: float, label: str, runnable: Any = None
) -> Look | None:
    """One reading of an image as a Look; `runnable` replaces the run's own judge (the auditor)."""
    judge = runnable if runnable is not None else j.models.judge_model(j.settings, temperature)
    verdict = ask_judge(
        judge, j.task, candidate, settings=j.settings, run_dir=j.run_dir, budget=j.budget, label=label,
        temperature=temperature,
    )  # fmt: skip
    if verdict is None:
        return None
    return Look(float(verdict.score), verdict.verdict, verdict.critique, verdict.next_idea)


def score_samples(j: Judging, candidate: Candidate, samples: int) -> Candidate:
    """The 1-10 judge's `samples` readings of an image (warm when the run averages several), folded into its
    record: every sample kept in `samples`, their mean as `score`, the majority's verdict."""
    temperature = sample_temperature(j.settings.judge_samples)
    judge = j.models.judge_model(j.settings, temperature)

    def sample() -> Verdict | None:
        return ask_judge(
            judge, j.task, candidate, settings=j.settings, run_dir=j.run_dir, budget=j.budget, temperature=temperature
        )

    limit = j.at_once(samples * j.settings.judge_attempts)
    # Warm samples of one image are alike until answered: sorted, their fold does not depend on which came first.
    answers = [v for v in run_all([sample] * samples, limit) if v is not None]
    verdicts = sorted(answers, key=lambda v: (v.score, v.verdict, v.critique, v.next_idea)) if limit > 1 else answers
    record: Candidate = {**candidate}
    scores = pooled(candidate.get("samples", []), [v.score for v in verdicts])
    if not scores:
        unread: Candidate = {"score": None, "verdict": "unknown", "next_idea": ""}
        return {**record, **unread, "critique": "the judge's replies could not be read"}
    record["samples"] = scores
    record["score"] = round(statistics.fmean(scores), 2) if len(scores) > 1 else scores[0]
    if verdicts:
        done = sum(v.verdict == "DONE" for v in verdicts) * 2 > len(verdicts)
        said: Candidate = {
            "verdict": "DONE" if done else "CONTINUE",
            "critique": verdicts[0].critique,
            "next_idea": next((v.next_idea for v in verdicts if v.next_idea), ""),
        }
        record.update(said)
    return record
