"""`--judge checklist`: weighted yes/no questions instead of a 1-10 score (DSG, VQAScore, OPT2I's checklists).

Once per run the critic turns the goal into 4-10 questions that a viewer answers from the image alone, each with a
weight (a task file's `checklist = [...]` replaces them; a reviewer may edit them at --review). Every image is
asked all of them in one call; its score is the weighted share of yes answers on 0-10. Where the backend returns
token log probabilities (Ollama's chat API does), the chance of "yes" at each answer replaces the yes/no, so the
score moves in small steps instead of jumping a whole question at a time. An image that passes every question
is DONE; the questions it fails go to the proposer as what to fix next.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import HumanMessage

from refineloop.backends.chat.invoke import build_messages, traced_invoke
from refineloop.backends.chat.text_safety import clean_model_text
from refineloop.judges.base import Judging, pooled
from refineloop.judges.knobs import COLD, PASS, sample_temperature
from refineloop.judges.score import Look
from refineloop.progress_events import critic_phase
from refineloop.prompts import CHECKLIST_REMINDER, checklist_ask_text, checklist_writer_text
from refineloop.state import Candidate, as_verdict
from refineloop.tasks import MAX_CHECKLIST, MAX_ITEM, MAX_WEIGHT, Task

LEAST = 4
"""Fewest questions a checklist has: the critic's are filled up from the task's criteria when it writes fewer."""

_QUESTION = re.compile(r"^\W*QUESTION\s*:\s*(.+?)\s*(?:\|\s*WEIGHT\s*:\s*(\d+(?:\.\d+)?))?\s*$", re.I | re.M)
_ANSWER = re.compile(r"^\W*Q?\s*(\d{1,2})\s*[:.)\-]\s*\**\s*(yes|no)\b", re.I | re.M)
_YES, _NO = ("yes",), ("no",)


def questions_of(task: Task) -> list[tuple[str, float]]:
    """The questions a task carries, (question, weight)."""
    return list(task.checklist)


def as_records(questions: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """Questions as the state keeps them."""
    return [{"question": q, "weight": w} for q, w in questions]


def with_questions(task: Task, records: list[dict[str, Any]]) -> Task:
    """The task, judged against these questions."""
    return dataclasses.replace(task, checklist=tuple((r["question"], float(r["weight"])) for r in records))


def prepare_checklist(j: Judging, state: Mapping[str, Any]) -> tuple[Task, list[dict[str, Any]] | None]:
    """A round's first step. With --judge checklist the task it judges against carries the run's questions:
    the state's (as a reviewer left them), else the task file's, else questions the critic writes now. The second
    value is what the state should keep from now on (None when it already has it)."""
    task = j.task
    if j.settings.judge != "checklist":
        return task, None
    if state.get("checklist"):
        return with_questions(task, state["checklist"]), None
    if task.checklist:
        return task, as_records(questions_of(task))
    written = write_checklist(j, iteration=int(state.get("iteration") or 0))
    return with_questions(task, written), written


def write_checklist(j: Judging, *, iteration: int) -> list[dict[str, Any]]:
    """Ask the critic (cold, thinking off) for the goal's checklist; its questions are topped up from the task's
    own criteria to at least LEAST, and cut at MAX_CHECKLIST. With no call left, the criteria's alone."""
    written: list[tuple[str, float]] = []
    with critic_phase("writing the checklist", 1):
        if j.budget.take():
            written = _written_questions(j, iteration)
    seen = {q.lower() for q, _ in written}
    for question, weight in fallback_questions(j.task):
        if len(written) >= LEAST:
            break
        if question.lower() not in seen:
            written.append((question, weight))
    return as_records(written[:MAX_CHECKLIST])


def _written_questions(j: Judging, iteration: int) -> list[tuple[str, float]]:
    """The questions the critic writes for the goal (cold, thinking off)."""
    system, user = checklist_writer_text(j.task, LEAST, MAX_CHECKLIST)
    reply, _ = traced_invoke(
        j.models.plain_judge(j.settings, COLD),
        build_messages(system, user),
        run_dir=j.run_dir,
        role="checklist-write",
        iteration=iteration,
        image_path=None,
        temperature=COLD,
        settings=j.settings,
    )
    return parse_questions(str(getattr(reply, "content", reply)))


def parse_questions(text: str) -> list[tuple[str, float]]:
    """`QUESTION: ... | WEIGHT: n` lines, each question once, weights clamped to 1-3 (missing: 1)."""
    found: list[tuple[str, float]] = []
    seen: set[str] = set()
    for match in _QUESTION.finditer(clean_model_text(text or "")):
        question = " ".join(match.group(1).replace("*", " ").split())[:MAX_ITEM]
        if len(question.split()) < 3 or question.lower() in seen:
            continue
        seen.add(question.lower())
        weight = min(3.0, max(1.0, float(match.group(2)))) if match.group(2) else 1.0
        found.append((question, weight))
    return found[:MAX_CHECKLIST]


def fallback_questions(task: Task) -> list[tuple[str, float]]:
    """Questions built from the task itself, for a critic that wrote too few."""
    questions = [(f"Does the image clearly show {task.subject}?", 3.0)]
    questions += [(f"Does the image show {criterion}?", 2.0) for criterion in task.criteria]
    questions.append((f"Does the image fully achieve this goal: {task.goal}?", 3.0))
    return [(q[:MAX_ITEM], w) for q, w in questions]


def ask_checklist(
    j: Judging, candidate: Mapping[str, Any], questions: list[tuple[str, float]], *, temperature: float, label: str
) -> Look | None:
    """Ask an image every question in one call (up to `judge_attempts` tries); None when no reply answered at
    least half of them, or the budget ran out. A missing answer counts as no."""
    judge = j.models.plain_judge(j.settings, temperature, logprobs=True)
    system, user = checklist_ask_text([q for q, _ in questions], candidate["prompt"])
    messages = build_messages(system, user, candidate["path"])
    for attempt in range(j.settings.judge_attempts):
        if not j.budget.take():
            return None
        reply, _ = traced_invoke(
            judge,
            messages,
            run_dir=j.run_dir,
            role=f"{label}#{attempt + 1}",
            kind="checklist",
            iteration=candidate["iteration"],
            image_path=candidate["path"],
            temperature=temperature,
            settings=j.settings,
        )
        said = parse_answers(str(getattr(reply, "content", reply)), len(questions))
        if len(said) * 2 >= len(questions) and said:
            chances = yes_chances(reply, said)
            measured = chances is not None
            if chances is None:  # no log probabilities: the text's yes and no, as certainties
                chances = {index: 1.0 if yes else 0.0 for index, yes in said}
            found = checklist_look([chances.get(n, 0.0) for n in range(len(questions))], questions)
            return dataclasses.replace(found, from_logprobs=measured)
        if attempt == 0:
            messages = [*messages, HumanMessage(CHECKLIST_REMINDER)]
    return None


def parse_answers(text: str, count: int) -> list[tuple[int, bool]]:
    """(question index, yes) for each `Qn: yes|no` line, in the order given; unnumbered yes/no lines are read in
    order when no line is numbered. Indices outside the checklist, and repeats, are dropped."""
    text = clean_model_text(text or "")
    said: list[tuple[int, bool]] = []
    taken: set[int] = set()
    for match in _ANSWER.finditer(text):
        index = int(match.group(1)) - 1
        if 0 <= index < count and index not in taken:
            taken.add(index)
            said.append((index, match.group(2).lower() == "yes"))
    if said:
        return said
    bare = [ln.strip(" .*-").lower() for ln in text.splitlines() if ln.strip(" .*-").lower() in ("yes", "no")]
    return [(n, word == "yes") for n, word in enumerate(bare[:count])]


def _word(token: Any) -> str:
    text = token.get("token") if isinstance(token, dict) else getattr(token, "token", "")
    return str(text or "").strip(" \t\n.,:;*\"'").lower()


def _logprob(token: Any) -> float | None:
    value = token.get("logprob") if isinstance(token, dict) else getattr(token, "logprob", None)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _alternatives(token: Any) -> list[Any]:
    found = token.get("top_logprobs") if isinstance(token, dict) else getattr(token, "top_logprobs", None)
    return list(found or [])


def yes_chances(reply: Any, said: list[tuple[int, bool]]) -> dict[int, float] | None:
    """P(yes) per answered question from the reply's token log probabilities (`response_metadata["logprobs"]`,
    as langchain-ollama passes Ollama's); None when there are none, or when the yes/no tokens found do not line
    up one to one with the answers read from the text (then the text's yes/no stands)."""
    tokens = (getattr(reply, "response_metadata", None) or {}).get("logprobs")
    if not isinstance(tokens, list) or not tokens:
        return None
    answer_tokens = [t for t in tokens if _word(t) in (*_YES, *_NO)]
    if len(answer_tokens) != len(said):
        return None
    chances: dict[int, float] = {}
    for (index, yes), token in zip(said, answer_tokens, strict=True):
        if (_word(token) in _YES) != yes:
            return None  # the tokens tell another story than the text: trust neither's numbers
        chance = _chance_of_yes(token)
        if chance is None:
            return None
        chances[index] = chance
    return chances


def _chance_of_yes(token: Any) -> float | None:
    """P(yes) at one answer token: yes against no among the alternatives, else from the chosen token alone."""
    weights = {"yes": 0.0, "no": 0.0}
    for alternative in _alternatives(token) or [token]:
        word, logprob = _word(alternative), _logprob(alternative)
        if word in weights and logprob is not None:
            weights[word] += math.exp(logprob)
    total = weights["yes"] + weights["no"]
    if total > 0 and _alternatives(token):
        return weights["yes"] / total
    logprob = _logprob(token)
    if logprob is None:
        return None
    chosen = min(1.0, math.exp(logprob))
    return chosen if _word(token) in _YES else 1.0 - chosen


def checklist_look(chances: list[float], questions: list[tuple[str, float]]) -> Look:
    """A look from the chance of yes to each question: weighted pass rate, DONE when every question is met."""
    total = sum(w for _, w in questions) or 1.0
    score = round(10 * sum(p * w for p, (_, w) in zip(chances, questions, strict=True)) / total, 2)
    unmet = unmet_questions(chances, questions)
    met = len(questions) - len(unmet)
    critique = f"meets {met} of {len(questions)} checklist questions"
    if unmet:
        critique += f"; fails: {'; '.join(unmet)}"
    return Look(score, "CONTINUE" if unmet else "DONE", critique, "", [round(p, 3) for p in chances])


def unmet_questions(chances: list[float], questions: list[tuple[str, float]]) -> list[str]:
    """The questions not met, the weightiest (then the least met) first."""
    failed = [(w, p, q) for p, (q, w) in zip(chances, questions, strict=True) if p < PASS]
    return [q for w, p, q in sorted(failed, key=lambda item: (-item[0], item[1]))]


def checklist_score(j: Judging, candidate: Candidate, samples: int) -> Candidate:
    """The round's scorer under --judge checklist: `samples` looks (warm when more than one), the chances
    of yes averaged per question; the record keeps every look's score in `samples`, as the 1-10 scorer does."""
    questions = questions_of(j.task)
    temperature = sample_temperature(j.settings.judge_samples)
    looks = [
        found
        for _ in range(samples)
        if (found := ask_checklist(j, candidate, questions, temperature=temperature, label="checklist")) is not None
    ]
    record: Candidate = {**candidate}
    scores = pooled(candidate.get("samples", []), [look.score for look in looks])
    if not scores:
        unread: Candidate = {"score": None, "verdict": "unknown", "next_idea": ""}
        return {**record, **unread, "critique": "the checklist answers could not be read"}
    record["samples"] = scores
    record["score"] = round(statistics.fmean(scores), 2) if len(scores) > 1 else scores[0]
    if looks:
        chances = [statistics.fmean(look.answers[n] for look in looks) for n in range(len(questions))]
        merged = checklist_look(chances, questions)
        unmet = unmet_questions(chances, questions)
        looked: Candidate = {
            "verdict": as_verdict(merged.verdict),
            "critique": merged.critique,
            "next_idea": "",  # the proposer writes the next idea, from the unmet questions
            "answers": [round(p, 3) for p in chances],
            "unmet": unmet,
        }
        record.update(looked)
    return record


def edited_checklist(raw: Any) -> tuple[list[dict[str, Any]], str]:
    """A reviewer's new checklist and "", or [] and what is wrong with it. Each entry is a question (text,
    optionally ending `| weight`) or {"question": ..., "weight": ...}."""
    if isinstance(raw, str):
        raw = [line for line in raw.splitlines() if line.strip()]
    if not isinstance(raw, list) or not raw:
        return [], "checklist needs 'questions': a list of yes/no questions"
    if len(raw) > MAX_CHECKLIST:
        return [], f"a checklist holds at most {MAX_CHECKLIST} questions, got {len(raw)}"
    records = []
    for n, entry in enumerate(raw, start=1):
        weight: Any = 1.0
        if isinstance(entry, dict):
            weight = entry.get("weight", 1.0)
            entry = entry.get("question")
        elif isinstance(entry, str) and "|" in entry:
            entry, _, tail = entry.rpartition("|")
            try:
                weight = float(tail.strip())
            except ValueError:
                return [], f"question {n}: the weight after '|' must be a number, got '{tail.strip()}'"
        question = " ".join(clean_model_text(str(entry or "")).split()) if isinstance(entry, str) else ""
        if not question:
            return [], f"question {n} is empty: write a yes/no question"
        if len(question) > MAX_ITEM:
            return [], f"question {n} has {len(question)} characters, more than {MAX_ITEM}: shorten it"
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= MAX_WEIGHT:
            return [], f"question {n}: the weight must be a number above 0 and at most {MAX_WEIGHT}"
        records.append({"question": question, "weight": float(weight)})
    return records, ""
