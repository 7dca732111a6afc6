"""The one model cache: every node, iteration and resume in a process reuses the same loaded models.

Nodes never load models themselves; they ask the cache handed to them through the run config
(`configurable.models`), falling back to the process-wide `MODELS`. A distributed runner can inject a
cache whose image model is a remote handle without touching node code.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refineloop.errors import ModelError

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.runnables import RunnableConfig

    from refineloop.settings import RunSettings
    from refineloop.tools.image_models import ImageModel


class ModelCache:
    """Loaded image and chat models, keyed by how they were asked for."""

    def __init__(self) -> None:
        self._models: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.RLock()  # re-entrant: a derived model loads its base model under the lock

    def register_chat(self, name: str, model: BaseChatModel) -> None:
        """Make a chat model built in Python usable as `--eval-model NAME`."""
        self._models[("chat", name, "", None)] = model

    def register_image(self, name: str, model: ImageModel) -> None:
        """Make an image model built in Python usable as `--image-model NAME`."""
        self._models[("image", name, "", "")] = model

    def image_model(self, settings: RunSettings) -> ImageModel:
        """The image model for these settings, loaded on first use."""
        key = ("image", settings.image_model, settings.device, settings.dtype)
        return self._get(key, lambda: load_image_model(settings.image_model, settings.device, settings.dtype))

    def chat_model(self, settings: RunSettings) -> BaseChatModel:
        """The critic chat model for these settings, loaded on first use."""
        key = _critic_key("chat", settings)
        return self._get(key, lambda: load_chat_model(settings.eval_model, settings.ollama_url, settings.seed))

    def judge_model(self, settings: RunSettings, temperature: float = 0.0) -> Any:
        """The critic set up as a judge (temperature 0, thinking off, JSON schema where the server takes
        one), built once: constructing a structured-output runnable per call costs more than the call."""
        from refineloop.tools.chat import judge_copy
        from refineloop.tools.ollama import structured_judge
        from refineloop.verdicts import JudgeReply

        def build() -> Any:
            judge = judge_copy(self.chat_model(settings), temperature)
            return structured_judge(judge, JudgeReply) or judge

        return self._get((*_critic_key("judge", settings), temperature), build)

    def chat_at(self, settings: RunSettings, temperature: float) -> BaseChatModel:
        """The critic sampling at `temperature` (proposer, summarizer), one copy per temperature."""
        from refineloop.tools.chat import with_temperature

        key = (*_critic_key("chat-at", settings), round(temperature, 3))
        return self._get(key, lambda: with_temperature(self.chat_model(settings), temperature))

    def agent_model(self, settings: RunSettings, temperature: float | None = None) -> BaseChatModel:
        """The chat model of the agent roles (router, prompt writer): `agent_model`, else the critic's.

        Those roles read text only, so an Ollama agent model is loaded without the vision check (the natural
        router picks, such as qwen3 or llama3.1, cannot see); the critic's own model is shared, not reloaded.
        """
        from refineloop.tools.chat import with_temperature

        spec = settings.agent_model or settings.eval_model
        if spec == settings.eval_model or not spec.startswith("ollama:"):
            as_critic = dataclasses.replace(settings, eval_model=spec)
            return self.chat_model(as_critic) if temperature is None else self.chat_at(as_critic, temperature)
        key = ("agent", spec, settings.ollama_url)
        model = self._get(key, lambda: load_chat_model(spec, settings.ollama_url, settings.seed, vision=False))
        if temperature is None:
            return model
        return self._get((*key, round(temperature, 3)), lambda: with_temperature(model, temperature))

    def _get(self, key: tuple[Any, ...], load: Any) -> Any:
        with self._lock:
            if key not in self._models:
                self._models[key] = load()
            return self._models[key]


def _critic_key(role: str, settings: RunSettings) -> tuple[Any, ...]:
    """Cache key of the critic in one role. The demo critic's noise is seeded by the run, so one process
    running several runs (a batch) keeps one per seed; real critics take no seed and are shared."""
    seed = settings.seed if settings.eval_model == "demo" else None
    return (role, settings.eval_model, settings.ollama_url, seed)


#: The process-wide cache used when a run config brings none.
MODELS = ModelCache()


def models_for(config: RunnableConfig | None) -> ModelCache:
    """The cache a node should use: the one in the run config, else the process-wide one."""
    configurable = (config or {}).get("configurable") or {}
    cache = configurable.get("models")
    return cache if isinstance(cache, ModelCache) else MODELS


def load_image_model(spec: str, device: str = "", dtype: str = "") -> ImageModel:
    """Load `sketch`, `hf:<hub id>` or a local diffusers folder (placed on `device` in `dtype` when given)."""
    if spec == "sketch" or spec.startswith("sketch:"):
        from refineloop.tools.sketch import SketchImageModel

        return SketchImageModel(**_sketch_options(spec))
    if spec.startswith("hf:") or Path(spec).expanduser().is_dir():
        from refineloop.tools.diffusers_model import load_diffusers

        return load_diffusers(spec.removeprefix("hf:"), device=device or None, dtype=dtype or None)
    raise ModelError(f"unknown image model '{spec}': use sketch, hf:<hub id> or a local diffusers folder")


def _sketch_options(spec: str) -> dict[str, float]:
    """`sketch:size=512,delay=0.5`: image size, and a pause per image that mimics a slow model."""
    options: dict[str, float] = {}
    for part in filter(None, spec.partition(":")[2].split(",")):
        key, _, value = part.partition("=")
        if key not in ("size", "delay"):
            raise ModelError(f"unknown sketch option '{key}': use sketch:size=256,delay=0.5")
        try:
            options[key] = int(value) if key == "size" else float(value)
        except ValueError:
            raise ModelError(f"sketch option {key} needs a number, got '{value}'") from None
    return options


def load_chat_model(spec: str, ollama_url: str, seed: int | None, *, vision: bool = True) -> BaseChatModel:
    """Load `demo` or `ollama:<model>` (checked for vision unless `vision` is False)."""
    if spec == "demo":
        from refineloop.tools.demo_critic import DemoCritic

        return DemoCritic(seed=seed or 0)
    if spec.startswith("ollama:") and spec[7:]:
        from refineloop.tools.ollama import load_ollama

        return load_ollama(spec[7:], base_url=ollama_url or None, require_vision=vision)
    raise ModelError(f"unknown eval model '{spec}': use demo or ollama:<model> (e.g. ollama:gemma3:4b)")
