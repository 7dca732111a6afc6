"""Every knob of a run, in one dataclass.

`RunSettings` is three things at once: the CLI's flags, the graph's `context_schema` (so Studio draws a
form with a description per field), and the `settings` entry of the checkpointed state (runtime context
is not checkpointed, so a resumed run reads its knobs from state).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from refineloop.errors import SettingsError
from refineloop.knob_shapes import shape_of
from refineloop.samplers import sampler_names
from refineloop.strategies import STRATEGY_SPECS, spec_for, strategy_names

MAX_GOAL = 4000
MAX_TEXT = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Settings added after runs were already being recorded, each with the value that keeps such a run (its state
#: holds every setting it had, and no others) doing what it did when it started. Runs since record them all.
ADDED_LATER: dict[str, Any] = {"sideways": False}


def _knob(default: Any, description: str) -> Any:
    return field(default=default, metadata={"description": description})


@dataclass(kw_only=True)
class RunSettings:
    """The settings of one refinement run."""

    task: str = _knob("hotdog", "Task preset name (e.g. `hotdog`) or the path of a task TOML file.")
    goal: str = _knob("", "A one-sentence goal; when set it builds a quick task and overrides `task`.")
    strategy: str = _knob(
        "climbing",
        "Search strategy (what to keep each round): "
        + "; ".join(f"{spec.name} ({spec.description})" for spec in STRATEGY_SPECS.values())
        + ".",
    )
    max_iterations: int = _knob(10, "Rounds to run (one image each, or --candidates images); 0 runs until DONE.")
    safety_cap: int = _knob(100, "Hard limit on images when max_iterations is 0.")
    patience: int | None = _knob(None, "Misses in a row before climbing or img2img gives up (default 10, img2img 4).")
    sideways: bool = _knob(
        True,
        "Climbing: a new image level with the best (the same score, or a split duel) moves the walk onto it without "
        "crowning it, and counts as a miss; --no-sideways stays on the best, as the seed does.",
    )
    seed: int | None = _knob(None, "Base seed for images and annealing draws; chosen and recorded when empty.")
    initial_temp: float = _knob(2.0, "Annealing start temperature T0.")
    cooling_rate: float = _knob(0.85, "Annealing geometric cooling: T = T0 * rate^(i-1); between 0 and 1.")
    initial_strength: float = _knob(0.8, "img2img strength for the first refinement (explore).")
    final_strength: float = _knob(0.3, "img2img strength for the last refinement (polish).")
    image_model: str = _knob(
        "sketch",
        "Image model: `sketch` (offline demo), `hf:<hub id>`, a local diffusers folder, a single-file checkpoint, a "
        "ComfyUI workflow or an A1111-compatible server (see the backends).",
    )
    comfyui_url: str = _knob(
        "http://127.0.0.1:8188", "Base URL of the ComfyUI server that draws `comfyui:<workflow.json>` image models."
    )
    a1111_url: str = _knob(
        "http://127.0.0.1:7860",
        "Base URL of the A1111-compatible server (A1111 WebUI, Forge, SD.Next, started with --api) that draws "
        "`a1111:<checkpoint>` image models.",
    )
    a1111_auth_env: str = _knob(
        "",
        "Name of the environment variable holding `user:password` for an A1111-compatible server started with "
        "--api-auth (the value itself is never written anywhere); empty sends no credentials.",
    )
    single_file_config: str = _knob(
        "",
        "For a single-file checkpoint (`--image-model FILE.safetensors`): the diffusers folder or cached hub id whose "
        "configuration (component configs, tokenizers, scheduler) it loads with; empty: the family's usual repository "
        "from the local Hugging Face cache.",
    )
    allow_pickle: bool = _knob(
        False,
        "Load a `.ckpt` single-file checkpoint: a Python pickle, which can run any code when loaded, so only for files "
        "from a source you trust (a .safetensors file needs no such trust).",
    )
    eval_model: str = _knob(
        "demo",
        "Vision critic: `demo` (offline heuristic; `demo:delay=1` answers after 1 s, like a slow model), "
        "`ollama:<model>`, or `openai:<model>` on any OpenAI-compatible "
        "server (--openai-url).",
    )
    ollama_url: str = _knob("", "Ollama base URL; empty uses OLLAMA_HOST or http://127.0.0.1:11434.")
    openai_url: str = _knob(
        "",
        "Base URL of the OpenAI-compatible server for `openai:` models, ending in /v1 (vLLM, llama.cpp, LM Studio, "
        "a proxy); empty uses OPENAI_BASE_URL, else https://api.openai.com/v1.",
    )
    openai_key_env: str = _knob(
        "OPENAI_API_KEY",
        "Name of the environment variable holding the API key for `openai:` models (the key itself is never "
        "written anywhere); a local server usually needs none.",
    )
    openai_stream: bool = _knob(
        False, "Stream replies from the OpenAI-compatible server (keeps proxies that cut idle connections happy)."
    )
    critic_keep_alive: str = _knob(
        "",
        "How long Ollama keeps the critic loaded after a call (its keep_alive: 10m, 1h, -1 for ever, 0 to unload "
        "at once, so the image model has the GPU to itself between critic calls); empty: Ollama's default.",
    )
    lora: list[str] = field(
        default_factory=list,
        metadata={
            "description": "A LoRA for the diffusers image model: a .safetensors file, a folder or a hub id, with an "
            "optional :SCALE (default 1.0), e.g. style.safetensors:0.8; repeat the flag for several."
        },
    )
    from_image: str = _knob(
        "",
        "Start from an image refineloop made (its PNG provenance): its prompt, negative prompt and seed draw the "
        "first image again, and its task is reused unless --task or --goal is given.",
    )
    init_image: str = _knob(
        "",
        "Start from your own picture (PNG, JPEG or WebP, any size): it is centre-cropped to the run's aspect and "
        "resized to its size, judged first as image 0 (the baseline the run must beat), and the first image drawn is "
        "an img2img of it at --initial-strength.",
    )
    first_seed: int | None = _knob(
        None, "Seed of the first image (set by --from IMAGE to remake it); empty derives it from --seed."
    )
    width: int | None = _knob(None, "Image width in pixels; empty takes the model's default.")
    height: int | None = _knob(None, "Image height in pixels; empty takes the model's default.")
    steps: int | None = _knob(None, "Denoising steps; empty takes the model's default.")
    guidance: float | None = _knob(None, "Guidance scale; empty takes the model's default.")
    scheduler: str = _knob(
        "",
        "Sampler of a diffusers model, by the name the web UIs use: "
        + ", ".join(sampler_names())
        + "; empty keeps the model's own. Flow-matching models (SD3, FLUX) keep their own and refuse it.",
    )
    negative_prompt: str | None = _knob(
        None,
        "What the image must not show (replaces the task's negative_prompt; an empty text clears it); empty keeps "
        "the task's.",
    )
    judge_attempts: int = _knob(3, "Judge calls per image before an unparseable reply is recorded as unknown.")
    critic_timeout: float = _knob(
        120.0,
        "Seconds one critic call may take before it is abandoned as a transport failure (and retried); "
        "raise it for slow models or hosts.",
    )
    critic_retries: int = _knob(
        2,
        "Retries, with backoff, of a critic call that failed in transport (connection refused or dropped, "
        "timeout, HTTP 5xx); 0 fails on the first such error.",
    )
    critic_concurrency: int = _knob(
        4,
        "Critic calls that do not depend on each other (a round's candidates, a duel's two orders, judge samples) "
        "made at once; results are applied in a fixed order. Ollama serves them together with OLLAMA_NUM_PARALLEL.",
    )
    judge: str = _knob(
        "score",
        "How images are compared: score (1-10 each), pairwise (the critic compares the new image with the best, "
        "in both orders; it is adopted only when it wins both), or checklist (the critic writes 4-10 weighted "
        "yes/no questions once; an image scores its weighted pass rate on 0-10, P(yes) where the model gives "
        "log probabilities).",
    )
    judge_samples: int = _knob(1, "Judge samples per image, averaged (at a small temperature when above 1).")
    judge_image_size: int = _knob(
        1024,
        "Longest side, in pixels, of the images sent to the critic (encoded once per image as a high-quality "
        "JPEG; the PNG on disk stays full size and lossless).",
    )
    candidates: int = _knob(1, "Images drawn per round (best-of-N, one batched call); the best-judged competes.")
    distinct_ideas: bool = _knob(
        False,
        "With --candidates N: every image of a round after the first follows an idea of its own, asked of the "
        "proposer (told the round's other ideas, so it looks elsewhere), instead of N seeds of one prompt; the first "
        "round, with no image to propose from, still draws N seeds of the start prompt.",
    )
    draft_steps: int = _knob(
        0,
        "Judge each round's candidates from a cheap draft drawn with this many denoising steps (fewer than --steps), "
        "then draw only the best draft in full, with its seed and prompt, when its score beats the best's by "
        "--draft-margin; a round whose best draft falls short makes no full image and counts as a miss. Drafts are "
        "kept in drafts/, never as the run's images. 0: no drafts.",
    )
    draft_margin: float = _knob(
        0.5,
        "With drafts: how far a round's best draft must score above the best image for its full image to be drawn "
        "(0.5: strictly higher on the critic's whole-number scale; 0: a tie is enough).",
    )
    draft_size: int = _knob(
        0,
        "With drafts: the longest side, in pixels, of each draft (a multiple of 8; the run's aspect); a draft "
        "smaller than the image costs less. Given alone it turns drafts on at the run's steps. 0: the run's size.",
    )
    draft_walk: bool = _knob(
        False,
        "With drafts: walk on the drafts themselves. Every round's image is a draft (--draft-steps, --draft-size), "
        "judged and kept by the strategy as any image; at the stop the final pick meets the best drafts, and only "
        "its winner (the best draft with --final-pick 0) is drawn in full, with its seed and prompt, and judged: "
        "best.png is that full image.",
    )
    final_pick: int = _knob(
        4,
        "At the stop, the K highest-scored images (the best among them, and up to K more tied with the K-th) meet "
        "again under a careful judge (fresh samples and duels in both orders) and the winner becomes best.png; 0 "
        "turns it off.",
    )
    confirm_done: bool = _knob(
        True,
        "A DONE stops the run only after a second look agrees: a fresh judge sample, and a duel with the best when "
        "another image holds it (--no-confirm-done stops on the first DONE, as the seed does).",
    )
    audit_model: str = _knob(
        "",
        "An independent critic (`demo`, `ollama:<model>`) that judges the crowned image against the first one at "
        "the end, in both orders; empty: no audit.",
    )
    audit_every: bool = _knob(False, "With --audit-model: the auditor also scores every image as it is judged.")
    plateau_cost: float = _knob(
        0.0,
        "Stop when the best has stopped improving and the gain one more image is expected to bring, estimated from "
        "the run's own gains so far (recent rounds weigh more), falls below this many score points (e.g. 0.1), the "
        "cost of an image in points; 0 turns it off.",
    )
    max_images: int = _knob(0, "Budget: stop after this many images in all; 0 means no budget.")
    max_critic_calls: int = _knob(0, "Budget: stop after this many critic calls in all; 0 means no budget.")
    max_seconds: float = _knob(0.0, "Budget: stop after this much working time, in seconds; 0 means no budget.")
    review: bool = _knob(False, "Pause after each judged image so a person can approve, edit the prompt, or stop.")
    device: str = _knob("", "Image-model device: cuda, cuda:1, mps or cpu; empty picks by free memory.")
    compile: bool = _knob(
        False,
        "torch.compile the image model's denoiser (its repeated blocks where the model declares them): the "
        "first image pays for compiling, later ones run faster on a GPU.",
    )
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
        spec = STRATEGY_SPECS.get(self.strategy)
        return spec.default_patience if spec else 3

    def image_cap(self) -> int:
        """The most images this run's rounds may make: rounds times candidates, and within --max-images, less the
        full images a walk's stop draws."""
        rounds = self.max_iterations if self.max_iterations > 0 else self.safety_cap
        cap = rounds * self.candidates
        return min(cap, self.rounds_image_budget()) if self.max_images > 0 else cap

    def stop_draws(self) -> int:
        """Full images a walk on drafts draws at its stop: the crowned draft, and with an auditor the walk's first
        draft as well (the audit compares full images); 0 for any other run."""
        if not self.draft_walk:
            return 0
        return 2 if self.audit_model else 1

    def rounds_image_budget(self) -> int:
        """What --max-images leaves to the rounds: the stop's full images are drawn within it too."""
        return self.max_images - self.stop_draws()

    @property
    def drafting(self) -> bool:
        """Whether the run draws drafts (--draft-steps or --draft-size): screened before a full image is drawn,
        or walked on (--draft-walk)."""
        return self.draft_steps > 0 or self.draft_size > 0

    @property
    def screening(self) -> bool:
        """Whether a round's candidates are screened as drafts in drafts/ before one is drawn in full (drafts
        without --draft-walk)."""
        return self.drafting and not self.draft_walk

    def round_cap(self) -> int:
        """The most rounds this run may make (--max-iterations, or the safety cap when it is 0)."""
        return self.max_iterations if self.max_iterations > 0 else self.safety_cap

    def validate(self) -> RunSettings:
        """Check every knob; raise SettingsError with a one-line fix for the first bad one.

        Pure (no model, file or network): every entry point (run, demo, fork, batch items, Studio) calls it
        before a folder exists, through `refineloop.backends.checks.validated`, which also asks the backend
        table about the models named (their spec syntax is the backends' own business).
        """
        _check_types(self)
        _check_text(self)
        _check_shapes(self)
        _check(
            math.isfinite(self.critic_timeout) and self.critic_timeout > 0,
            "--critic-timeout must be a positive number of seconds (try 120)",
        )
        _check(
            self.device in ("", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", self.device) is not None,
            f"unknown device '{self.device}': use cuda, cuda:N, mps or cpu",
        )
        _check_backends(self)
        _check_combinations(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins, fit for checkpointed state."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunSettings:
        """Build from a dict of settings, ignoring keys a newer or older version wrote; missing ones take defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})

    @classmethod
    def from_state(cls, data: dict[str, Any] | None) -> RunSettings:
        """A run's own settings, from its state: one that the run predates takes the value it ran with."""
        return cls.from_dict({**ADDED_LATER, **(data or {})})


def _attach_shapes() -> None:
    """Give each field's metadata its shape (group, bounds, choices), so the JSON schema built from RunSettings,
    the one Studio draws its form from, shows them; pydantic reads `json_schema_extra` from field metadata."""
    for knob in dataclasses.fields(RunSettings):
        shape = shape_of(knob.name)
        extra = {"group": shape.group, "json_schema_extra": shape.json_schema()}
        knob.metadata = types.MappingProxyType({**knob.metadata, **extra})


_attach_shapes()


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SettingsError(message)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@functools.cache
def field_types() -> dict[str, tuple[type, bool]]:
    """RunSettings field name -> (the type its values must have, whether None is allowed)."""
    kinds: dict[str, tuple[type, bool]] = {}
    for name, hint in typing.get_type_hints(RunSettings).items():
        optional = False
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            optional, hint = len(args) < len(typing.get_args(hint)), args[0]
        kinds[name] = (hint, optional)
    return kinds


def _check_types(settings: RunSettings) -> None:
    """Every field holds its own type: Studio's form, a batch file or an old checkpoint may hand in anything,
    and a float that is not finite passes every range check below (nan compares false to everything)."""
    for name, (kind, optional) in field_types().items():
        value, flag = getattr(settings, name), _flag(name)
        if value is None:
            _check(optional, f"{flag} needs a value")
            continue
        if kind is bool:
            _check(isinstance(value, bool), f"{flag} takes true or false, got {value!r}")
        elif kind is int:
            whole = isinstance(value, int) and not isinstance(value, bool)
            _check(whole, f"{flag} takes a whole number, got {value!r}")
        elif kind is float:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            _check(number, f"{flag} takes a number, got {value!r}")
            _check(math.isfinite(value), f"{flag} must be a finite number, got {value}")
        elif kind is str:
            _check(isinstance(value, str), f"{flag} takes text, got {value!r}")


def _check_text(settings: RunSettings) -> None:
    """Text flags are bounded and free of control characters (a NUL in a path is an exception, not an error)."""
    for name, (kind, _) in field_types().items():
        value = getattr(settings, name)
        if kind is not str or not value:
            continue
        limit = MAX_GOAL if name == "goal" else MAX_TEXT
        _check(len(value) <= limit, f"{_flag(name)} has {len(value)} characters, more than {limit}: shorten it")
        # A goal may span lines (they are joined); nothing else may hold a control character.
        text = re.sub(r"[\t\n\r]", " ", value) if name == "goal" else value
        _check(not _CONTROL.search(text), f"{_flag(name)} holds a control character: remove it")
    _check(
        settings.goal == "" or settings.goal.strip() != "",
        '--goal is blank: describe the image you want (e.g. --goal "a cosy cabin in snow"), or leave it out',
    )
    _check(
        settings.goal.strip() != "" or settings.task.strip() != "",
        "--task is empty: use a preset (e.g. hotdog) or the path of a task .toml file",
    )


def _check_shapes(settings: RunSettings) -> None:
    """Every setting keeps the bounds and choices its shape gives (refineloop.knob_shapes)."""
    for name in field_types():
        shape, value = shape_of(name), getattr(settings, name)
        if value is None:
            continue
        choices = shape.options()
        if choices and value not in choices:
            named = [choice for choice in choices if choice]
            _check(False, f"unknown {name.replace('_', ' ')} '{value}': use one of {', '.join(named)}")
        if shape.bounded and isinstance(value, int | float):
            _check(shape.allows(value), f"{_flag(name)} must be {shape.words()}, got {value}")


#: Ollama's keep_alive: a whole number of seconds (negative: for ever) or a Go duration such as 10m or 1h30m.
_KEEP_ALIVE = re.compile(r"-?\d+|-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_LORAS = 8


def _check_backends(settings: RunSettings) -> None:
    """How the chat backends are reached, and the LoRAs asked for, checked before anything loads."""
    url = settings.openai_url
    _check(
        url == "" or (url.startswith(("http://", "https://")) and not any(ch.isspace() for ch in url)),
        f"--openai-url '{url}' is not an http(s) URL: pass one like http://127.0.0.1:8000/v1",
    )
    _check(
        _ENV_NAME.fullmatch(settings.openai_key_env) is not None,
        f"--openai-key-env '{settings.openai_key_env}' is not a variable name: name the variable holding the key "
        "(e.g. OPENAI_API_KEY), never the key itself",
    )
    for name in ("comfyui_url", "a1111_url"):
        address = getattr(settings, name)
        _check(
            address.startswith(("http://", "https://")) and not any(ch.isspace() for ch in address),
            f"{_flag(name)} '{address}' is not an http(s) URL: pass one like http://127.0.0.1:8188",
        )
    _check(
        settings.a1111_auth_env == "" or _ENV_NAME.fullmatch(settings.a1111_auth_env) is not None,
        f"--a1111-auth-env '{settings.a1111_auth_env}' is not a variable name: name the variable holding "
        "user:password (e.g. A1111_AUTH), never the credentials themselves",
    )
    keep = settings.critic_keep_alive
    _check(
        keep == "" or _KEEP_ALIVE.fullmatch(keep) is not None,
        f"--critic-keep-alive '{keep}' is not a duration: use seconds (300, -1 for ever, 0) or 10m, 1h, 1h30m",
    )
    _check(
        isinstance(settings.lora, list) and all(isinstance(spec, str) for spec in settings.lora),
        f"--lora takes a list of PATH_OR_ID[:SCALE] texts, got {settings.lora!r}",
    )
    _check(len(settings.lora) <= MAX_LORAS, f"--lora was given {len(settings.lora)} times, more than {MAX_LORAS}")
    for spec in settings.lora:
        _check(spec.strip() != "", "--lora is empty: give a .safetensors file, a folder or a hub id")
        _check(len(spec) <= MAX_TEXT and not _CONTROL.search(spec), f"--lora {spec[:60]!r}: remove control characters")
        _check(lora_scale(spec)[1] is not None, f"--lora '{spec}': the scale after ':' must be a number from -10 to 10")


def lora_scale(spec: str) -> tuple[str, float | None]:
    """Split `PATH_OR_ID[:SCALE]` into the source and its scale (1.0 when none is given); a scale that is not
    a number in [-10, 10] comes back as None. A colon that is not followed by a number belongs to the path."""
    source, colon, tail = spec.rpartition(":")
    if not colon:
        return spec.strip(), 1.0
    try:
        scale = float(tail)
    except ValueError:
        return spec.strip(), 1.0
    if not math.isfinite(scale) or not -10 <= scale <= 10 or not source.strip():
        return source.strip(), None
    return source.strip(), scale


def _check_combinations(settings: RunSettings) -> None:
    """Options that cannot mean anything with the chosen strategy, refused.

    Only a pairwise judge is refused: it chooses how images are compared, and greedy and the agent modes adopt
    every image, so the run would be reported as pairwise-judged while no duel decided anything (the agent
    modes would even pay two critic calls an image for duels nobody reads). The tuning knobs of other
    strategies only warn (`settings_warnings`): they leave the run exactly as asked otherwise, and they arrive
    legitimately from a forked run's original settings or a batch's [defaults].
    """
    _check(
        not settings.audit_every or bool(settings.audit_model),
        "--audit-every needs an auditor: add --audit-model MODEL (e.g. --audit-model ollama:qwen2.5vl:7b)",
    )
    _check(
        not (settings.init_image and settings.from_image),
        "--init-image and --from both name where the run starts: keep --init-image to refine your own picture, or "
        "--from to remake an image refineloop drew",
    )
    _check(
        settings.judge != "pairwise" or spec_for(settings.strategy).comparing,
        f"--judge pairwise compares the new image with the one it must beat, but {settings.strategy} keeps every "
        f"image: use --strategy {_either(strategy_names('comparing'))}, or --judge score",
    )
    _check_rounds(settings)


def _check_rounds(settings: RunSettings) -> None:
    """The options that change what a round draws: distinct ideas need several candidates; drafts fewer steps
    than the image's own, and a strategy that keeps only an image beating the best (a screened draft that falls
    short is a miss) or, for a walk on drafts, one that draws every image from its prompt."""
    _check(
        not settings.distinct_ideas or settings.candidates > 1,
        "--distinct-ideas gives each of a round's candidates its own idea: add --candidates 2 or more",
    )
    _check(
        not settings.draft_walk or settings.drafting,
        "--draft-walk walks on drafts: say how they are drawn with --draft-steps (e.g. a quarter of --steps) "
        "and/or --draft-size",
    )
    if not settings.drafting:
        return
    _check(
        settings.steps is None or settings.draft_steps < settings.steps,
        f"--draft-steps {settings.draft_steps} is not fewer than --steps {settings.steps}: a draft must be cheaper "
        "than the image (try a quarter of --steps)",
    )
    if settings.draft_walk:
        _check_walk(settings)
        return
    spec = spec_for(settings.strategy)
    screened = tuple(n for n in strategy_names("comparing") if _screens_drafts(n))
    _check(
        _screens_drafts(settings.strategy),
        f"--draft-steps and --draft-size screen candidates for a strategy that keeps only an image beating the best, "
        f"which {spec.name} does not: use --strategy {_either(screened)}, or drop the draft options",
    )


def _check_walk(settings: RunSettings) -> None:
    """A walk on drafts draws every image from its prompt (the stop draws the crowned one in full from its
    record), and has no use for --draft-margin."""
    spec = spec_for(settings.strategy)
    walking = tuple(n for n in strategy_names() if _walks_drafts(n))
    _check(
        _walks_drafts(settings.strategy),
        f"--draft-walk draws each image from its prompt and redraws the best in full at the stop, which "
        f"{spec.name} cannot (it draws from its best image, or hands the loop to agents): use --strategy "
        f"{_either(walking)}, or drop --draft-walk",
    )
    _check(
        not changed_flags(settings, "draft_margin"),
        "--draft-margin decides which screened drafts are drawn in full as the run goes; a --draft-walk draws "
        "in full only at the stop: drop one of them",
    )
    _check_walk_budgets(settings)


def _check_walk_budgets(settings: RunSettings) -> None:
    """A walk's stop draws and judges its full images within --max-images and --max-critic-calls, so each must
    leave room for a round of drafts besides."""
    full = settings.stop_draws()
    why = f"the walk's stop draws and judges {full} full image{'s' if full > 1 else ''} within it"
    _check(
        not settings.max_images or settings.rounds_image_budget() >= 1,
        f"--max-images {settings.max_images} leaves no draft to walk on ({why}): give --max-images {full + 1} or more",
    )
    calls = settings.candidates + full
    _check(
        not settings.max_critic_calls or settings.max_critic_calls >= calls,
        f"--max-critic-calls {settings.max_critic_calls} leaves no call to judge a round of drafts ({why}): give "
        f"--max-critic-calls {calls} or more",
    )


def _walks_drafts(strategy: str) -> bool:
    spec = spec_for(strategy)
    return spec.shape == "loop" and not spec.from_image


def _screens_drafts(strategy: str) -> bool:
    spec = spec_for(strategy)
    return spec.shape == "loop" and spec.comparing and spec.compares_with == "best"


def _either(names: tuple[str, ...]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


def _them(knobs: list[str]) -> str:
    return "them" if len(knobs) > 1 else "it"


#: Field defaults, to tell a knob the user changed from one left alone.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunSettings)}


def changed_flags(settings: RunSettings, *names: str) -> list[str]:
    """The flags of the settings among `names` that differ from their defaults."""
    return [_flag(name) for name in names if getattr(settings, name) != _DEFAULTS[name]]


def settings_warnings(settings: RunSettings) -> list[str]:
    """One line per option that the chosen strategy ignores (each line starts with `warning:`).

    These warn instead of failing: the run is still what was asked for, only without that knob, and such a
    value often comes from a forked run's original or a batch's [defaults] rather than from a mistake.
    """
    strategy, found = settings.strategy, []
    spec = spec_for(strategy)
    if settings.patience is not None and not spec.stops_on_misses:
        found.append(
            f"--patience {settings.patience} counts misses in a row, which only "
            f"{' and '.join(strategy_names('stops_on_misses'))} stop on: {strategy} ignores it"
        )
    if not settings.sideways and not spec.moves_sideways:
        found.append(
            f"--no-sideways turns off {' and '.join(strategy_names('moves_sideways'))}'s sideways moves only: "
            f"{strategy} ignores it"
        )
    if not spec.cools and (knobs := changed_flags(settings, "initial_temp", "cooling_rate")):
        found.append(
            f"{' and '.join(knobs)} shape {' and '.join(strategy_names('cools'))}'s temperature only: "
            f"{strategy} ignores {_them(knobs)}"
        )
    strengths = ("final_strength",) if settings.init_image else ("initial_strength", "final_strength")
    if not spec.from_image and (knobs := changed_flags(settings, *strengths)):
        found.append(
            f"{' and '.join(knobs)} set {' and '.join(strategy_names('from_image'))}'s strength only: "
            f"{strategy} ignores {_them(knobs)}"
        )
    if settings.judge_samples > 1 and not spec.comparing:
        found.append(
            f"--judge-samples {settings.judge_samples}: {strategy} adopts every image whatever its score, so the "
            f"averaged samples only choose best.png and confirm DONE, at {settings.judge_samples} critic calls an image"
        )
    if not spec.agents and settings.agent_model:
        found.append(
            f"--agent-model {settings.agent_model} is used by {' and '.join(strategy_names('agents'))} only: "
            f"{strategy} ignores it"
        )
    if settings.audit_model and settings.audit_model == settings.eval_model:
        found.append(
            f"--audit-model {settings.audit_model} is the run's own critic: its audit is not independent "
            "(name another model to guard against a judge being gamed)"
        )
    if not settings.drafting and changed_flags(settings, "draft_margin"):
        found.append(
            "--draft-margin decides which drafts are drawn in full: without --draft-steps or --draft-size "
            "there are none, and it is ignored"
        )
    if spec.shape != "agent-router" and changed_flags(settings, "agent_router_calls"):
        found.append(f"--agent-router-calls bounds the agent's router: {strategy} has none and ignores it")
    return [f"warning: {line}" for line in found]


#: Settings a resume may change: they decide where and how models are reached, never what an image or a
#: verdict is, so a resumed run still ends exactly like an uninterrupted one.
RESUME_OVERRIDES = (
    "critic_concurrency",
    "ollama_url",
    "openai_url",
    "openai_key_env",
    "openai_stream",
    "comfyui_url",
    "a1111_url",
    "a1111_auth_env",
    "critic_keep_alive",
    "device",
    "critic_timeout",
    "critic_retries",
)
