"""Two images compared head to head, in both orders, so the judge's lean towards a position cancels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refineloop.backends.chat.invoke import build_messages, traced_invoke
from refineloop.judges.base import Judging
from refineloop.judges.measure import count_duel
from refineloop.judges.outcomes import Duel
from refineloop.judges.verdicts import parse_winner
from refineloop.prompts import compare_messages_text


def duel(
    j: Judging,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    label: str = "duel",
    runnable: Any = None,
    counted: bool = True,
) -> Duel | None:
    """Compare images `a` and `b` in both orders with the cold judge copy (thinking off, temperature 0), or with
    `runnable` (the auditor); None when the budget allows no call. Both orders are always asked when the first
    was: a duel of one order would carry the position bias it exists to cancel. With `counted`, the duel's
    flips, ties and agreement with the scores go into the step's counters."""
    judge = runnable if runnable is not None else j.models.plain_judge(j.settings, 0.0)
    winners: list[int | None] = []
    for first, second in ((a, b), (b, a)):
        if not j.budget.take():
            return None
        system, user = compare_messages_text(j.task, first["prompt"], second["prompt"])
        reply, _ = traced_invoke(
            judge,
            build_messages(system, user, first["path"], second["path"]),
            run_dir=j.run_dir,
            role=label,
            iteration=max(a["iteration"], b["iteration"]),
            image_path=[first["path"], second["path"]],
            temperature=0.0,
            settings=j.settings,
        )
        said = parse_winner(str(getattr(reply, "content", reply)))
        picked = first if said == "A" else second if said == "B" else None
        winners.append(None if picked is None else picked["iteration"])
    result = Duel(a["iteration"], b["iteration"], tuple(winners))
    if counted:
        j.count(**count_duel(result, a.get("score"), b.get("score")))
    return result
