"""Two images compared head to head, in both orders, so the judge's lean towards a position cancels.

Every duel of a run goes through `duel`: --judge pairwise in the evaluate node, the DONE confirmation, the final
pick, the audit and judge-check. Its two orders claim their calls together and run at once (up to
--critic-concurrency); their answers are applied in a fixed order, (a, b) then (b, a), whichever comes back first.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from refineloop.backends.chat.fan_out import run_all
from refineloop.backends.chat.invoke import build_messages, traced_invoke
from refineloop.judges.base import Judging
from refineloop.judges.knobs import COLD
from refineloop.judges.verdicts import parse_winner
from refineloop.prompts import compare_messages_text


@dataclass(frozen=True)
class Duel:
    """The outcome of one duel: which image won each order (None: a tie, an abstention or an unreadable reply)."""

    a: int
    b: int
    winners: tuple[int | None, ...]
    """The winner of the order (a, b), then of the order (b, a)."""

    def wins(self, iteration: int) -> int:
        """Orders that `iteration` won (0, 1 or 2)."""
        return sum(w == iteration for w in self.winners)

    @property
    def flipped(self) -> bool:
        """Both orders named a winner, and not the same one: position decided, not the images."""
        decided = [w for w in self.winners if w is not None]
        return len(decided) == 2 and decided[0] != decided[1]

    @property
    def ties(self) -> int:
        """Orders that named no winner."""
        return sum(w is None for w in self.winners)

    @property
    def winner(self) -> int | None:
        """The image that won both orders, else None."""
        if len(self.winners) == 2 and self.winners[0] is not None and self.winners[0] == self.winners[1]:
            return self.winners[0]
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins, for sidecars and state."""
        return {"a": self.a, "b": self.b, "winners": list(self.winners)}


def duel(
    j: Judging,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    label: str = "duel",
    runnable: Any = None,
    counted: bool = True,
) -> Duel | None:
    """Compare images `a` and `b` in both orders with the cold judge copy (thinking off), or with `runnable` (the
    auditor); None, with no call made, when the budget cannot afford both orders: a duel of one order would carry
    the position bias it exists to cancel. With `counted`, the duel's flips, ties and agreement with the scores go
    into the step's counters."""
    if not j.budget.claim(2):
        return None
    judge = runnable if runnable is not None else j.models.plain_judge(j.settings, COLD)
    iteration = max(a["iteration"], b["iteration"])

    def order(first: Mapping[str, Any], second: Mapping[str, Any]) -> int | None:
        system, user = compare_messages_text(j.task, first["prompt"], second["prompt"])
        reply, _ = traced_invoke(
            judge,
            build_messages(system, user, first["path"], second["path"]),
            run_dir=j.run_dir,
            role=label,
            kind="compare",
            iteration=iteration,
            image_path=[first["path"], second["path"]],
            temperature=COLD,
            settings=j.settings,
        )
        said = parse_winner(str(getattr(reply, "content", reply)))
        picked = first if said == "A" else second if said == "B" else None
        return None if picked is None else int(picked["iteration"])

    orders = [functools.partial(order, a, b), functools.partial(order, b, a)]
    result = Duel(a["iteration"], b["iteration"], tuple(run_all(orders, j.settings.critic_concurrency)))
    if counted:
        j.count(**count_duel(result, a.get("score"), b.get("score")))
    return result


def count_duel(duel: Duel, score_a: float | None, score_b: float | None) -> dict[str, float]:
    """The counters one duel adds (refineloop.judges.measure reads them)."""
    counters: dict[str, float] = {"duels": 1, "orders": len(duel.winners), "ties": duel.ties}
    counters["flips"] = int(duel.flipped)
    if duel.winner is not None and score_a is not None and score_b is not None and score_a != score_b:
        higher = duel.a if score_a > score_b else duel.b
        counters.update(agree_pairs=1, agree=int(duel.winner == higher))
    return counters


def pairwise(j: Judging, challenger: Mapping[str, Any], incumbent: Mapping[str, Any]) -> dict[str, Any] | None:
    """--judge pairwise: the round's image against the one it must beat, as the image's record keeps it (`wins`:
    orders the challenger won, 0, 1 or 2). Counted in the state's own `comparisons` and `order_flips`."""
    met = duel(j, challenger, incumbent, label="compare", counted=False)
    if met is None:
        return None
    wins = met.wins(challenger["iteration"])
    return {"against": incumbent["iteration"], "wins": wins, "ties": met.ties, "flipped": met.flipped}
