"""One round judged: the evaluate node's whole work on the round's images, as one update for the state.

Beyond one score per image, the judge options fight the judge's coarseness and noise:
- `--candidates N`: every image of the round is judged (at once, up to --critic-concurrency) and the best-judged
  one goes on to acceptance;
- `--judge-samples K`: K warm samples averaged; a tie with the best has the best judged again
  (refineloop.judges.rescore);
- `--judge pairwise`: the new image meets the one it must beat in a duel of both orders (refineloop.judges.duel);
  a split verdict is a tie, and the order flips are counted (the judge's position bias);
- `--audit-every`, `--confirm-done`, `--judge checklist`: the auditor's own score, a second look at a DONE, the
  run's questions.
Every call counts against `--max-critic-calls`; the round never makes a call past it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from refineloop.backends.chat.fan_out import run_all
from refineloop.judges.audit import audit_each
from refineloop.judges.base import Judging
from refineloop.judges.checklist import prepare_checklist
from refineloop.judges.confirm import confirm_done
from refineloop.judges.duel import pairwise
from refineloop.judges.measure import add, count_samples
from refineloop.judges.rescore import record_rescore, rescore_tie
from refineloop.judges.samples import score_image
from refineloop.run_folder.score_index import save_sidecar
from refineloop.state import Candidate
from refineloop.strategies import spec_for


def judge_round(j: Judging, state: Mapping[str, Any]) -> dict[str, Any]:
    """Judge the round's images, pick the best-judged as the candidate, and run the judge options. The update
    names the candidate, and as needed the batch, a re-scored best, the pairwise counters, the judge's counters
    and a new checklist; the critic calls made are `j.budget.used`."""
    task, checklist = prepare_checklist(j, state)  # --judge checklist: the questions come first
    j = dataclasses.replace(j, task=task)
    batch = round_images(state)
    samples = j.settings.judge_samples
    scorings = [functools.partial(score_image, j, c, samples) for c in batch]
    judged = audit_each(j, run_all(scorings, j.at_once(len(batch) * samples * j.settings.judge_attempts)))
    chosen = max(judged, key=lambda c: -1.0 if c["score"] is None else c["score"])
    for other in judged:
        if other is not chosen:
            decision = f"not chosen (best of {len(judged)})"
            save_sidecar({**other, "decision": decision}, j.run_dir, other["iteration"])
    update, rescored = rescore_tie(j, state, chosen, before=batch[0]["iteration"])
    best = update.get("best", state.get("best"))
    spec = spec_for(j.settings.strategy)
    opponent = update.get("current", state.get("current")) if spec.compares_with == "current" else best
    if j.settings.judge == "pairwise" and opponent and chosen["score"] is not None and spec.comparing:
        result = pairwise(j, chosen, opponent)
        if result is not None:
            chosen["pairwise"] = result
            update.update(comparisons=1, order_flips=int(result["flipped"]))
    chosen = confirm_done(j, chosen, best)  # a DONE that could stop the run gets a second look first
    if rescored is not None:
        # Written last, after every critic call of the round: a drain aborts a call, never this write.
        record_rescore(j.run_dir, *rescored, at=batch[0]["iteration"])
    if len(judged) > 1:
        update["batch"] = judged
    if j.settings.distinct_ideas:  # the ideas that lost the round: the proposer is told to look elsewhere
        lost = list(dict.fromkeys(c["idea"] for c in judged if c["idea"] and c["idea"] != chosen["idea"]))
        if lost:
            update["failed_ideas"] = lost
    update["candidate"] = chosen
    update.update(round_extras(judged, j, checklist))
    return update


def round_images(state: Mapping[str, Any]) -> list[Candidate]:
    """The images of this round: the batch the generator drew, or its one candidate."""
    candidate = state["candidate"]
    assert candidate is not None, "a round is judged after generate, which sets the candidate"
    batch: list[Candidate] = state.get("batch") or []
    if not batch or batch[0]["iteration"] != candidate["iteration"]:
        return [candidate]  # a one-image round (the batch, if any, is an older round's)
    return batch


def round_extras(
    judged: Sequence[Mapping[str, Any]], j: Judging, checklist: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """The judge's counters of this round (the spread of each new image's samples, plus what the judging steps
    counted) and, when the checklist was just written, the checklist for the state to keep."""
    stats = dict(j.stats)
    for candidate in judged:  # new images: their samples are this round's
        add(stats, count_samples(candidate.get("samples") or []))
    extras: dict[str, Any] = {"judge_stats": stats} if stats else {}
    if checklist is not None:
        extras["checklist"] = checklist
    return extras
