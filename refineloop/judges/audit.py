"""`--audit-model MODEL`: an independent critic checks the result, the guard against a judge being gamed.

A search optimises what its judge rewards, and a judge can be fooled (an 'appeal' that scores without being
better). At the end the auditor, another model that steered nothing, compares the crowned image with the first
one in both orders: it agrees that the run improved when the crowned image wins both, disagrees when it loses
both, and is unsure on a split. With --audit-every it also scores every image as it is judged, and the share of
image pairs it ranks like the run's judge is reported. Summary, report and the batch table show the verdict.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

from refineloop.judges.base import Judging
from refineloop.judges.duel import duel
from refineloop.judges.knobs import COLD
from refineloop.judges.measure import add, count_audit, rates
from refineloop.judges.score import look
from refineloop.progress_events import critic_phase
from refineloop.run_folder.image_files import image_path, read_sidecars
from refineloop.settings import RunSettings
from refineloop.state import Candidate

VERDICTS = {2: "agrees", 1: "unsure", 0: "disagrees"}


def auditor_settings(settings: RunSettings) -> RunSettings:
    """The run's settings with the auditor as the critic (its own cache entry, its own vision check)."""
    return dataclasses.replace(settings, eval_model=settings.audit_model)


def load_auditor(j: Judging) -> None:
    """Load the auditor now, so a missing or blind model fails before the first image."""
    if j.settings.audit_model:
        j.models.chat_model(auditor_settings(j.settings))


def audit_each(j: Judging, judged: list[Candidate]) -> list[Candidate]:
    """A round's images with --audit-every: each judged image gets the auditor's own cold score."""
    if not (j.settings.audit_model and j.settings.audit_every):
        return judged
    auditor = j.models.judge_model(auditor_settings(j.settings), COLD)
    scored: list[Candidate] = []
    for candidate in judged:
        found = look(j, candidate, temperature=COLD, label="audit", runnable=auditor)
        scored.append({**candidate, "audit_score": None if found is None else found.score})
    return scored


def audit_run(j: Judging, best: Mapping[str, Any] | None, start_at: int | None = None) -> dict[str, Any] | None:
    """The auditor's verdict on the run: the crowned image against the first one, in both orders. `start_at`:
    the image that stands for the first one drawn (a walk's first draft drawn in full: --draft-walk)."""
    if not j.settings.audit_model or not best:
        return None
    sidecars = read_sidecars(j.run_dir)
    start = 0 if 0 in sidecars else 1  # the user's own picture (--init-image), else the first image drawn
    if start_at is not None and start != 0:
        start = start_at
    record: dict[str, Any] = {"model": j.settings.audit_model, "first": start, "crowned": best["iteration"]}
    if j.settings.audit_every:
        record.update(_agreement(sidecars))
    if best["iteration"] == start or start not in sidecars:
        record.update(verdict="same image", note="the crowned image is the first one: nothing to compare")
        return record
    first = {**sidecars[start], "iteration": start, "path": str(image_path(j.run_dir, start))}
    auditor = j.models.plain_judge(auditor_settings(j.settings), COLD)
    with critic_phase("audit", 2):
        met = duel(j, best, first, label="audit-duel", runnable=auditor, counted=False)
    if met is None:
        record.update(verdict="not run", note="no critic calls were left for it")
        return record
    wins = met.wins(best["iteration"])
    record.update(wins=wins, winners=list(met.winners), verdict=VERDICTS[wins])
    return record


def _agreement(sidecars: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """How alike the run's judge and the auditor rank the images both scored (pairs with a strict order in both)."""
    both = {
        it: (rec["score"], rec["audit_score"])
        for it, rec in sidecars.items()
        if isinstance(rec.get("score"), int | float) and isinstance(rec.get("audit_score"), int | float)
    }
    counters: dict[str, float] = {}
    for (_, (sa, aa)), (_, (sb, ab)) in itertools.combinations(sorted(both.items()), 2):
        if sa != sb and aa != ab:
            add(counters, count_audit((sa > sb) == (aa > ab)))
    value, pairs = rates(counters)["audit_agreement"]
    top = max(both, key=lambda it: (both[it][1], -it)) if both else None
    agreement = None if value is None else round(value, 3)
    return {"scored": len(both), "pairs": pairs, "agreement": agreement, "auditor_best": top}


def audit_word(audit: dict[str, Any] | None) -> str:
    """The audit in a word or two, for the batch table: improved, not improved, unsure, or '-'."""
    verdict = (audit or {}).get("verdict")
    return {"agrees": "improved", "disagrees": "not improved", "unsure": "unsure"}.get(verdict or "", "-")


def audit_lines(audit: dict[str, Any] | None) -> list[str]:
    """What summary.txt says about the audit."""
    if not audit:
        return []
    head = f"audit by {audit['model']}: "
    verdict = audit.get("verdict")
    if isinstance(verdict, str) and verdict in VERDICTS.values():
        said = {
            "agrees": "agrees that the run improved",
            "disagrees": "disagrees: it prefers the first image",
            "unsure": "is unsure (a split verdict)",
        }[verdict]
        lines = [f"{head}{said}: #{audit['crowned']} against #1 won {audit['wins']} of 2 orders"]
    else:
        lines = [f"{head}{audit.get('note', verdict)}"]
    if audit.get("scored"):
        share = "not measurable" if audit.get("agreement") is None else f"{audit['agreement']:.0%}"
        lines.append(
            f"  it scored {audit['scored']} images: ranks {share} of {audit['pairs']} image pairs like the run's "
            f"judge; its own favourite is #{audit['auditor_best']}"
        )
    return lines
