"""Chat models served by Ollama: load and check them, make role copies, explain failures in one line.

The heavy imports (langchain_ollama, ollama, httpx) happen inside the functions that need them, so importing
this module costs nothing for the CLI's --help.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from refineloop.backends.broken_replies import CutStream, broken_reply_error
from refineloop.backends.chat.invoke import CALL_TIMEOUT, DEFAULT_TIMEOUT, parsed_structured
from refineloop.backends.chat.text_safety import clean_model_text
from refineloop.backends.table import Backend, prefixed
from refineloop.errors import ModelError, SettingsError, causes
from refineloop.redaction import reveal

if TYPE_CHECKING:
    import ssl

    import httpx
    from langchain_core.runnables import Runnable
    from langchain_ollama import ChatOllama
    from pydantic import BaseModel

    from refineloop.settings import RunSettings

DEFAULT_URL = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434
CONNECT_TIMEOUT = 3.0
"""Seconds to wait for a TCP connection: a live local server answers at once, so fail fast otherwise."""
PROBE_TIMEOUT = 30.0
"""Seconds to wait for /api/tags and /api/show answers."""
VISION_MODELS_HINT = "gemma3:4b, qwen2.5vl or llava"

M = TypeVar("M")


@dataclass(frozen=True)
class OllamaInfo:
    """What the server told us about one model."""

    base_url: str
    model: str
    capabilities: tuple[str, ...] | None
    """As /api/show lists them (completion, vision, tools, thinking, ...); None when the server omits them."""

    @property
    def vision(self) -> bool | None:
        """Whether the model takes images; None when unknown."""
        return None if self.capabilities is None else "vision" in self.capabilities


def settings_url(settings: RunSettings) -> str:
    """The Ollama server a run's settings name: --ollama-url (its password revealed), else $OLLAMA_HOST, else the
    local default."""
    return resolve_base_url(reveal(settings.ollama_url) or None)


def resolve_base_url(base_url: str | None = None) -> str:
    """The Ollama URL to use: the argument, else $OLLAMA_HOST, else the local default.

    Like the ollama client, a bare `host` or `host:port` means http, and a missing port means 11434.
    """
    raw = (base_url or os.environ.get("OLLAMA_HOST") or "").strip()
    if not raw:
        return DEFAULT_URL
    has_scheme = "://" in raw
    parts = urlsplit(raw if has_scheme else f"http://{raw}")
    host = parts.hostname or "127.0.0.1"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as exc:
        raise ModelError(f"the Ollama URL {raw!r} has a bad port: pass one like http://127.0.0.1:11434") from exc
    if port is None and not has_scheme:
        port = DEFAULT_PORT
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def _unreachable(url: str) -> ModelError:
    return ModelError(
        f"cannot reach Ollama at {url}: start it with `ollama serve` (or pass --ollama-url / set OLLAMA_HOST)"
    )


def _raise_if_broken(exc: Exception, url: str, asked: str, fix: str) -> None:
    """Raise the one-line ModelError when `exc` says Ollama's answer to `asked` could not be read."""
    if not isinstance(exc, ModelError) and (error := broken_reply_error(exc, "Ollama", url, asked, fix)):
        raise error from None


def _one_line(text: object, limit: int = 200) -> str:
    """Squash server text onto one short line, without control characters (it is printed to the terminal)."""
    line = " ".join(clean_model_text(str(text)).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _matches(wanted: str, installed: str) -> bool:
    """Whether an installed tag is the model asked for; Ollama reads an untagged name as ':latest'."""
    if wanted == installed:
        return True
    return ":" not in wanted.rsplit("/", 1)[-1] and installed == f"{wanted}:latest"


def client_options(timeout: float) -> dict[str, Any]:
    """What every Ollama client refineloop makes is built with (`ollama.Client(host, **options)`, or a ChatOllama's
    client_kwargs): its timeout, connecting given up after CONNECT_TIMEOUT, and the process's one TLS context."""
    import httpx

    return {"timeout": httpx.Timeout(timeout, connect=CONNECT_TIMEOUT), "verify": shared_tls()}


@functools.cache
def shared_tls() -> ssl.SSLContext:
    """One TLS context for all of them. httpx otherwise builds one per client, reading the system's certificates
    each time: about 40 ms on the 2-core machine, for the four clients (the probe, the warm-up, ChatOllama's two)
    a run made before its first image. Built as httpx builds its default (certifi's bundle, or SSL_CERT_FILE /
    SSL_CERT_DIR); a context verifies any number of connections, from any thread."""
    import httpx

    return httpx.create_ssl_context()


def probe_ollama(
    model: str,
    *,
    base_url: str | None = None,
    require_vision: bool = True,
    timeout: float = PROBE_TIMEOUT,
) -> OllamaInfo:
    """Check that Ollama answers, has `model`, and (with require_vision) that the model takes images.

    Raises ModelError with a one-line fix for each failure. When the server does not report capabilities
    (older Ollama), the vision check warns and goes on.
    """
    import httpx
    import ollama

    url = resolve_base_url(base_url)
    client = ollama.Client(host=url, **client_options(timeout))
    asked = "GET /api/tags"
    try:
        try:
            tags = client.list()
        except (ConnectionError, httpx.TransportError) as exc:
            raise _unreachable(url) from exc
        except ollama.ResponseError as exc:
            # Something answered, but not like Ollama (a proxy, another service on the port).
            raise ModelError(
                f"{url} answered /api/tags with HTTP {exc.status_code}, so it is not an Ollama server: "
                "check --ollama-url / OLLAMA_HOST"
            ) from exc

        names = [m.model for m in tags.models if m.model]
        if not any(_matches(model, name) for name in names):
            have = f" (it has: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''})" if names else ""
            raise ModelError(f"Ollama at {url} has no model '{model}': run `ollama pull {model}`{have}")

        asked = "POST /api/show"
        try:
            shown = client.show(model)
        except (ConnectionError, httpx.TransportError) as exc:
            raise _unreachable(url) from exc
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise ModelError(f"Ollama at {url} has no model '{model}': run `ollama pull {model}`") from exc
            raise ModelError(
                f"Ollama at {url} could not describe '{model}' ({_one_line(exc.error)}): check `ollama show {model}`"
            ) from exc
    except Exception as exc:
        _raise_if_broken(exc, url, asked, "check --ollama-url / OLLAMA_HOST points at Ollama itself, not a proxy")
        raise
    finally:
        client.close()  # type: ignore[no-untyped-call]

    caps = tuple(shown.capabilities) if shown.capabilities else None
    info = OllamaInfo(base_url=url, model=model, capabilities=caps)
    if require_vision:
        if info.vision is None:
            # Older servers do not list capabilities; a text-only model then fails on the first image.
            warnings.warn(f"could not confirm that '{model}' takes images; going on", UserWarning, stacklevel=2)
        elif not info.vision:
            raise ModelError(
                f"'{model}' cannot see images (its capabilities: {', '.join(caps or ())}); "
                f"pull a vision model such as {VISION_MODELS_HINT}"
            )
    return info


def load_ollama(
    model: str,
    *,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    require_vision: bool = True,
    keep_alive: str | None = None,
) -> ChatOllama:
    """A checked ChatOllama at temperature 0 (see probe_ollama for the checks).

    keep_alive (Ollama's own: `10m`, `1h`, `-1` for ever, `0` to unload after each answer) travels with every
    request, so the critic stays loaded, or leaves the GPU, as the user chose; None keeps the server's default.

    timeout bounds each chat request in seconds when the call sets no limit of its own; a call made through
    `refineloop.backends.chat.invoke.traced_invoke` applies the run's `critic_timeout` instead (see
    :func:`_apply_call_timeout`). Connecting gives up after a few seconds so a dead server is reported at once.
    The probe's findings ride along in `model.metadata["ollama"]` (read them with :func:`ollama_capabilities`).
    """
    info = probe_ollama(model, base_url=base_url, require_vision=require_vision, timeout=min(timeout, PROBE_TIMEOUT))
    return ollama_critic_class()(
        model=model,
        base_url=info.base_url,
        temperature=0.0,
        client_kwargs=client_options(timeout),
        # Only the sync client: an async httpx client would need async hooks, and the loop calls invoke().
        sync_client_kwargs={"event_hooks": {"request": [_apply_call_timeout]}},
        metadata={"ollama": {"base_url": info.base_url, "capabilities": info.capabilities}},
        keep_alive=keep_alive_value(keep_alive),
    )


def _critic_class() -> type[ChatOllama]:
    """ChatOllama that refuses a stream ending without its `done` line (built on first use: the import is slow)."""
    from langchain_ollama import ChatOllama

    class OllamaCritic(ChatOllama):
        """ChatOllama whose streamed answer must end with Ollama's `done` line.

        LangChain's client joins whatever lines arrived, so a connection cut between two lines would otherwise
        pass for a short answer and be judged as one."""

        def _iterate_over_stream(self, *args: Any, **kwargs: Any) -> Any:
            done = False
            for chunk in super()._iterate_over_stream(*args, **kwargs):
                done = done or bool((chunk.generation_info or {}).get("done"))
                yield chunk
            if not done:
                raise CutStream("Ollama's stream ended before its `done` line")

    return OllamaCritic


_CRITIC_CLASS: type[ChatOllama] | None = None


def ollama_critic_class() -> type[ChatOllama]:
    """The one OllamaCritic class of this process."""
    global _CRITIC_CLASS
    if _CRITIC_CLASS is None:
        _CRITIC_CLASS = _critic_class()
    return _CRITIC_CLASS


def keep_alive_value(keep_alive: str | None) -> int | str | None:
    """Ollama's keep_alive as its API reads it: a bare number is seconds (an int), anything else a duration."""
    if not keep_alive:
        return None
    text = keep_alive.strip()
    return int(text) if text.lstrip("-").isdigit() else text


@dataclass(frozen=True)
class Resident:
    """A model Ollama holds in memory, as /api/ps reports it."""

    model: str
    size: int
    """Bytes the loaded model takes in all (weights, context, vision projector)."""
    size_vram: int
    """Bytes of that in GPU memory (less than size when Ollama split it with the CPU; 0 on a CPU-only host)."""
    expires_at: str
    """When Ollama will unload it (ISO time), or "" when it did not say."""

    def line(self) -> str:
        """How much the critic holds, for the placement line."""
        gb = 1e9
        if self.size_vram and self.size_vram >= self.size:
            where = f"{self.size_vram / gb:.1f} GB on the GPU"
        elif self.size_vram:
            where = f"{self.size / gb:.1f} GB, {self.size_vram / gb:.1f} GB of it on the GPU"
        else:
            where = f"{self.size / gb:.1f} GB, none on a GPU"
        return f"holds {where}"


def load_resident(
    model: str, *, base_url: str | None = None, keep_alive: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Resident | None:
    """Load `model` into Ollama now (an empty chat request, with keep_alive when given) and say what it holds.

    Called before the image model is placed, so that placement measures the GPU memory the critic really leaves
    free. None when the server lists no such model in /api/ps (a keep_alive of 0 unloads it at once). Failures
    are one-line ModelErrors: the critic was checked just before, so one here means the server fell over.
    """
    import httpx
    import ollama

    url = resolve_base_url(base_url)
    client = ollama.Client(host=url, **client_options(timeout))
    try:
        client.chat(model=model, messages=[], keep_alive=keep_alive_value(keep_alive))
        running = client.ps()
    except (ConnectionError, httpx.TransportError) as exc:
        raise _unreachable(url) from exc
    except ollama.ResponseError as exc:
        raise _explain_response_error(exc, url, model) from exc
    except Exception as exc:
        fix = "check its log and any proxy in between, then run again"
        _raise_if_broken(exc, url, f"the warm-up of '{model}'", fix)
        raise
    finally:
        client.close()  # type: ignore[no-untyped-call]
    for entry in running.models:
        if _matches(model, entry.model or entry.name or ""):
            expires = entry.expires_at.isoformat() if entry.expires_at else ""
            return Resident(model, int(entry.size or 0), int(entry.size_vram or 0), expires)
    return None


def _apply_call_timeout(request: httpx.Request) -> None:
    """Give this request the calling critic call's own timeout (`CALL_TIMEOUT`), when it has one.

    The model is loaded once per process and shared by runs and roles, so the run's `critic_timeout` cannot be
    baked into its client; httpx reads a request's timeouts from its extensions, which a request hook may set.
    """
    import httpx

    seconds = CALL_TIMEOUT.get()
    if seconds is not None:
        request.extensions["timeout"] = httpx.Timeout(seconds, connect=min(CONNECT_TIMEOUT, seconds)).as_dict()


def ollama_capabilities(model: Any) -> tuple[str, ...] | None:
    """Capabilities recorded by load_ollama on this model (or a copy of it); None when unknown."""
    meta = getattr(model, "metadata", None) or {}
    caps = (meta.get("ollama") or {}).get("capabilities")
    return tuple(caps) if caps is not None else None


def _unwrap(model: Any) -> Any:
    """The chat model under bind()/with_config() wrappers."""
    while hasattr(model, "bound"):
        model = model.bound
    return model


def supports_json_schema(model: Any) -> bool:
    """Whether the model can be held to a JSON schema at decoding time (Ollama's `format`)."""
    inner = _unwrap(model)
    if "langchain_ollama" not in sys.modules:
        return False  # no ChatOllama can exist yet, and importing the package just to say so costs 0.2 s
    from langchain_ollama import ChatOllama

    return isinstance(inner, ChatOllama)


def structured_judge(model: Any, schema_cls: type[BaseModel]) -> Runnable[Any, Any] | None:
    """The model answering in `schema_cls`, returning {"raw", "parsed", "parsing_error"} and never raising
    on a bad reply; None when the model has no structured output (parse its text instead).

    For ChatOllama, method="json_schema" sends the schema in `format`, so decoding is constrained; the other
    methods are "json_mode" (format="json", no schema) and "function_calling" (a forced tool call, which
    needs a tools-capable model).
    """
    if supports_json_schema(model):
        return _schema_bound(model, schema_cls)
    try:
        structured: Runnable[Any, Any] = model.with_structured_output(schema_cls, include_raw=True)
        return structured
    except (NotImplementedError, AttributeError):
        return None


def _schema_bound(model: Any, schema_cls: type[BaseModel]) -> Runnable[Any, Any]:
    """What `with_structured_output(schema_cls, method="json_schema", include_raw=True)` sends and returns, with
    the model called in the caller's own thread.

    LangChain's version calls the model inside a RunnableParallel, that is in its thread pool, and the interpreter
    joins that pool at exit: a judge call abandoned on Ctrl-C (see `refineloop.backends.chat.invoke`) would then
    hold the process until the call's timeout. Here the call runs in the thread `traced_invoke` made for it, a daemon.
    """
    bound: Runnable[Any, Any] = parsed_structured(model, schema_cls, format=schema_cls.model_json_schema())
    return bound


_MODEL_NOT_FOUND = re.compile(r"""model ["']?([^"'\s]+)["']? not found""", re.IGNORECASE)


def explain_connection_error(exc: BaseException, base_url: str, model: str | None = None) -> ModelError | None:
    """A one-line ModelError for a failure talking to Ollama during a run; None for anything else.

    Looks through the exception's causes, since wrappers (LangGraph, langchain) may chain the original.
    """
    import httpx
    import ollama

    url = resolve_base_url(base_url)
    name = f"'{model}'" if model else "the model"
    for current in causes(exc):
        if isinstance(current, ModelError):
            return current
        # Connecting failed: the server is gone (ollama's own calls raise the builtin ConnectionError).
        if isinstance(current, httpx.ConnectError | httpx.ConnectTimeout | ConnectionRefusedError):
            return ModelError(f"Ollama at {url} stopped answering: restart it with `ollama serve`, then run again")
        # Connected but the reply broke off: the server died or was killed mid-answer.
        if isinstance(current, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError) or (
            isinstance(current, ValueError) and "No data received from Ollama" in str(current)
        ):
            return ModelError(
                f"Ollama at {url} dropped the connection mid-reply (crashed or out of memory?): "
                "check its log, restart it with `ollama serve`, then run again"
            )
        if isinstance(current, httpx.TimeoutException):
            return ModelError(
                f"Ollama at {url} did not answer {name} in time: give it more time with --critic-timeout, "
                "or use a smaller model"
            )
        if isinstance(current, CutStream):
            return ModelError(
                f"Ollama at {url} cut off its answer to {name} before the last line: check its log and any proxy "
                "in between, then resume the run"
            )
        if isinstance(current, ConnectionError):
            return ModelError(f"Ollama at {url} stopped answering: restart it with `ollama serve`, then run again")
        if isinstance(current, ollama.ResponseError):
            return _explain_response_error(current, url, model)
    return None


def broken_ollama_reply(exc: BaseException, settings: RunSettings) -> ModelError | None:
    """The one line for an answer of the run's Ollama critic (or agent) that its client could not read; None when
    the run uses no Ollama model or `exc` is something else."""
    spec = next((s for s in (settings.eval_model, settings.agent_model) if s.startswith("ollama:")), "")
    if not spec:
        return None
    url = settings_url(settings)
    fix = "check its log and any proxy in between, then resume the run"
    return broken_reply_error(exc, "Ollama", url, f"a call to '{spec[7:]}'", fix)


def _explain_response_error(exc: Any, url: str, model: str | None) -> ModelError:
    """Map an error Ollama itself reported (an HTTP error or an {"error": ...} line)."""
    text = _one_line(exc.error)
    low = text.lower()
    found = _MODEL_NOT_FOUND.search(text)
    if found or (exc.status_code == 404 and "not found" in low):
        missing = found.group(1) if found else (model or "the model")
        return ModelError(f"Ollama at {url} has no model '{missing}' (any more): run `ollama pull {missing}`")
    who = f"'{model}'" if model else "the model"
    if "memory" in low:
        return ModelError(f"Ollama at {url} cannot run {who}: {text}; free memory or use a smaller model")
    if "does not support" in low:
        return ModelError(f"Ollama at {url} refused {who}: {text}; pick a model that supports it")
    status = f"HTTP {exc.status_code}: " if exc.status_code and exc.status_code > 0 else ""
    return ModelError(f"Ollama at {url} failed ({status}{text}): check its log and run again")


def _check_spec(spec: str) -> None:
    if not spec.removeprefix("ollama:").strip():
        raise SettingsError("is not a model: use ollama:<model> (e.g. ollama:gemma3:4b)")


def _load_spec(spec: str, settings: RunSettings, vision: bool) -> ChatOllama:
    return load_ollama(
        spec.removeprefix("ollama:"),
        base_url=reveal(settings.ollama_url) or None,
        require_vision=vision,
        keep_alive=settings.critic_keep_alive or None,
    )


OLLAMA_BACKEND = Backend(
    name="ollama",
    kind="chat",
    syntax="ollama:<model>",
    summary="a model served by Ollama (--ollama-url), checked for vision through /api/show",
    claims=prefixed("ollama"),
    check=_check_spec,
    load=_load_spec,
    options=("ollama_url", "critic_keep_alive"),
)
