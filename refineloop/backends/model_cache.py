"""The one model cache: every node, iteration and resume in a process reuses the same loaded models.

Nodes never load models themselves; they ask the cache handed to them through the run config
(`configurable.models`), falling back to the process-wide `MODELS`. A distributed runner can inject a
cache whose image model is a remote handle without touching node code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from refineloop.backends.builtin import BACKENDS
from refineloop.backends.demo import is_demo
from refineloop.backends.table import BackendTable, registered

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
        self.backends = BackendTable(parent=BACKENDS)
        """This cache's backend table: the process's, plus the models registered on this cache."""

    def register_chat(self, name: str, model: BaseChatModel) -> None:
        """Make a chat model built in Python usable as `--eval-model NAME` (and agent or audit model)."""
        self.backends.register(registered(name, "chat", model))

    def register_image(self, name: str, model: ImageModel) -> None:
        """Make an image model built in Python usable as `--image-model NAME`."""
        self.backends.register(registered(name, "image", model))

    def image_model(self, settings: RunSettings) -> ImageModel:
        """The image model for these settings, loaded on first use."""
        key = ("image", settings.image_model, settings.device, settings.dtype, *settings.lora, *_served(self, settings))
        if settings.compile:
            key = (*key, "compiled")
        return self._get(key, lambda: self._load_image(settings))

    def chat_model(self, settings: RunSettings) -> BaseChatModel:
        """The critic chat model for these settings, loaded on first use."""
        key = _critic_key("chat", settings.eval_model, settings)
        return self._get(key, lambda: self.backends.load_chat(settings.eval_model, settings))

    def judge_model(self, settings: RunSettings, temperature: float = 0.0) -> Any:
        """The critic set up as a judge (temperature 0, thinking off, JSON schema where the server takes
        one), built once: constructing a structured-output runnable per call costs more than the call."""
        from refineloop.backends.chat.invoke import judge_copy
        from refineloop.backends.chat.ollama import structured_judge
        from refineloop.backends.chat.openai_compatible import is_openai_model, structured_openai
        from refineloop.backends.chat.replies import JudgeReply

        def build() -> Any:
            judge = judge_copy(self.chat_model(settings), temperature)
            if is_openai_model(judge):
                # json_schema where the server took one at the probe; plain text for the tolerant parser otherwise.
                return structured_openai(judge, JudgeReply) or judge
            return structured_judge(judge, JudgeReply) or judge

        return self._get((*_critic_key("judge", settings.eval_model, settings), temperature), build)

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

        return self._get(
            (*_critic_key("plain-judge", settings.eval_model, settings), round(temperature, 3), logprobs), build
        )

    def chat_at(self, settings: RunSettings, temperature: float) -> BaseChatModel:
        """The critic sampling at `temperature` (proposer, summarizer), one copy per temperature."""
        from refineloop.backends.chat.invoke import with_temperature

        key = (*_critic_key("chat-at", settings.eval_model, settings), round(temperature, 3))
        return self._get(key, lambda: with_temperature(self.chat_model(settings), temperature))

    def agent_model(self, settings: RunSettings, temperature: float | None = None) -> BaseChatModel:
        """The chat model of the agent roles (router, prompt writer): `agent_model`, else the critic's.

        Those roles read text only, so an Ollama agent model is loaded without the vision check (the natural
        router picks, such as qwen3 or llama3.1, cannot see); the critic's own model is shared, not reloaded.
        """
        from refineloop.backends.chat.invoke import with_temperature

        spec = settings.agent_model or settings.eval_model
        if spec == settings.eval_model:
            return self.chat_model(settings) if temperature is None else self.chat_at(settings, temperature)
        key = _critic_key("agent", spec, settings)
        model = self._get(key, lambda: self.backends.load_chat(spec, settings, vision=False))
        if temperature is None:
            return model
        return self._get((*key, round(temperature, 3)), lambda: with_temperature(model, temperature))

    def _load_image(self, settings: RunSettings) -> ImageModel:
        """Load through the table, then compile the denoiser when the settings ask for it."""
        model = self.backends.load_image(settings)
        if settings.compile:
            from refineloop.backends.image.compile import compile_denoiser

            compile_denoiser(model)
        return model

    def _get(self, key: tuple[Any, ...], load: Callable[[], _T]) -> _T:
        with self._lock:
            if key in self._models:
                cached: _T = self._models[key]
                return cached
            model = load()
            self._models[key] = model
            return model


def _served(cache: ModelCache, settings: RunSettings) -> tuple[Any, ...]:
    """The settings that reach the image model's server (its backend's options): another URL, another model."""
    entry = cache.backends.find("image", settings.image_model)
    return tuple(getattr(settings, name) for name in entry.options) if entry else ()


def _critic_key(role: str, spec: str, settings: RunSettings) -> tuple[Any, ...]:
    """Cache key of a chat model in one role. The demo critic's noise is seeded by the run and counts the looks
    each image had, so one process running several runs (a batch, tests, the Python API) keeps one per run: a
    run's answers then never depend on what ran before it. Real critics take no seed and are shared."""
    run = (settings.seed, settings.output_dir) if is_demo(spec) else (None, "")
    return (role, spec, *_reach(settings), *run)


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


def load_image_model(spec: str, device: str = "", dtype: str = "", loras: tuple[str, ...] = ()) -> ImageModel:
    """Load the image model `spec` names through the process's backend table, outside any cache (a server
    process that holds one model, such as the Ray generator)."""
    from refineloop.settings import RunSettings

    settings = RunSettings(image_model=spec, device=device, dtype=dtype, lora=list(loras))
    return BACKENDS.load_image(settings)
