"""`evaluate`: the judge. Cold, stateless, one image in; never crashes on what a model says.

Beyond one score per image, three options fight the judge's coarseness and noise:
- `--judge-samples K`: K samples at a small temperature, averaged; a challenger that ties the best makes
  the incumbent be judged again, so a lucky score on the best does not stand forever. The revised score is
  written back to the incumbent's sidecar (which keeps its `first_score` and every re-score), and with
  `--judge score` the best is then again the highest-scored image judged so far, the earliest on a tie: a
  re-score that drops the incumbent below an earlier image hands the title to that image;
- `--judge pairwise`: the new image is compared head to head with the one it must beat, in both orders;
  a split verdict is a tie, and the order flips are counted (the judge's position bias);
- `--candidates N`: every image of the round is judged and the best-judged one goes on to acceptance.
Every call counts against `--max-critic-calls`; the judge never makes a call past it.
"""

from __future__ import annotations

import functools
import statistics
import threading
import time
from typing import Any, TypeGuard

from langchain_core.runnables import RunnableConfig

from refineloop.backends.chat.fan_out import run_all
from refineloop.backends.chat.invoke import build_messages, traced_invoke
from refineloop.backends.model_cache import ModelCache, models_for
from refineloop.budgets import critic_calls_left
from refineloop.judges.audit import audit_each
from refineloop.judges.base import Judging
from refineloop.judges.checklist import checklist_score, prepare_checklist
from refineloop.judges.confirm import confirm_done
from refineloop.judges.hooks import evaluate_extras
from refineloop.judges.score import ask_judge
from refineloop.judges.verdicts import Verdict, parse_winner
from refineloop.prompts import compare_messages_text
from refineloop.run_folder.image_files import image_path, read_record, read_sidecars, save_json, sidecar_path
from refineloop.run_folder.round_files import remake_missing, wait_for_round
from refineloop.settings import RunSettings
from refineloop.state import Candidate, RefineState
from refineloop.strategies import spec_for
from refineloop.tasks import Task

#: Sampling temperature when several judge samples are averaged: enough to decorrelate, not to wander.
SAMPLE_TEMPERATURE = 0.3
#: Mean scores closer than this count as a tie on the 1-10 scale and trigger a re-score of the best.
TIE_MARGIN = 0.5


class CallBudget:
    """Counts critic calls made in this node and refuses one past the run's budget (from any thread)."""

    def __init__(self, left: int | None) -> None:
        self.left, self.used = left, 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left is not None and self.used >= self.left:
                return False
            self.used += 1
            return True

    def affords(self, calls: int) -> bool:
        """Whether `calls` more calls fit. Calls run at once only when all of them fit: which of them the budget
        cuts off must never depend on which answer comes first."""
        with self._lock:
            return self.left is None or self.left - self.used >= calls


def at_once(settings: RunSettings, budget: CallBudget, calls: int) -> int:
    """How many critic calls of a fan-out of `calls` may run at the same time (1: one after another)."""
    return settings.critic_concurrency if budget.affords(calls) else 1


def score_image(
    models: ModelCache,
    settings: RunSettings,
    task: Task,
    candidate: Candidate,
    run_dir: str,
    budget: CallBudget,
    samples: int,
) -> Candidate:
    """Judge an image `samples` times and fold the answers into its record (mean score, every sample)."""
    if settings.judge == "checklist":  # weighted yes/no questions instead of a 1-10 score
        return checklist_score(Judging(models, settings, task, run_dir, budget), candidate, samples)
    temperature = SAMPLE_TEMPERATURE if settings.judge_samples > 1 else 0.0
    judge = models.judge_model(settings, temperature)

    def sample() -> Verdict | None:
        return ask_judge(
            judge, task, candidate, settings=settings, run_dir=run_dir, budget=budget, temperature=temperature
        )

    limit = at_once(settings, budget, samples * settings.judge_attempts)
    # Warm samples of one image are alike until answered: sorted, their fold does not depend on which came first.
    answers = [v for v in run_all([sample] * samples, limit) if v is not None]
    verdicts = sorted(answers, key=lambda v: (v.score, v.verdict, v.critique, v.next_idea)) if limit > 1 else answers
    record: Candidate = {**candidate}
    scores = [*candidate.get("samples", []), *(v.score for v in verdicts)]
    if not scores:
        unread: Candidate = {"score": None, "verdict": "unknown", "next_idea": ""}
        return {**record, **unread, "critique": "the judge's replies could not be read"}
    record["samples"] = scores
    record["score"] = round(statistics.fmean(scores), 2) if len(scores) > 1 else scores[0]
    if verdicts:
        done = sum(v.verdict == "DONE" for v in verdicts) * 2 > len(verdicts)
        first = verdicts[0]
        said: Candidate = {
            "verdict": "DONE" if done else "CONTINUE",
            "critique": first.critique,
            "next_idea": next((v.next_idea for v in verdicts if v.next_idea), ""),
        }
        record.update(said)
    return record


def compare(
    models: ModelCache,
    settings: RunSettings,
    task: Task,
    challenger: Candidate,
    incumbent: Candidate,
    run_dir: str,
    budget: CallBudget,
) -> dict[str, Any] | None:
    """Head to head in both orders: wins counts the orders in which the challenger won (0, 1 or 2)."""
    judge = models.plain_judge(settings, 0.0)  # the cold judge copy (thinking off), like the scorer
    if not budget.affords(2):
        return None  # a duel of one order would carry the position bias it exists to cancel

    def order(first: Candidate, second: Candidate) -> int | None:
        budget.take()
        system, user = compare_messages_text(task, first["prompt"], second["prompt"])
        reply, _ = traced_invoke(
            judge,
            build_messages(system, user, first["path"], second["path"]),
            run_dir=run_dir,
            role="compare",
            iteration=challenger["iteration"],
            image_path=[first["path"], second["path"]],
            temperature=0.0,
            settings=settings,
        )
        winner = parse_winner(str(reply.content))
        picked = first if winner == "A" else second if winner == "B" else None
        return None if picked is None else picked["iteration"]

    orders = ((challenger, incumbent), (incumbent, challenger))
    winners = run_all([functools.partial(order, *pair) for pair in orders], settings.critic_concurrency)
    wins = sum(w == challenger["iteration"] for w in winners)
    decided = [w for w in winners if w is not None]
    ties = len(winners) - len(decided)
    return {"against": incumbent["iteration"], "wins": wins, "ties": ties, "flipped": len(set(decided)) == 2}


def evaluate(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Judge the round's images, pick the best-judged as the candidate, and run the judge options."""
    started = time.perf_counter()
    remake_missing(state, config)  # on resume after a crash: the round's PNGs the writer had not finished
    settings = RunSettings.from_state(state["settings"])
    task = Task.from_dict(state["task"])
    models = models_for(config)
    run_dir = state["run_dir"]
    budget = CallBudget(critic_calls_left(state, settings))
    task, checklist = prepare_checklist(models, settings, task, state, run_dir, budget)  # --judge checklist
    judging = Judging(models, settings, task, run_dir, budget)
    candidate = state["candidate"]
    assert candidate is not None, "evaluate follows generate, which sets the candidate"
    batch = state.get("batch") or []
    if not batch or batch[0]["iteration"] != candidate["iteration"]:
        batch = [candidate]  # a one-image round (the batch, if any, is an older round's)
    per_image = settings.judge_samples * settings.judge_attempts
    limit = at_once(settings, budget, len(batch) * per_image)
    scorings = [
        functools.partial(score_image, models, settings, task, c, run_dir, budget, settings.judge_samples)
        for c in batch
    ]
    judged = run_all(scorings, limit)
    judged = audit_each(judging, judged)  # --audit-every: the auditor's own score of each image
    chosen = max(judged, key=lambda c: -1.0 if c["score"] is None else c["score"])
    for other in judged:
        if other is not chosen:
            save_json(
                {**other, "decision": f"not chosen (best of {len(judged)})"}, sidecar_path(run_dir, other["iteration"])
            )
    update: dict[str, Any] = {}
    spec = spec_for(settings.strategy)
    best = state.get("best")
    rescored: tuple[Candidate, Candidate] | None = None
    held, score = (best.get("score") if best else None), chosen.get("score")
    if (
        settings.judge_samples > 1
        and best
        and held is not None
        and score is not None
        and abs(score - held) < TIE_MARGIN
        and spec.rescores_ties
    ):
        # A tie with the incumbent: judge the incumbent again, so its score is as well measured as the challenger's.
        revised = score_image(models, settings, task, best, run_dir, budget, settings.judge_samples)
        rescored = (best, revised)
        best = revised
        if settings.judge == "score":
            best = highest_scored(run_dir, revised, before=batch[0]["iteration"])
        update["best"] = best
        current = state.get("current")
        if current and current["iteration"] == revised["iteration"]:
            # A walk that must beat the best stands on the best again; one that compares with the current image
            # walks on from the re-scored image's record.
            update["current"] = revised if spec.compares_with == "current" else best
    opponent = update.get("current", state.get("current")) if spec.compares_with == "current" else best
    if settings.judge == "pairwise" and opponent and chosen["score"] is not None and spec.comparing:
        result = compare(models, settings, task, chosen, opponent, run_dir, budget)
        if result is not None:
            chosen["pairwise"] = result
            update.update(comparisons=1, order_flips=int(result["flipped"]))
    chosen = confirm_done(judging, chosen, best)  # a DONE that could stop the run gets a second look first
    if rescored is not None:
        # Written last, after every critic call of this node: a drain aborts a call, never this write.
        record_rescore(run_dir, *rescored, at=candidate["iteration"])
    if len(judged) > 1:
        update["batch"] = judged
    update.update(candidate=chosen, critic_calls=budget.used, seconds=time.perf_counter() - started)
    update.update(evaluate_extras(judged, judging, checklist))  # the judge's counters, a new checklist
    wait_for_round(state)  # the checkpoint after this node must never name an image that is not on disk
    return update


def record_rescore(run_dir: str, before: Candidate, after: Candidate, *, at: int) -> None:
    """Rewrite a re-scored image's sidecar with what it now says (score, samples, verdict, critique, idea),
    keeping the score it was first given (`first_score`) and each re-score (`rescores`: the image that
    caused it, the revised score). Re-running the node for the same challenger replaces its entry."""
    path = sidecar_path(run_dir, after["iteration"])
    record = read_record(path) or dict(before)
    first = record.get("first_score", record.get("score", before.get("score")))
    rescores = [r for r in record.get("rescores") or [] if isinstance(r, dict) and r.get("at") != at]
    rescores.append({"at": at, "score": after.get("score")})
    record.update({key: after[key] for key in ("score", "samples", "verdict", "critique", "next_idea") if key in after})
    record.update(first_score=first, rescores=rescores)
    save_json(record, path)


def highest_scored(run_dir: str, incumbent: Candidate, *, before: int) -> Candidate:
    """The best under `--judge score` once the incumbent has a revised score: the highest-scored image among
    those judged before image `before` (the incumbent with its new score), the earliest on a tie.

    Earlier images' scores come from their sidecars, the record of every judged image; an image that takes the
    title is rebuilt from its sidecar, with its path in this run folder.
    """
    leader = incumbent
    for iteration, record in sorted(read_sidecars(run_dir).items()):
        score = record.get("score")
        if iteration >= before or iteration == incumbent["iteration"] or not _is_score(score):
            continue
        held = leader.get("score")
        if held is None or score > held or (score == held and iteration < leader["iteration"]):
            known = Candidate.__annotations__
            leader = {k: v for k, v in record.items() if k in known}  # type: ignore[assignment]
            leader.update({"iteration": iteration, "path": str(image_path(run_dir, iteration))})
    return leader


def _is_score(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
