"""A batch's items and results: one goal with the settings it overrides, and how an attempt at it ended.

Plain dataclasses without the engine, so the stores (refineloop.apps.postgres among them) can name them.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from refineloop.settings import RunSettings
from refineloop.state import score_words
from refineloop.visible_text import visible


@dataclass
class BatchItem:
    """One goal of a batch, with the run settings it overrides and, once planned, its thread and folder."""

    index: int
    """1-based position in the goals file."""
    goal: str = ""
    """The goal sentence (a quick task); empty when `task` names a preset or task file instead."""
    task: str = ""
    """A task preset or TOML file; empty takes the command line's (or the default) task."""
    seed: int | None = None
    """The item's own seed; None takes the command line's, else one is chosen and recorded."""
    flags: dict[str, Any] = field(default_factory=dict)
    """Run settings this item sets itself (RunSettings field names)."""
    source: str = ""
    """Where the item was read (`goals.txt:3`), for messages."""
    thread_id: str = ""
    """The LangGraph thread of the item's run; fixed in batch.json at the batch's first start."""
    run_dir: str = ""
    """The item's run folder."""
    problem: str = ""
    """Why the item cannot run (one line naming it), found while reading or checking it; such an item is
    reported as failed and the others run."""

    @property
    def label(self) -> str:
        """What the summary shows: the goal, or the task it names."""
        return self.goal or (f"task {self.task}" if self.task else "task (default)")

    @property
    def shown(self) -> str:
        """The label as a line may show it: one line, visible characters, cut with a note when long."""
        return visible(self.label, limit=80, one_line=True)

    def spec(self) -> dict[str, Any]:
        """What defines the item: compared with batch.json so an edited goals file is noticed."""
        return {"goal": self.goal, "task": self.task, "seed": self.seed, "flags": dict(sorted(self.flags.items()))}

    def settings(self, base: RunSettings) -> RunSettings:
        """The item's run settings: the command line's, then the item's own, in the item's run folder."""
        values = base.to_dict()
        values.update(self.flags)
        if self.goal or self.task:
            values["goal"] = self.goal
            values["task"] = self.task or base.task
        if self.seed is not None:
            values["seed"] = self.seed
        values["output_dir"] = self.run_dir
        values["review"] = False
        return RunSettings.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (for Ray calls and batch.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchItem:
        """The inverse of `to_dict`."""
        return cls(**data)


@dataclass
class ItemResult:
    """How one attempt at an item ended."""

    thread_id: str
    status: str
    """done, interrupted, failed, or busy (someone else holds the item: nothing was done)."""
    best_score: float | None = None
    """The best image's score (a mean of several looks may be fractional, 7.33)."""
    best_iteration: int | None = None
    images: int = 0
    seconds: float = 0.0
    """Working time: generate and judge, summed over the item's images (downtime between attempts excluded)."""
    error: str = ""
    resumed_after: int | None = None
    """The image the attempt continued after, or None when it started the item (or found it finished)."""
    worker: str = ""
    """host:pid of the process that ran the attempt."""

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (returned by Ray runner actors)."""
        return dataclasses.asdict(self)


def result_from_values(thread_id: str, status: str, values: dict[str, Any], **extra: Any) -> ItemResult:
    """An ItemResult read from a checkpointed state."""
    best = values.get("best") or {}
    # The state's running total of working time (budgets use it); older states only have it per image.
    seconds = values.get("seconds")
    if seconds is None:
        seconds = sum(float(entry.get("seconds") or 0.0) for entry in values.get("history") or [])
    return ItemResult(
        thread_id=thread_id,
        status=status,
        best_score=None if best.get("score") is None else float(best["score"]),
        best_iteration=best.get("iteration"),
        images=int(values.get("iteration") or 0),
        seconds=round(float(seconds), 3),
        worker=f"{socket.gethostname()}:{os.getpid()}",
        **extra,
    )


def score_text(score: float) -> str:
    """A score out of 10 as people write it: 7/10, 7.33/10 (a mean of looks), never 7.333333333/10."""
    return f"{score_words(score)}/10"


def not_run_line(item: BatchItem) -> str:
    """What an engine prints for an item that cannot run (its `problem`), before any item starts."""
    return f"[{visible(item.source, one_line=True)}] {item.shown}: not run: {item.problem}"
