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
from refineloop.files.names import safe_component
from refineloop.files.safe_io import read_user_text

REQUIRED = ("name", "goal", "subject", "start_prompt")
TEXT_KEYS = ("name", "goal", "subject", "start_prompt", "negative_prompt", "judge_focus")
LIST_KEYS = ("criteria", "escalation", "keep")
#: How condensed prompts are written (backends.image.protocol.ImageTraits.prompt_style); "" follows the model.
PROMPT_STYLES = ("tags", "sentences")

#: Bounds on what a task file may hold: every text goes into prompts (and the name into a folder name), so a
#: runaway file must fail in one line here, not as a context overflow or a huge folder name mid-run.
MAX_TASK_BYTES = 1_000_000
MAX_NAME = 100
MAX_TEXT = 4000
MAX_LIST = 50
MAX_ITEM = 500
#: A checklist is asked of every image in one call: past ten questions small models lose count.
MAX_CHECKLIST = 10
MAX_WEIGHT = 10

# Tabs and newlines are fine in a TOML multi-line string; other control characters only corrupt prompts,
# files and terminals.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


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
    checklist: tuple[tuple[str, float], ...] = ()
    """With --judge checklist: the weighted yes/no questions every image is asked, (question, weight); empty lets
    the critic write them from the goal at the run's start."""
    keep: tuple[str, ...] = ()
    """Words every prompt must carry verbatim (a LoRA's trigger words, a name): the condense step and the proposer
    keep them, and they count in the prompt budget."""
    prompt_style: str = ""
    """How condensed prompts are written: `tags` (comma-separated phrases) or `sentences`; empty follows the image
    model (tags for CLIP-only encoders, sentences for T5 or LLM encoders)."""

    def with_negative_prompt(self, text: str | None) -> Task:
        """The task with `--negative-prompt` applied: the flag wins over the task file's key when given (an empty
        text clears it); None keeps the task's own."""
        return self if text is None else dataclasses.replace(self, negative_prompt=text)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins, fit for checkpointed state."""
        data = dataclasses.asdict(self)
        data["criteria"] = list(self.criteria)
        data["escalation"] = list(self.escalation)
        data["keep"] = list(self.keep)
        data["checklist"] = [{"question": q, "weight": w} for q, w in self.checklist]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "task") -> Task:
        """Build a task from a mapping, checking every key's type, size and content.

        `source` names where the mapping came from (`task file teapot.toml`) in the one-line errors.
        """
        if not isinstance(data, dict):
            raise TaskError(f"{source} is not a table of keys: write name, goal, subject and start_prompt")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in data if key not in names)
        if unknown:
            raise TaskError(f"{source} has unknown keys {', '.join(unknown)}: allowed are {', '.join(sorted(names))}")
        missing = [key for key in REQUIRED if data.get(key) is None or data.get(key) == ""]
        if missing:
            raise TaskError(f"{source} lacks {', '.join(missing)}: add {' and '.join(missing)} to the task file")
        clean: dict[str, Any] = {}
        for key in TEXT_KEYS:
            if key in data:
                clean[key] = _text(data[key], key, source, required=key in REQUIRED)
        for key in LIST_KEYS:
            clean[key] = _texts(data.get(key, ()), key, source)
        clean["checklist"] = _checklist(data.get("checklist", ()), source)
        style = data.get("prompt_style", "")
        if style not in ("", *PROMPT_STYLES):
            shown = f"'{style}'" if isinstance(style, str) else _kind(style)
            raise TaskError(
                f'{source}: prompt_style is {shown}: write prompt_style = "tags" or "sentences", or leave it out'
            )
        clean["prompt_style"] = style
        return cls(**clean)


def _text(value: Any, key: str, source: str, *, required: bool) -> str:
    """A text value, checked: a string, not blank when required, bounded, no control characters."""
    example = f'{key} = "..."'
    if not isinstance(value, str):
        raise TaskError(f"{source}: {key} must be text, got {_kind(value)}: write {example}")
    if required and not value.strip():
        raise TaskError(f"{source}: {key} is blank: write {example} with some text")
    limit = MAX_NAME if key == "name" else MAX_TEXT
    if len(value) > limit:
        raise TaskError(f"{source}: {key} has {len(value)} characters, more than {limit}: shorten it")
    if _CONTROL.search(value):
        raise TaskError(f"{source}: {key} holds a control character: remove it")
    return value.strip() if required else value


def _texts(value: Any, key: str, source: str) -> tuple[str, ...]:
    """A list of texts, checked: a list (not one string, which would become one entry per character)."""
    example = f'{key} = ["...", "..."]'
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TaskError(f"{source}: {key} must be a list of texts, got {_kind(value)}: write {example}")
    if len(value) > MAX_LIST:
        raise TaskError(f"{source}: {key} has {len(value)} entries, more than {MAX_LIST}: keep the ones that matter")
    entries = []
    for n, entry in enumerate(value, start=1):
        where = f"{key} entry {n}"
        if not isinstance(entry, str):
            raise TaskError(f"{source}: {where} must be text, got {_kind(entry)}: write {example}")
        if not entry.strip():
            raise TaskError(f"{source}: {where} is blank: remove it or write some text")
        if len(entry) > MAX_ITEM:
            raise TaskError(f"{source}: {where} has {len(entry)} characters, more than {MAX_ITEM}: shorten it")
        if _CONTROL.search(entry):
            raise TaskError(f"{source}: {where} holds a control character: remove it")
        entries.append(entry.strip())
    return tuple(entries)


def _checklist(value: Any, source: str) -> tuple[tuple[str, float], ...]:
    """The task's checklist, checked: a list of questions, each text or a table {question, weight}.

    A question answers yes when the image is closer to the goal; a weight says how much that yes counts.
    """
    example = 'checklist = ["Is there exactly one hotdog?", { question = "Are there flames?", weight = 2 }]'
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TaskError(f"{source}: checklist must be a list of questions, got {_kind(value)}: write {example}")
    if len(value) > MAX_CHECKLIST:
        raise TaskError(
            f"{source}: checklist has {len(value)} questions, more than {MAX_CHECKLIST}: keep the ones that matter"
        )
    questions = []
    for n, entry in enumerate(value, start=1):
        where = f"checklist entry {n}"
        weight: Any = 1.0
        if isinstance(entry, dict):
            extra = sorted(str(k) for k in entry if k not in ("question", "weight"))
            if extra or "question" not in entry:
                raise TaskError(f"{source}: {where} must hold question (and optionally weight): write {example}")
            weight = entry.get("weight", 1.0)
            entry = entry["question"]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= MAX_WEIGHT:
            raise TaskError(f"{source}: {where} has weight {weight!r}: use a number above 0 and at most {MAX_WEIGHT}")
        if not isinstance(entry, str):
            raise TaskError(f"{source}: {where} must be a question in text, got {_kind(entry)}: write {example}")
        if not entry.strip():
            raise TaskError(f"{source}: {where} is blank: remove it or write a question")
        if len(entry) > MAX_ITEM:
            raise TaskError(f"{source}: {where} has {len(entry)} characters, more than {MAX_ITEM}: shorten it")
        if _CONTROL.search(entry):
            raise TaskError(f"{source}: {where} holds a control character: remove it")
        questions.append((" ".join(entry.split()), float(weight)))
    return tuple(questions)


def _kind(value: Any) -> str:
    """How a TOML value reads to a person: a list, a number, a table..."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return "a date" if hasattr(value, "isoformat") else type(value).__name__


def preset_names() -> list[str]:
    """Names of the presets that ship with refineloop."""
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".toml"))


def load_task(spec: str) -> Task:
    """Load a preset by name or a TOML file by path."""
    if not isinstance(spec, str) or not spec.strip() or "\x00" in spec:
        raise TaskError(f"--task is empty: use a preset ({', '.join(preset_names())}) or a .toml file")
    try:
        path = Path(spec).expanduser()
    except RuntimeError:  # ~someone for a user this machine does not know
        path = Path(spec)
    if spec.endswith(".toml") or path.exists():
        if not path.exists():
            raise TaskError(
                f"task file {spec} not found: check the path, or use a preset ({', '.join(preset_names())})"
            )
        text = read_user_text(path, f"task file {spec}", MAX_TASK_BYTES, TaskError)
        source = f"task file {spec}"
    elif spec in preset_names():
        text = resources.files(__package__).joinpath(f"{spec}.toml").read_text(encoding="utf-8")
        source = f"task preset {spec}"
    else:
        raise TaskError(f"unknown task '{spec}': use a preset ({', '.join(preset_names())}) or a .toml file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise TaskError(f"{source} is not valid TOML ({first}): fix the line it names") from None
    return Task.from_dict(data, source)


def task_from_goal(goal: str) -> Task:
    """Build a quick task from one sentence, such as "a teapot that looks ancient"."""
    goal = " ".join(goal.split())
    if not goal:
        raise TaskError('--goal is empty: describe the image you want, e.g. --goal "a cosy cabin in snow"')
    if len(goal) > MAX_TEXT:
        raise TaskError(f"--goal has {len(goal)} characters, more than {MAX_TEXT}: say it in a sentence or two")
    if _CONTROL.search(goal):
        raise TaskError("--goal holds a control character: remove it")
    slug = safe_component(goal.lower(), limit=32, fallback="goal")
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
