"""The one model cache: every node, iteration and resume in a process reuses the same loaded models.

Nodes never load models themselves; they ask the cache handed to them through the run config
(`configurable.models`), falling back to the process-wide `MODELS`. A distributed runner can inject a
cache whose image model is a remote handle without touching node code.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from refineloop.errors import ModelError
from refineloop.redaction import reveal

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.runnables import RunnableConfig

    from refineloop.backends.image.protocol import ImageModel
    from refineloop.settings import RunSettings


_T = TypeVar("_T")

#: Alternatives asked for at each answer token, enough to find both "yes" and "no" among them.
LOGPROB_ALTERNATIVES = 5


class ModelCache:
    """Loaded image and chat models, keyed by how they were asked for."""

    def __init__(self) -> None:
        self._models: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.RLock()  # re-entrant: a derived model loads its base model under the lock

    def register_chat(self, name: str, model: BaseChatModel) -> None:
        """Make a chat model built in Python usable as `--eval-model NAME`."""
        self._models[("chat-registered", name)] = model

    def register_image(self, name: str, model: ImageModel) -> None:
        """Make an image model built in Python usable as `--image-model NAME`."""
        self._models[("image", name, "", "")] = model

    def image_model(self, settings: RunSettings) -> ImageModel:
        """The image model for these settings, loaded on first use."""
        loras = tuple(settings.lora)
        # A model registered in Python (tests, a remote handle) is found under its plain key when it has no LoRAs.
        key = ("image", settings.image_model, settings.device, settings.dtype, *loras)
        if not loras:
            key = ("image", settings.image_model, settings.device, settings.dtype)
        if settings.compile:
            key = (*key, "compiled")
        return self._get(key, lambda: _loaded(settings, loras))

    def chat_model(self, settings: RunSettings) -> BaseChatModel:
        """The critic chat model for these settings, loaded on first use."""
        registered: BaseChatModel | None = self._models.get(("chat-registered", settings.eval_model))
        if registered is not None:
            return registered
        key = _critic_key("chat", settings)
        return self._get(key, lambda: load_chat_model(settings.eval_model, settings))

    def judge_model(self, settings: RunSettings, temperature: float = 0.0) -> Any:
        """The critic set up as a judge (temperature 0, thinking off, JSON schema where the server takes
        one), built once: constructing a structured-output runnable per call costs more than the call."""
        from refineloop.backends.chat.invoke import judge_copy
        from refineloop.backends.chat.ollama import structured_judge
        from refineloop.backends.chat.openai_compatible import is_openai_model, structured_openai
        from refineloop.judges.verdicts import JudgeReply

        def build() -> Any:
            judge = judge_copy(self.chat_model(settings), temperature)
            if is_openai_model(judge):
                # json_schema where the server took one at the probe; plain text for the tolerant parser otherwise.
                return structured_openai(judge, JudgeReply) or judge
            return structured_judge(judge, JudgeReply) or judge

        return self._get((*_critic_key("judge", settings), temperature), build)

    def plain_judge(self, settings: RunSettings, temperature: float = 0.0, *, logprobs: bool = False) -> BaseChatModel:
        """The critic as a judge that answers in text (duels, checklists, the final pick): thinking off, at
        `temperature` (0: cold, like the scorer), and, with `logprobs`, asking for each answer token's log
        probabilities where the backend gives them (ChatOllama does; others ignore the fields)."""
        from refineloop.backends.chat.invoke import judge_copy, with_temperature

        def build() -> BaseChatModel:
            judge = judge_copy(self.chat_model(settings), temperature)
            if not logprobs:
                return judge
            return with_temperature(judge, temperature, logprobs=True, top_logprobs=LOGPROB_ALTERNATIVES)

        return self._get((*_critic_key("plain-judge", settings), round(temperature, 3), logprobs), build)

    def chat_at(self, settings: RunSettings, temperature: float) -> BaseChatModel:
        """The critic sampling at `temperature` (proposer, summarizer), one copy per temperature."""
        from refineloop.backends.chat.invoke import with_temperature

        key = (*_critic_key("chat-at", settings), round(temperature, 3))
        return self._get(key, lambda: with_temperature(self.chat_model(settings), temperature))

    def agent_model(self, settings: RunSettings, temperature: float | None = None) -> BaseChatModel:
        """The chat model of the agent roles (router, prompt writer): `agent_model`, else the critic's.

        Those roles read text only, so an Ollama agent model is loaded without the vision check (the natural
        router picks, such as qwen3 or llama3.1, cannot see); the critic's own model is shared, not reloaded.
        """
        from refineloop.backends.chat.invoke import with_temperature

        spec = settings.agent_model or settings.eval_model
        if spec == settings.eval_model or not spec.startswith(("ollama:", "openai:")):
            as_critic = dataclasses.replace(settings, eval_model=spec)
            return self.chat_model(as_critic) if temperature is None else self.chat_at(as_critic, temperature)
        key = ("agent", spec, *_reach(settings))
        model = self._get(key, lambda: load_chat_model(spec, settings, vision=False))
        if temperature is None:
            return model
        return self._get((*key, round(temperature, 3)), lambda: with_temperature(model, temperature))

    def _get(self, key: tuple[Any, ...], load: Callable[[], _T]) -> _T:
        with self._lock:
            if key in self._models:
                cached: _T = self._models[key]
                return cached
            model = load()
            self._models[key] = model
            return model


def _critic_key(role: str, settings: RunSettings) -> tuple[Any, ...]:
    """Cache key of the critic in one role. The demo critic's noise is seeded by the run, so one process
    running several runs (a batch) keeps one per seed; real critics take no seed and are shared."""
    seed = settings.seed if settings.eval_model == "demo" else None
    return (role, settings.eval_model, *_reach(settings), seed)


def _reach(settings: RunSettings) -> tuple[Any, ...]:
    """The settings that decide how a chat model is reached (a different value is a different client)."""
    return (
        settings.ollama_url,
        settings.critic_keep_alive,
        settings.openai_url,
        settings.openai_key_env,
        settings.openai_stream,
    )


#: The process-wide cache used when a run config brings none.
MODELS = ModelCache()


def models_for(config: RunnableConfig | None) -> ModelCache:
    """The cache a node should use: the one in the run config, else the process-wide one."""
    configurable = (config or {}).get("configurable") or {}
    cache = configurable.get("models")
    return cache if isinstance(cache, ModelCache) else MODELS


def _loaded(settings: RunSettings, loras: tuple[str, ...]) -> ImageModel:
    """The image model the settings name, compiled when they ask for it."""
    model = load_image_model(settings.image_model, settings.device, settings.dtype, loras)
    if settings.compile:
        from refineloop.backends.image.compile import compile_denoiser

        compile_denoiser(model)
    return model


def load_image_model(spec: str, device: str = "", dtype: str = "", loras: tuple[str, ...] = ()) -> ImageModel:
    """Load `sketch`, `hf:<hub id>` or a local diffusers folder (placed on `device` in `dtype` when given,
    with `loras` loaded into it)."""
    if spec == "sketch" or spec.startswith("sketch:"):
        if loras:
            raise ModelError("--lora needs a diffusers image model (hf:<hub id> or a local folder), not sketch")
        from refineloop.backends.demo.sketch import SketchImageModel

        return SketchImageModel(**_sketch_options(spec))
    if spec.startswith("hf:") or Path(spec).expanduser().is_dir():
        from refineloop.backends.image.diffusers import load_diffusers

        return load_diffusers(spec.removeprefix("hf:"), device=device or None, dtype=dtype or None, loras=loras)
    raise ModelError(f"unknown image model '{spec}': use sketch, hf:<hub id> or a local diffusers folder")


class SketchOptions(TypedDict, total=False):
    """The options of a `sketch:...` spec, as SketchImageModel takes them."""

    size: int
    delay: float


def _sketch_options(spec: str) -> SketchOptions:
    """`sketch:size=512,delay=0.5`: image size, and a pause per image that mimics a slow model."""
    options: SketchOptions = {}
    for part in filter(None, spec.partition(":")[2].split(",")):
        key, _, value = part.partition("=")
        if key not in ("size", "delay"):
            raise ModelError(f"unknown sketch option '{key}': use sketch:size=256,delay=0.5")
        try:
            if key == "size":
                options["size"] = int(value)
            else:
                options["delay"] = float(value)
        except ValueError:
            raise ModelError(f"sketch option {key} needs a number, got '{value}'") from None
    return options


def load_chat_model(spec: str, settings: RunSettings, *, vision: bool = True) -> BaseChatModel:
    """Load `demo`, `ollama:<model>` or `openai:<model>`, reached as `settings` say (checked for vision unless
    `vision` is False)."""
    if spec == "demo":
        from refineloop.backends.demo.critic import DemoCritic

        return DemoCritic(seed=settings.seed or 0)
    if spec.startswith("ollama:") and spec[7:]:
        from refineloop.backends.chat.ollama import load_ollama

        return load_ollama(
            spec[7:],
            base_url=reveal(settings.ollama_url) or None,
            require_vision=vision,
            keep_alive=settings.critic_keep_alive or None,
        )
    if spec.startswith("openai:") and spec[7:]:
        from refineloop.backends.chat.openai_compatible import load_openai

        model: BaseChatModel = load_openai(
            spec[7:],
            base_url=reveal(settings.openai_url),
            key_env=settings.openai_key_env,
            stream=settings.openai_stream,
            timeout=settings.critic_timeout,
            require_vision=vision,
        )
        return model
    raise ModelError(f"unknown eval model '{spec}': use demo, ollama:<model> (e.g. ollama:gemma3:4b) or openai:<model>")
