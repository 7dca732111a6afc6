"""Talking to any LangChain chat model: messages with an image, per-role temperature, traced and bounded calls.

Every critic call of every role (judge, pairwise, proposer, summarizer, the agents' writer) goes through
:func:`traced_invoke`, so that is where a misbehaving critic is bounded:

- **Time.** The call runs in a daemon worker thread (reused from call to call:
  refineloop.backends.chat.call_threads) while the node's thread waits for it, for at most `critic_timeout`
  seconds. Backends with a client timeout of their own also read the value from :data:`CALL_TIMEOUT` (the
  Ollama client applies it to its HTTP request), so the abandoned worker's socket is closed at about the same
  moment instead of lingering.
- **Transport failures** (connection refused, reset or dropped, a timeout, an HTTP 5xx: see
  :func:`is_transport_error`) are retried up to `critic_retries` times, waiting 0.5 s, 1 s, 2 s... (capped);
  each retry is a `"kind": "retry"` line in trace.jsonl. Anything else (an HTTP 4xx, a reply that does not
  parse) is not a transport problem and is raised at once or left to the caller, which for the judge means a
  retry with a format reminder.
- **Ctrl-C.** The first Ctrl-C asks LangGraph to drain (`RunControl.request_drain`), which normally lets the
  node in progress finish. A node blocked in a hung critic call would make the person wait out the timeout, so
  the waiting thread polls the run's drain flag (`Runtime.drain_requested`, reached through LangGraph's
  ambient config; no extra plumbing) and, once it is set, raises `GraphDrained` from inside the node. LangGraph
  writes nothing for a node that raises it (it bubbles up like an interrupt), so the node stays unfinished and
  re-runs from its top on resume, exactly as after a second Ctrl-C: the resumed run matches an uninterrupted
  one. The abandoned worker is a daemon and holds no lock or file; its late answer is dropped.
- **Text.** A reply's text is stripped of control characters and terminal escapes
  (:func:`refineloop.backends.chat.text_safety.clean_model_text`) before anyone reads it, the trace included.
"""

from __future__ import annotations

import base64
import contextvars
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from refineloop.backends.broken_replies import cut_off
from refineloop.backends.chat import critic_images
from refineloop.backends.chat.call_threads import CRITIC_CALLS
from refineloop.backends.chat.text_safety import clean_model_text
from refineloop.errors import ModelError, causes
from refineloop.files.trace import append_trace
from refineloop.progress_events import critic_call_done

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable
    from pydantic import BaseModel

    from refineloop.settings import RunSettings

DEFAULT_TIMEOUT = 120.0
"""The HTTP client's own timeout for a call made outside `bounded_invoke` (RunSettings.critic_timeout's default)."""
BACKOFF_START, BACKOFF_CAP = 0.5, 8.0
"""The first retry waits BACKOFF_START seconds, each next one twice as long, never more than BACKOFF_CAP."""
POLL_SECONDS = 0.1
"""How often a waiting call looks at the drain flag: the delay a Ctrl-C can add."""

CALL_TIMEOUT: contextvars.ContextVar[float | None] = contextvars.ContextVar("refineloop_call_timeout", default=None)
"""Seconds the critic call running in this context may take; set only inside the worker thread of a call."""

#: The metadata key of every critic call that says what it asks: judge, compare, checklist, checklist-write,
#: propose, summarize, writer, router.
CALL_KIND = "refineloop_call"


def call_kind(run_manager: Any) -> str:
    """What a call asks, as a chat model's `_generate` reads it from its run manager ("" for a call made outside
    refineloop's critic calls)."""
    metadata = getattr(run_manager, "metadata", None) or {}
    return str(metadata.get(CALL_KIND, ""))


class CriticTimeout(TimeoutError):
    """A critic call took longer than its timeout (a transport failure, so it is retried)."""


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
    return with_temperature(model, temperature, **({"reasoning": False} if _thinking_switch(model) else {}))


def _thinking_switch(model: BaseChatModel) -> bool:
    """Whether the model's `reasoning` field is an on/off switch (ChatOllama's). ChatOpenAI's is a dict of
    Responses-API options: a False there would be sent to a chat-completions server and refused."""
    import typing

    field = type(model).model_fields.get("reasoning")
    if field is None:
        return False
    return field.annotation is bool or bool in typing.get_args(field.annotation)


def build_messages(
    system: str, user: str, *image_paths: str | None, image_size: int | None = None
) -> list[BaseMessage]:
    """A system message and one user message carrying the images, in order, inline as base64: each encoded
    once per image at the critic's working size (`image_size`, the longest side; by default the run's
    `--judge-image-size`, see critic_images)."""
    from langchain_core.messages import HumanMessage, SystemMessage

    content: list[str | dict[str, Any]] = [{"type": "text", "text": user}]
    for path in filter(None, image_paths):
        data = base64.b64encode(critic_images.critic_bytes(path, image_size)).decode("ascii")
        content.append({"type": "image", "base64": data, "mime_type": critic_images.MIME})
    return [SystemMessage(system), HumanMessage(content=content)]


def image_bytes(messages: list[BaseMessage]) -> int:
    """How many image bytes the messages carry (decoded from their base64), for the trace."""
    total = 0
    for message in messages:
        blocks = message.content if isinstance(message.content, list) else []
        for block in blocks:
            if isinstance(block, dict) and block.get("type") == "image" and isinstance(block.get("base64"), str):
                total += len(block["base64"]) * 3 // 4 - block["base64"].count("=", -2)
    return total


def traced_invoke(
    runnable: Any,
    messages: list[BaseMessage],
    *,
    run_dir: str,
    role: str,
    iteration: int,
    image_path: str | list[str] | None,
    temperature: float | None,
    settings: RunSettings,
    kind: str = "",
) -> tuple[Any, float]:
    """Invoke a chat model (or a structured-output runnable) within the run's critic limits, log the call to
    trace.jsonl, and return its cleaned reply and the seconds the answered call took (see the module notes).

    `role` names the call in the trace (`final-pick#2`); `kind` says what is asked, whatever the phase (`judge`,
    `compare`, `checklist`; by default the role's own name), and rides in the call's metadata as `CALL_KIND`,
    where a chat model written in Python (a test fake, a custom backend) reads it instead of guessing."""
    reply, seconds, attempts = bounded_invoke(
        runnable, messages, run_dir=run_dir, role=role, iteration=iteration, settings=settings, kind=kind
    )
    raw = reply.get("raw") if isinstance(reply, dict) else reply
    append_trace(
        run_dir,
        {
            "kind": "chat",
            "role": role,
            "iteration": iteration,
            "temperature": temperature,
            "sent": {
                "system": messages[0].content,
                "user": message_text(messages[-1]),
                "image": image_path,
                "image_bytes": image_bytes(messages),
            },
            "received": received if (received := getattr(raw, "content", None)) is not None else str(raw),
            "seconds": round(seconds, 4),
            **({"attempts": attempts} if attempts > 1 else {}),
        },
    )
    return reply, seconds


def bounded_invoke(
    runnable: Any,
    messages: list[BaseMessage],
    *,
    run_dir: str,
    role: str,
    iteration: int,
    settings: RunSettings,
    kind: str = "",
) -> tuple[Any, float, int]:
    """`runnable.invoke(messages)` within `critic_timeout`, transport errors retried `critic_retries` times with
    backoff (each retry traced), abandoned on a drain; returns the cleaned reply, the seconds the answered call
    took and how many tries it needed. Callers that trace the call their own way (the router) use it directly."""
    timeout, retries = settings.critic_timeout, settings.critic_retries
    drain = _drain_probe()
    where = {"role": role, "iteration": iteration}
    attempt = 0
    while True:
        attempt += 1
        started = time.perf_counter()
        try:
            reply = _call_within(runnable, messages, timeout, drain, kind or role.split("#")[0])
            break
        except Exception as exc:
            if _is_drain(exc):
                append_trace(run_dir, {"kind": "aborted", **where, "reason": f"drain requested ({exc})"})
                raise
            error = _describe(exc)
            if attempt > retries or not is_transport_error(exc):
                append_trace(run_dir, {"kind": "chat-error", **where, "attempts": attempt, "error": error})
                if isinstance(exc, CriticTimeout):
                    raise ModelError(
                        f"the critic did not answer the {role.split('#')[0]} call within {timeout:g} s "
                        f"({attempt} tries): give it more time with --critic-timeout, or check the model server"
                    ) from exc
                raise
            wait = min(BACKOFF_CAP, BACKOFF_START * 2 ** (attempt - 1))
            append_trace(
                run_dir,
                {"kind": "retry", **where, "attempt": attempt, "retries": retries, "error": error, "wait": wait},
            )
            _pause(wait, drain)
    critic_call_done()
    return clean_reply(reply), time.perf_counter() - started, attempt


def _call_within(
    runnable: Any, messages: list[BaseMessage], timeout: float, drain: Callable[[], str | None], kind: str
) -> Any:
    """`runnable.invoke(messages)` in a worker thread; CriticTimeout past `timeout`, GraphDrained on a drain."""
    _raise_if_drained(drain)
    outcome: dict[str, Any] = {}
    done = threading.Event()
    # The worker runs in a copy of this context, so LangChain's callbacks and config still see the caller's.
    context = contextvars.copy_context()

    def work() -> None:
        CALL_TIMEOUT.set(timeout)
        try:
            outcome["reply"] = runnable.invoke(messages, config={"metadata": {CALL_KIND: kind}})
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome["error"] = exc
        finally:
            done.set()

    CRITIC_CALLS.run(lambda: context.run(work))
    deadline = time.monotonic() + timeout
    while not done.wait(min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))):
        _raise_if_drained(drain)
        if time.monotonic() >= deadline:
            raise CriticTimeout(f"no answer within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["reply"]


def _pause(seconds: float, drain: Callable[[], str | None]) -> None:
    """Sleep before a retry, but give way to a drain at once."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        _raise_if_drained(drain)
        time.sleep(min(POLL_SECONDS, left))
    _raise_if_drained(drain)


def _drain_probe() -> Callable[[], str | None]:
    """A function telling whether this graph run was asked to drain (its reason), or None; outside a graph run
    (a unit test calling a node helper directly) nothing can ask, so it always says None."""
    try:
        from langgraph.runtime import get_runtime

        runtime = get_runtime()
    except (ImportError, RuntimeError, KeyError):
        runtime = None
    if runtime is None:
        return lambda: None
    return lambda: runtime.drain_reason


def _raise_if_drained(drain: Callable[[], str | None]) -> None:
    reason = drain()
    if reason is not None:
        from langgraph.errors import GraphDrained

        raise GraphDrained(reason)


def _is_drain(exc: BaseException) -> bool:
    from langgraph.errors import GraphDrained

    return isinstance(exc, GraphDrained)


def is_transport_error(exc: BaseException) -> bool:
    """Whether a failed call failed in transport, so that the same call may well succeed when tried again:
    the connection refused, reset or dropped mid-reply, a timeout, an HTTP 5xx from the server, or an HTTP 429
    (rate limited or busy), from httpx (Ollama) or the openai client (OpenAI-compatible servers) alike.

    A reply cut off part-way (mid-line, mid-JSON, or before a stream's closing line) is one too. Any other HTTP
    4xx (a missing model, a refused option), an error the model itself reported, and every reply that arrived
    whole but does not parse are not: trying again would only repeat them.
    """
    try:
        import httpx

        transport: tuple[type[BaseException], ...] = (
            httpx.TimeoutException,
            httpx.NetworkError,
            httpx.RemoteProtocolError,
        )
    except ImportError:
        transport = ()
    if "openai" in sys.modules:  # an OpenAI-compatible critic: its client raises its own connection errors
        import openai

        # APITimeoutError is an APIConnectionError: refused, reset, dropped or timed out.
        transport = (*transport, openai.APIConnectionError)
    if cut_off(exc):  # mid-line or mid-JSON, the same as a stream cut between two lines: the transfer broke
        return True
    for current in causes(exc):
        if isinstance(current, (ConnectionError, TimeoutError, *transport)):
            return True
        status = _status_of(current)
        # 429: a rate limit or a busy server (OpenAI-compatible APIs say so), which the backoff waits out.
        if 500 <= status <= 599 or status == 429:
            return True
        # langchain-ollama's words for a stream that ended before its last line: the server went away.
        if isinstance(current, ValueError) and "No data received from Ollama" in str(current):
            return True
    return False


def _status_of(exc: BaseException) -> int:
    """The HTTP status an exception carries (ollama.ResponseError, openai's and httpx's status errors), or 0."""
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def _describe(exc: BaseException) -> str:
    """One clean line naming the error, for the trace."""
    text = " ".join(clean_model_text(str(exc)).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def clean_reply(reply: Any) -> Any:
    """The reply with control characters and terminal escapes removed from all of its text: a message's
    content, a structured-output result ({"raw", "parsed", ...}) or a parsed pydantic model's string fields."""
    from langchain_core.messages import BaseMessage
    from pydantic import BaseModel

    if isinstance(reply, str):
        return clean_model_text(reply)
    if isinstance(reply, dict):
        return {k: clean_reply(v) if k in ("raw", "parsed") else v for k, v in reply.items()}
    if isinstance(reply, BaseMessage):
        content = reply.content
        cleaned = _clean_content(content) if isinstance(content, str) else [_clean_block(b) for b in content]
        return reply.model_copy(update={"content": cleaned})
    if isinstance(reply, BaseModel):
        texts = {k: clean_model_text(v) for k, v in vars(reply).items() if isinstance(v, str)}
        return reply.model_copy(update=texts) if texts else reply
    return reply


def _clean_block(block: Any) -> Any:
    if isinstance(block, str):
        return _clean_content(block)
    if isinstance(block, dict) and isinstance(block.get("text"), str):
        return {**block, "text": _clean_content(block["text"])}
    return block


def _clean_content(text: str) -> str:
    """Cleaned text; a JSON reply (structured output) whose strings hold escaped control characters
    (`"\\u001b[31m"`) is written again without them, so not even their spelled-out form reaches the trace."""
    text = clean_model_text(text)
    if "\\u" not in text:
        return text
    try:
        data = json.loads(text)
    except ValueError:
        return text
    cleaned = _clean_json(data)
    return text if cleaned == data else json.dumps(cleaned, ensure_ascii=False)


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean_model_text(value)
    if isinstance(value, list):
        return [_clean_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _clean_json(item) for key, item in value.items()}
    return value


def message_text(message: BaseMessage) -> str:
    """The text of a message, its text blocks joined by newlines (images left out), without control characters."""
    if isinstance(message.content, str):
        return clean_model_text(message.content)
    return clean_model_text("\n".join(b.get("text", "") for b in message.content if isinstance(b, dict)))


def parsed_structured(model: Any, schema_cls: type[BaseModel], **bound: Any) -> Runnable[Any, Any]:
    """`model` bound with a backend's schema request (`bound`: Ollama's `format`, OpenAI's `response_format`),
    returning {"raw", "parsed", "parsing_error"} and never raising on a reply that does not fit (the tolerant text
    parser reads it instead). Built by hand rather than with LangChain's `with_structured_output`, whose thread
    pool the interpreter joins at exit, so a call abandoned on Ctrl-C would hold the process until its timeout."""
    from langchain_core.output_parsers import PydanticOutputParser
    from langchain_core.runnables import RunnableLambda

    parser: PydanticOutputParser[BaseModel] = PydanticOutputParser(pydantic_object=schema_cls)
    schema_bound = model.bind(
        **bound, ls_structured_output_format={"kwargs": {"method": "json_schema"}, "schema": schema_cls}
    )

    def with_parsed(message: Any) -> dict[str, Any]:
        try:
            return {"raw": message, "parsed": parser.invoke(message), "parsing_error": None}
        except Exception as exc:  # any reply that does not fit is kept for the text parser, never raised
            return {"raw": message, "parsed": None, "parsing_error": exc}

    chain: Runnable[Any, Any] = schema_bound | RunnableLambda(with_parsed)
    return chain
