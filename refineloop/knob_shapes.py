"""The shape of every run setting: the group it belongs to, the bounds it must keep and the choices it takes.

This is the metadata of RunSettings' fields that is not prose (the prose is each field's `description`): the
settings' validation loops over it, `run --help` groups and bounds its flags by it, and the settings reference
in docs/settings.md is generated from it (a test fails when that page drifts, and another when a setting has no
shape here). Bounds catch a typo before any folder exists; past them a model fails, or a run never ends, only at
its first image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from refineloop.samplers import sampler_names
from refineloop.strategies import strategy_names

#: The groups, in the order `--help` and the docs show them, each with a line saying what it gathers.
GROUPS: dict[str, str] = {
    "task": "what to make",
    "models": "which models draw and judge, and where they run",
    "strategy": "what the search keeps, and when it stops",
    "image": "how each image is drawn",
    "judging": "how images are judged and the winner crowned",
    "budgets": "limits that stop a run cleanly",
    "image transport": "how an image server is reached (a resume may change these)",
    "critic transport": "how the critic's server is reached (a resume may change these)",
    "agent modes": "the agent and evaluator-optimizer strategies",
    "output": "where the run goes and who watches it",
}

#: Every image side is a multiple of 8, the latent downscale of every diffusers VAE in use.
MAX_SIDE = 8192
MAX_SEED = 2**64 - 1
MAX_ROUNDS = 10_000
#: The final pick duels every pair of its images in both orders, so its cost grows as K squared.
MAX_FINAL_PICK = 10
JUDGES = ("score", "pairwise", "checklist")
DTYPES = ("", "bf16", "fp16", "fp32")
#: The settings that hold a server's URL: a run records them with any credentials masked.
URL_SETTINGS = ("ollama_url", "openai_url", "comfyui_url", "a1111_url")


@dataclass(frozen=True)
class Shape:
    """One setting's group, bounds and choices."""

    group: str
    """Its group in `--help` and the docs (a key of GROUPS)."""
    low: float | None = None
    """The least value allowed, or None."""
    high: float | None = None
    """The greatest value allowed, or None."""
    open_low: bool = False
    """Whether `low` itself is excluded."""
    open_high: bool = False
    """Whether `high` itself is excluded."""
    multiple: int | None = None
    """Values must be a multiple of this (image sides)."""
    off: float | None = None
    """A value outside the bounds that turns the setting off (0 budgets, 0 rounds = until DONE)."""
    off_means: str = ""
    """What `off` means, in a word or two."""
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
    """The only values allowed, when the setting is one of a list; a function when the list can grow while the
    process runs (a strategy registered in the table)."""

    def options(self) -> tuple[str, ...]:
        """The allowed values as they stand now (empty: any value of the setting's type)."""
        return self.choices() if callable(self.choices) else self.choices

    def allows(self, value: float) -> bool:
        """Whether a (finite) number keeps these bounds."""
        if self.off is not None and value == self.off:
            return True
        if self.multiple and value % self.multiple:
            return False
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.open_high and value == self.high))

    def words(self) -> str:
        """The bounds in words, as errors, `--help` and the docs say them: `between 1 and 16`, `in (0, 1]`."""
        low, high = _number(self.low), _number(self.high)
        if self.multiple:
            text = f"a multiple of {self.multiple} from {low} to {high}"
        elif self.low is not None and self.high is not None:
            if self.open_low == self.open_high:
                text = f"between {low} and {high}" + (", exclusive" if self.open_low else "")
            else:
                text = f"in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"
        elif self.low is not None:
            text = f"above {low}" if self.open_low else f"at least {low}"
        elif self.high is not None:
            text = f"at most {high}"
        else:
            return ""
        return f"{_number(self.off)} ({self.off_means}) or {text}" if self.off is not None else text

    def json_schema(self) -> dict[str, object]:
        """The shape as JSON-schema keywords, for forms drawn from the settings' schema (Studio's): the group
        and the bounds in words always, and the numeric keywords where the bounds are one plain interval."""
        schema: dict[str, object] = {"x-group": self.group}
        if self.words():
            schema["x-allowed"] = self.words()
        if self.options():
            schema["enum"] = list(self.options())
        if self.off is None and not self.multiple:
            for value, open_, closed_key, open_key in (
                (self.low, self.open_low, "minimum", "exclusiveMinimum"),
                (self.high, self.open_high, "maximum", "exclusiveMaximum"),
            ):
                if value is not None and value < 2**53:  # JSON numbers past 2**53 lose precision in a browser
                    schema[open_key if open_ else closed_key] = value
        if self.multiple:
            schema["multipleOf"] = self.multiple
        return schema

    @property
    def bounded(self) -> bool:
        """Whether the setting has numeric bounds to check."""
        return self.low is not None or self.high is not None


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if math.isfinite(value) and value == int(value) else f"{value:g}"


def _budget(what: str) -> Shape:
    return Shape("budgets", low=0, open_low=True, off=0, off_means=f"no {what} budget")


KNOB_SHAPES: dict[str, Shape] = {
    "task": Shape("task"),
    "goal": Shape("task"),
    "from_image": Shape("task"),
    "init_image": Shape("task"),
    "strategy": Shape("strategy", choices=strategy_names),
    "max_iterations": Shape("strategy", low=1, high=MAX_ROUNDS, off=0, off_means="until DONE"),
    "safety_cap": Shape("strategy", low=1, high=MAX_ROUNDS),
    "patience": Shape("strategy", low=1),
    "sideways": Shape("strategy"),
    "seed": Shape("strategy", low=0, high=MAX_SEED),
    "initial_temp": Shape("strategy", low=0, open_low=True),
    "cooling_rate": Shape("strategy", low=0, high=1, open_low=True, open_high=True),
    "initial_strength": Shape("strategy", low=0, high=1, open_low=True),
    "final_strength": Shape("strategy", low=0, high=1, open_low=True),
    "image_model": Shape("models"),
    "eval_model": Shape("models"),
    "lora": Shape("models"),
    "single_file_config": Shape("models"),
    "allow_pickle": Shape("models"),
    "device": Shape("models"),
    "dtype": Shape("models", choices=DTYPES),
    "compile": Shape("models"),
    "audit_model": Shape("judging"),
    "audit_every": Shape("judging"),
    "first_seed": Shape("image", low=0, high=MAX_SEED),
    "width": Shape("image", low=8, high=MAX_SIDE, multiple=8),
    "height": Shape("image", low=8, high=MAX_SIDE, multiple=8),
    "steps": Shape("image", low=1, high=1000),
    "guidance": Shape("image", low=0, high=100),
    "scheduler": Shape("image", choices=lambda: ("", *sampler_names())),
    "negative_prompt": Shape("task"),
    "judge": Shape("judging", choices=JUDGES),
    "judge_attempts": Shape("judging", low=1, high=10),
    "judge_samples": Shape("judging", low=1, high=16),
    "judge_image_size": Shape("judging", low=64, high=4096),
    "candidates": Shape("judging", low=1, high=16),
    "distinct_ideas": Shape("judging"),
    "draft_steps": Shape("judging", low=1, high=1000, off=0, off_means="no drafts"),
    "draft_margin": Shape("judging", low=0, high=10),
    "draft_size": Shape("judging", low=8, high=MAX_SIDE, multiple=8, off=0, off_means="the run's size"),
    "draft_walk": Shape("judging"),
    "final_pick": Shape("judging", low=2, high=MAX_FINAL_PICK, off=0, off_means="off"),
    "confirm_done": Shape("judging"),
    "plateau_cost": Shape("strategy", low=0, open_low=True, off=0, off_means="off"),
    "max_images": _budget("image"),
    "max_critic_calls": _budget("critic-call"),
    "max_seconds": _budget("time"),
    "comfyui_url": Shape("image transport"),
    "a1111_url": Shape("image transport"),
    "a1111_auth_env": Shape("image transport"),
    "ollama_url": Shape("critic transport"),
    "openai_url": Shape("critic transport"),
    "openai_key_env": Shape("critic transport"),
    "openai_stream": Shape("critic transport"),
    "critic_keep_alive": Shape("critic transport"),
    "critic_timeout": Shape("critic transport", low=0, open_low=True),
    "critic_retries": Shape("critic transport", low=0, high=10),
    "critic_concurrency": Shape("critic transport", low=1, high=32),
    "agent_model": Shape("agent modes"),
    "agent_router_calls": Shape("agent modes", low=1, high=50),
    "review": Shape("output"),
    "output_dir": Shape("output"),
}


def shape_of(name: str) -> Shape:
    """The shape of setting `name`; a setting nobody gave a shape yet goes under "other" (a test refuses that)."""
    return KNOB_SHAPES.get(name, Shape("other"))
