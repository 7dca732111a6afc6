"""What every judging step needs: the models, the run's settings and task, the calls it may make, its counters."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from refineloop.backends.model_cache import ModelCache
    from refineloop.settings import RunSettings
    from refineloop.tasks import Task


#: The most samples an image's record keeps, the newest: an incumbent judged again at every tie would otherwise
#: carry a list that grows with the run into every record of it (best, current, the checkpoints).
KEPT_SAMPLES = 24


def pooled(earlier: Sequence[float], fresh: Sequence[float]) -> list[float]:
    """An image's samples after `fresh` looks: the newest KEPT_SAMPLES of all its looks (its score is their mean)."""
    return [*earlier, *fresh][-KEPT_SAMPLES:]


class Budget:
    """The critic calls a judging step may still make, shared by every thread of the step (`left` None: no limit).

    Calls that run at once claim their calls together (`claim`), all of them or none: which of them the budget
    cuts off must never depend on which answer comes first."""

    def __init__(self, left: int | None) -> None:
        self.left, self.used = left, 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Claim one call; False when none is left."""
        return self.claim(1)

    def claim(self, calls: int) -> bool:
        """Claim `calls` calls at once when all of them fit; else claim none and answer False."""
        with self._lock:
            if self.left is not None and self.left - self.used < calls:
                return False
            self.used += calls
            return True

    def affords(self, calls: int) -> bool:
        """Whether `calls` more calls fit (claims nothing)."""
        with self._lock:
            return self.left is None or self.left - self.used >= calls


_COUNTING = threading.Lock()


@dataclass
class Judging:
    """One judging step's context. `stats` collects the counters of `refineloop.judges.measure`, which the step
    hands back to the state's `judge_stats`."""

    models: ModelCache
    settings: RunSettings
    task: Task
    run_dir: str
    budget: Budget
    stats: dict[str, float] = field(default_factory=dict)

    def count(self, **counters: float) -> None:
        """Add to the step's counters (judging calls may run at once: see refineloop.backends.chat.fan_out)."""
        with _COUNTING:
            for key, value in counters.items():
                self.stats[key] = self.stats.get(key, 0) + value

    def at_once(self, calls: int) -> int:
        """How many of a fan-out of `calls` critic calls may run at the same time: --critic-concurrency when the
        budget affords all of them, else one after another (so the budget cuts off the same calls either way)."""
        return self.settings.critic_concurrency if self.budget.affords(calls) else 1
