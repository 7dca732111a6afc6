"""Talking to any LangChain chat model: messages with an image, per-role temperature, traced calls."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refineloop.tools.trace import append_trace

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage


def with_temperature(model: BaseChatModel, temperature: float, **fields: Any) -> BaseChatModel:
    """A copy of `model` sampling at `temperature` (plus any other fields it has, such as `reasoning`).

    `model_copy` keeps every other option; `bind(temperature=...)` breaks ChatOllama and
    `bind(options=...)` would replace all of its options.
    """
    known = type(model).model_fields
    update = {k: v for k, v in {"temperature": temperature, **fields}.items() if k in known}
    return model.model_copy(update=update) if update else model


def judge_copy(model: BaseChatModel, temperature: float = 0.0) -> BaseChatModel:
    """The judge's model: thinking off, and temperature 0 so scores are as steady as the model allows
    (a small temperature only when several samples are averaged)."""
    return with_temperature(model, temperature, reasoning=False)


def build_messages(system: str, user: str, *image_paths: str | None) -> list[BaseMessage]:
    """A system message and one user message carrying the images, in order, inline as base64 PNG."""
    from langchain_core.messages import HumanMessage, SystemMessage

    content: list[str | dict[str, Any]] = [{"type": "text", "text": user}]
    for path in filter(None, image_paths):
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        content.append({"type": "image", "base64": data, "mime_type": "image/png"})
    return [SystemMessage(system), HumanMessage(content=content)]


def traced_invoke(
    runnable: Any,
    messages: list[BaseMessage],
    *,
    run_dir: str,
    role: str,
    iteration: int,
    image_path: str | list[str] | None,
    temperature: float | None,
) -> tuple[Any, float]:
    """Invoke a chat model (or a structured-output runnable) and log the call to trace.jsonl."""
    started = time.perf_counter()
    reply = runnable.invoke(messages)
    seconds = time.perf_counter() - started
    raw = reply.get("raw") if isinstance(reply, dict) else reply
    append_trace(
        run_dir,
        {
            "kind": "chat",
            "role": role,
            "iteration": iteration,
            "temperature": temperature,
            "sent": {"system": messages[0].content, "user": message_text(messages[-1]), "image": image_path},
            "received": getattr(raw, "content", str(raw)),
            "seconds": round(seconds, 4),
        },
    )
    return reply, seconds


def message_text(message: BaseMessage) -> str:
    """The text of a message, its text blocks joined by newlines (images left out)."""
    if isinstance(message.content, str):
        return message.content
    return "\n".join(b.get("text", "") for b in message.content if isinstance(b, dict))
