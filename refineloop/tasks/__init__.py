"""Task presets: what to draw, what the critic rewards, and how heat (or any goal) escalates.

A task is a small TOML file. `hotdog.toml` ships; `--task FILE.toml` loads a user's own with the same
keys, and `--goal "TEXT"` builds a quick one from a sentence.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from refineloop.errors import TaskError

REQUIRED = ("name", "goal", "subject", "start_prompt")


@dataclass(frozen=True)
class Task:
    """What the loop is refining towards."""

    name: str
    """Short name, used in run-folder names."""
    goal: str
    """The goal in one sentence, shown to every model."""
    subject: str
    """Positive anchor prefixed to every image prompt, so the subject and framing never drift."""
    start_prompt: str
    """The first image's prompt."""
    negative_prompt: str = ""
    """What the image model should avoid (never name the subject itself: that erases it)."""
    judge_focus: str = ""
    """What the judge scores, in a phrase; defaults to the goal."""
    criteria: tuple[str, ...] = ()
    """What the judge rewards, one point each."""
    escalation: tuple[str, ...] = field(default_factory=tuple)
    """Steps from mild to extreme that the critic can suggest when ideas run dry."""

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins, fit for checkpointed state."""
        data = dataclasses.asdict(self)
        data["criteria"] = list(self.criteria)
        data["escalation"] = list(self.escalation)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        """Build a task from a mapping, checking the required keys."""
        missing = [key for key in REQUIRED if not str(data.get(key, "")).strip()]
        if missing:
            raise TaskError(f"task lacks {', '.join(missing)}: add {' and '.join(missing)} to the task file")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TaskError(f"task has unknown keys {', '.join(unknown)}: allowed are {', '.join(sorted(names))}")
        clean = dict(data)
        clean["criteria"] = tuple(str(c) for c in data.get("criteria", ()))
        clean["escalation"] = tuple(str(e) for e in data.get("escalation", ()))
        return cls(**clean)


def preset_names() -> list[str]:
    """Names of the presets that ship with refineloop."""
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".toml"))


def load_task(spec: str) -> Task:
    """Load a preset by name or a TOML file by path."""
    path = Path(spec).expanduser()
    if spec.endswith(".toml") or path.exists():
        if not path.is_file():
            raise TaskError(
                f"task file {spec} not found: check the path, or use a preset ({', '.join(preset_names())})"
            )
        text = path.read_text(encoding="utf-8")
    elif spec in preset_names():
        text = resources.files(__package__).joinpath(f"{spec}.toml").read_text(encoding="utf-8")
    else:
        raise TaskError(f"unknown task '{spec}': use a preset ({', '.join(preset_names())}) or a .toml file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(f"task file {spec} is not valid TOML ({exc}): fix the line it names") from None
    return Task.from_dict(data)


def task_from_goal(goal: str) -> Task:
    """Build a quick task from one sentence, such as "a teapot that looks ancient"."""
    goal = " ".join(goal.split())
    if not goal:
        raise TaskError('--goal is empty: describe the image you want, e.g. --goal "a cosy cabin in snow"')
    slug = re.sub(r"[^a-z0-9]+", "-", goal.lower()).strip("-")[:32].strip("-") or "goal"
    return Task(
        name=slug,
        goal=goal,
        subject=goal,
        start_prompt=goal,
        negative_prompt="blurry, low quality, text, watermark",
        judge_focus=f"how well the image achieves: {goal}",
        criteria=("it clearly shows the goal", "striking, detailed, well composed", "no artefacts"),
        escalation=(
            "sharper detail and better lighting",
            "a bolder, more dramatic composition",
            "richer colour and atmosphere",
            "the goal pushed to its most extreme, unmistakable form",
        ),
    )


def resolve_task(task: str, goal: str) -> Task:
    """The task a run uses: a goal sentence wins over a preset or file."""
    return task_from_goal(goal) if goal.strip() else load_task(task)
