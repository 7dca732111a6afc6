"""What every judging step needs: the models, the run's settings and task, the calls it may make, its counters."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from refineloop.backends.model_cache import ModelCache
    from refineloop.settings import RunSettings
    from refineloop.tasks import Task

#: Temperature of a warm judge sample: enough to decorrelate repeated looks, not to wander (the scorer's own
#: value for --judge-samples, refineloop.nodes.evaluate.SAMPLE_TEMPERATURE).
WARM = 0.3

#: The most samples an image's record keeps, the newest: an incumbent judged again at every tie would otherwise
#: carry a list that grows with the run into every record of it (best, current, the checkpoints).
KEPT_SAMPLES = 24


def pooled(earlier: Sequence[float], fresh: Sequence[float]) -> list[float]:
    """An image's samples after `fresh` looks: the newest KEPT_SAMPLES of all its looks (its score is their mean)."""
    return [*earlier, *fresh][-KEPT_SAMPLES:]


class Budget(Protocol):
    """Critic calls a step may still make (refineloop.nodes.evaluate.CallBudget has this shape)."""

    used: int

    def take(self) -> bool:
        """Claim one call; False when none is left."""
        ...


class Calls:
    """A critic-call budget of its own, for steps outside the evaluate node (the stop, judge-check)."""

    def __init__(self, left: int | None) -> None:
        self.left, self.used = left, 0

    def take(self) -> bool:
        if self.left is not None and self.used >= self.left:
            return False
        self.used += 1
        return True


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
