"""What a judging step found, as plain values every judging module can read without importing the others."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
