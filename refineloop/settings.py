"""Every knob of a run, in one dataclass.

`RunSettings` is three things at once: the CLI's flags, the graph's `context_schema` (so Studio draws a
form with a description per field), and the `settings` entry of the checkpointed state (runtime context
is not checkpointed, so a resumed run reads its knobs from state).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from refineloop.errors import SettingsError

Strategy = Literal["greedy", "climbing", "annealing", "img2img", "agent", "evaluator-optimizer"]
STRATEGIES: tuple[str, ...] = ("greedy", "climbing", "annealing", "img2img", "agent", "evaluator-optimizer")

#: Defaults that differ by strategy; the seed uses patience 3 for climbing and 4 for img2img.
DEFAULT_PATIENCE = {"img2img": 4}


def _knob(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(kw_only=True)
class RunSettings:
    """The settings of one refinement run."""

    task: str = _knob("hotdog", "Task preset name (e.g. `hotdog`) or the path of a task TOML file.")
    goal: str = _knob("", "A one-sentence goal; when set it builds a quick task and overrides `task`.")
    strategy: str = _knob(
        "greedy",
        "Search strategy (what to keep each round): greedy, climbing, annealing, img2img; or a mode where models "
        "steer: agent (an LLM router picks the next step), evaluator-optimizer (a prompt-writer and a critic agent).",
    )
    max_iterations: int = _knob(10, "Rounds to run (one image each, or --candidates images); 0 runs until DONE.")
    safety_cap: int = _knob(100, "Hard limit on images when max_iterations is 0.")
    patience: int | None = _knob(None, "Misses in a row before climbing or img2img gives up (default 3, img2img 4).")
    seed: int | None = _knob(None, "Base seed for images and annealing draws; chosen and recorded when empty.")
    initial_temp: float = _knob(2.0, "Annealing start temperature T0.")
    cooling_rate: float = _knob(0.85, "Annealing geometric cooling: T = T0 * rate^(i-1); between 0 and 1.")
    initial_strength: float = _knob(0.8, "img2img strength for the first refinement (explore).")
    final_strength: float = _knob(0.3, "img2img strength for the last refinement (polish).")
    image_model: str = _knob("sketch", "Image model: `sketch` (offline demo), `hf:<hub id>` or a local folder.")
    eval_model: str = _knob("demo", "Vision critic: `demo` (offline heuristic) or `ollama:<model>`.")
    ollama_url: str = _knob("", "Ollama base URL; empty uses OLLAMA_HOST or http://127.0.0.1:11434.")
    width: int | None = _knob(None, "Image width in pixels; empty takes the model's default.")
    height: int | None = _knob(None, "Image height in pixels; empty takes the model's default.")
    steps: int | None = _knob(None, "Denoising steps; empty takes the model's default.")
    guidance: float | None = _knob(None, "Guidance scale; empty takes the model's default.")
    judge_attempts: int = _knob(3, "Judge calls per image before an unparseable reply is recorded as unknown.")
    judge: str = _knob(
        "score",
        "How images are compared: score (1-10 each) or pairwise (the critic compares the new image with the best, "
        "in both orders; it is adopted only when it wins both).",
    )
    judge_samples: int = _knob(1, "Judge samples per image, averaged (at a small temperature when above 1).")
    candidates: int = _knob(1, "Images drawn per round (best-of-N, one batched call); the best-judged competes.")
    max_images: int = _knob(0, "Budget: stop after this many images in all; 0 means no budget.")
    max_critic_calls: int = _knob(0, "Budget: stop after this many critic calls in all; 0 means no budget.")
    max_seconds: float = _knob(0.0, "Budget: stop after this much working time, in seconds; 0 means no budget.")
    review: bool = _knob(False, "Pause after each judged image so a person can approve, edit the prompt, or stop.")
    device: str = _knob("", "Image-model device: cuda, cuda:1, mps or cpu; empty picks by free memory.")
    dtype: str = _knob("", "Image-model dtype: bf16, fp16 or fp32; empty: bf16 on CUDA, fp16 on MPS, fp32 on CPU.")
    output_dir: str = _knob("", "Run folder; empty makes runs/<timestamp>-<task>.")
    agent_model: str = _knob(
        "",
        "Chat model for the agent roles (agent's router, evaluator-optimizer's prompt writer): `demo`, "
        "`ollama:<model>`; empty uses eval_model. The router needs tool calling, else it follows the fixed route.",
    )
    agent_router_calls: int = _knob(3, "Router model calls allowed per image in agent mode before the fixed route.")

    def effective_patience(self) -> int:
        """The patience this run uses, after the per-strategy default."""
        if self.patience is not None:
            return self.patience
        return DEFAULT_PATIENCE.get(self.strategy, 3)

    def image_cap(self) -> int:
        """The most images this run may make: rounds times candidates, and within --max-images."""
        rounds = self.max_iterations if self.max_iterations > 0 else self.safety_cap
        cap = rounds * self.candidates
        return min(cap, self.max_images) if self.max_images > 0 else cap

    def validate(self) -> RunSettings:
        """Check every knob; raise SettingsError with a one-line fix for the first bad one."""
        _check(self.strategy in STRATEGIES, f"unknown strategy '{self.strategy}': use one of {', '.join(STRATEGIES)}")
        _check(self.max_iterations >= 0, "--max-iterations must be 0 (until DONE) or a positive count")
        _check(self.safety_cap >= 1, "--safety-cap must be at least 1")
        _check(self.patience is None or self.patience >= 1, "--patience must be at least 1")
        _check(self.initial_temp > 0, "--initial-temp must be above 0 (try 2.0)")
        _check(0 < self.cooling_rate < 1, "--cooling-rate must be between 0 and 1, exclusive (try 0.85)")
        for name in ("initial_strength", "final_strength"):
            value = getattr(self, name)
            _check(0 < value <= 1, f"--{name.replace('_', '-')} must be in (0, 1]")
        _check(self.judge_attempts >= 1, "--judge-attempts must be at least 1")
        _check(self.judge in ("score", "pairwise"), f"unknown judge '{self.judge}': use score or pairwise")
        _check(1 <= self.judge_samples <= 16, "--judge-samples must be between 1 and 16")
        _check(1 <= self.candidates <= 16, "--candidates must be between 1 and 16")
        for name in ("max_images", "max_critic_calls", "max_seconds"):
            _check(getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be 0 (no budget) or positive")
        _check(self.dtype in ("", "bf16", "fp16", "fp32"), f"unknown dtype '{self.dtype}': use bf16, fp16 or fp32")
        _check(
            self.device == "" or self.device in ("cpu", "cuda", "mps") or self.device.startswith("cuda:"),
            f"unknown device '{self.device}': use cuda, cuda:N, mps or cpu",
        )
        _check(self.agent_router_calls >= 1, "--agent-router-calls must be at least 1")
        for name in ("width", "height", "steps"):
            value = getattr(self, name)
            _check(value is None or value >= 1, f"--{name} must be a positive number")
        _check(self.guidance is None or self.guidance >= 0, "--guidance must not be negative")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins, fit for checkpointed state."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunSettings:
        """Rebuild from state, ignoring keys a newer or older version wrote."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SettingsError(message)
