"""Chat models on any OpenAI-compatible `/v1` chat-completions server: OpenAI itself, vLLM, llama.cpp's server,
LM Studio, LiteLLM, a gateway. Load and check them, hold them to a JSON schema where the server takes one, and
explain their failures in one line.

- **The key** is read from the environment variable `--openai-key-env` names (OPENAI_API_KEY by default) and
  only from there; settings, run.json and the trace hold the variable's name. The value is registered with
  `refineloop.backends.chat.text_safety.register_secret`, so a server that quotes it back in an error message cannot
  put it into the trace, error.log or the terminal either.
- **At load** (`probe_openai`) the server's model list is read, a plain question is asked, and only then a
  16-pixel red square is shown, each with a JSON schema first: a server that refuses the schema is asked
  again without it (the judge then falls back to the tolerant text parser). Each refusal's body is read, so a
  wrong or missing key, an unknown model and a model that cannot see images are told apart even where a
  server (LiteLLM's proxy) answers them all with HTTP 400; a wrong URL fails here too, before any folder
  fills up.
- **Calls** go through `refineloop.backends.chat.invoke.traced_invoke` like every critic call; the client itself never
  retries (`max_retries=0`: refineloop retries transport failures with its own backoff and trace lines), and each
  request takes the calling critic call's own timeout (:class:`OpenAICritic`).

langchain_openai and openai are imported inside the functions (about 2 s cold), so `refineloop --help` and the
offline demo never pay for them.
"""

from __future__ import annotations

import base64
import io
import os
import sys
from typing import TYPE_CHECKING, Any

from refineloop.backends.broken_replies import CutStream, broken_reply, broken_reply_error, cut_off
from refineloop.backends.chat.invoke import CALL_TIMEOUT, DEFAULT_TIMEOUT, parsed_structured
from refineloop.backends.chat.text_safety import clean_model_text, redact, register_secret
from refineloop.backends.table import Backend, prefixed
from refineloop.errors import ModelError, SettingsError, causes
from refineloop.redaction import reveal

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable
    from pydantic import BaseModel

    from refineloop.settings import RunSettings

DEFAULT_URL = "https://api.openai.com/v1"
PROBE_TIMEOUT = 60.0
"""Seconds the load-time probe may take (a cold server may still be loading the model into memory)."""
KEY_PLACEHOLDER = "no-key"
"""Sent when the key variable is unset: local servers ignore the header, and the client refuses to run without one."""


def resolve_openai_url(url: str = "") -> str:
    """The server's base URL: the flag, else $OPENAI_BASE_URL, else OpenAI's own; without a trailing slash."""
    return (url.strip() or os.environ.get("OPENAI_BASE_URL", "").strip() or DEFAULT_URL).rstrip("/")


def read_key(variable: str) -> str:
    """The API key in `variable` ("" when unset), registered as a secret so it is never shown or stored."""
    key = os.environ.get(variable, "").strip()
    register_secret(key)
    return key


class NotACompletion(ValueError):
    """The server answered 200 with a body that is not a chat completion (a web page, a proxy's error)."""


class StreamCut(NotACompletion, CutStream):
    """A streamed chat completion ended without its last chunk (no `finish_reason`)."""


def _not_a_completion(exc: Exception) -> Exception:
    """`exc` as NotACompletion when the client choked on the server's answer rather than failing itself."""
    import openai

    if isinstance(exc, openai.OpenAIError | NotACompletion):
        return exc
    return NotACompletion(f"the answer is not an OpenAI chat completion ({type(exc).__name__}: {exc})")


def _critic_class() -> type:
    """ChatOpenAI whose requests carry the calling critic call's timeout (built on first use: the import is slow)."""
    from langchain_openai import ChatOpenAI

    class OpenAICritic(ChatOpenAI):
        """ChatOpenAI that gives each request the timeout of the critic call making it, when it has one.

        The model is loaded once per process and shared by runs and roles, so the run's `critic_timeout` cannot be
        baked into its client; the openai client takes a per-request `timeout`, which rides in the payload.
        """

        def _get_request_payload(self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
            payload = super()._get_request_payload(input_, stop=stop, **kwargs)
            seconds = CALL_TIMEOUT.get()
            if seconds is not None:
                payload["timeout"] = seconds
            return payload

        # A 200 whose body is a web page makes the client fail while reading it (an AttributeError, a TypeError
        # ...): named for what it is, so the user reads one line about the URL instead of a library's insides.
        # The openai client's stream helper asserts on a stream with no chunk at all (an AssertionError).
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super()._generate(*args, **kwargs)
            except (AttributeError, TypeError, KeyError, ValueError, AssertionError) as exc:
                raise _not_a_completion(exc) from exc

        def _stream(self, *args: Any, **kwargs: Any) -> Any:
            finished = False
            try:
                for chunk in super()._stream(*args, **kwargs):
                    finished = finished or bool((chunk.generation_info or {}).get("finish_reason"))
                    yield chunk
            except (AttributeError, TypeError, KeyError, ValueError, AssertionError) as exc:
                raise _not_a_completion(exc) from exc
            if not finished:
                raise StreamCut("the stream ended before its last chunk (no finish_reason)")

    return OpenAICritic


_CRITIC_CLASS: type | None = None


def openai_critic_class() -> type:
    """The one OpenAICritic class of this process."""
    global _CRITIC_CLASS
    if _CRITIC_CLASS is None:
        _CRITIC_CLASS = _critic_class()
    return _CRITIC_CLASS


def load_openai(
    model: str,
    *,
    base_url: str = "",
    key_env: str = "OPENAI_API_KEY",
    stream: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    require_vision: bool = True,
) -> Any:
    """A checked chat model at temperature 0 on an OpenAI-compatible server (see the module notes).

    The probe's findings ride along in `model.metadata["openai"]`: the URL, whether the server took the image
    and whether it takes `response_format: json_schema`.
    """
    url = resolve_openai_url(base_url)
    key = read_key(key_env)
    chat = openai_critic_class()(
        model=model,
        base_url=url,
        api_key=key or KEY_PLACEHOLDER,
        temperature=0.0,
        max_retries=0,
        timeout=timeout,
        streaming=stream,
        # These servers speak chat completions; some model names would otherwise switch to the Responses API.
        use_responses_api=False,
        metadata={"openai": {"base_url": url, "key_env": key_env}},
    )
    found = probe_openai(chat, model, url=url, key_env=key_env, has_key=bool(key), require_vision=require_vision)
    chat.metadata = {"openai": {"base_url": url, "key_env": key_env, **found}}
    return chat


def _probe_image() -> str:
    """A 16-pixel red square as a PNG data URL (made here: nothing to ship or download)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (220, 20, 20)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_PROBE_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "Probe",
        "schema": {
            "type": "object",
            "properties": {"colour": {"type": "string"}},
            "required": ["colour"],
            "additionalProperties": False,
        },
        "strict": False,
    },
}


def probe_openai(
    chat: Any, model: str, *, url: str, key_env: str, has_key: bool, require_vision: bool
) -> dict[str, bool]:
    """Check the model before any image is made; return what the server took: {"vision": ..., "json_schema": ...}.
    Raises ModelError with a one-line fix for every refusal.

    Some servers (LiteLLM's proxy) answer a wrong key, a missing key, an unknown model and an image the model
    cannot see all with HTTP 400, so the probe tells them apart by asking in order, each time reading the
    error's body: the model list (`GET /models`: the key, and whether the model exists), a plain question
    (the key, the model, the JSON schema), and only then the image, so a 400 there means the image.
    """
    import openai

    client = chat.root_client.with_options(timeout=PROBE_TIMEOUT, max_retries=0)
    where: dict[str, Any] = {"url": url, "model": model, "key_env": key_env, "has_key": has_key}
    try:
        _check_listed(client, **where)
        schema = _ask(client, model, "Answer with the one word: ok", where, what="a plain question")
        if not require_vision:
            return {"vision": False, "json_schema": schema}
        content: Any = [
            {"type": "text", "text": "What colour is this square? Answer in one word."},
            {"type": "image_url", "image_url": {"url": _probe_image()}},
        ]
        _ask(client, model, content, where, what="an image", schema=schema)
        return {"vision": True, "json_schema": schema}
    except ModelError:
        raise
    except (openai.OpenAIError, NotACompletion) as exc:
        mapped = explain_openai_error(exc, url=url, model=model, key_env=key_env, has_key=has_key)
        if mapped is None:
            raise
        raise mapped from None
    except Exception as exc:
        broken = broken_reply_error(exc, "the server", url, f"the start-up check of '{model}'", _NOT_AN_API)
        if broken is None:
            raise
        raise broken from None


_NOT_AN_API = "check that --openai-url is the server's /v1 address (a proxy or web page may be in the way)"


def _check_listed(client: Any, *, url: str, model: str, key_env: str, has_key: bool) -> None:
    """`GET /models`: a refused key, or a model the server does not list, is named now. A server that lists
    nothing (or has no such route) is asked directly instead."""
    import openai

    try:
        names = [entry.id for entry in client.models.list()]
    except (openai.NotFoundError, openai.UnprocessableEntityError, openai.InternalServerError):
        return
    except openai.APIStatusError as exc:
        if exc.status_code in (401, 403) or refusal_kind(exc) == "key":
            raise key_error(url, f"'{model}'", exc.status_code, has_key, key_env, exc) from None
        return  # the listing itself is refused or broken: the questions below find what is wrong
    except (TypeError, ValueError, AttributeError):
        return  # a listing in some other shape
    if names and model not in names:
        shown = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "")
        raise ModelError(
            f"the server at {url} has no model '{model}' (it lists {shown}): check the name (GET {url}/models "
            "lists them) and that --openai-url ends in /v1"
        )


def _ask(client: Any, model: str, content: Any, where: dict[str, Any], *, what: str, schema: bool = True) -> bool:
    """Ask one tiny question (with a JSON schema first when `schema`); whether the schema was taken. A refusal
    that names the key or the model says so; any other is the content (`what`) being refused."""
    import openai

    messages = [{"role": "user", "content": content}]
    if schema:
        try:
            _completion(
                client.chat.completions.create(
                    model=model, messages=messages, temperature=0, response_format=_PROBE_SCHEMA
                )
            )
            return True
        except openai.BadRequestError as exc:
            _raise_named_refusal(exc, **where)  # else the schema or the content: ask once more without the schema
    try:
        _completion(client.chat.completions.create(model=model, messages=messages, temperature=0))
    except openai.BadRequestError as exc:
        _raise_named_refusal(exc, **where)
        fix = (
            "pick a model that sees images (e.g. a Qwen2.5-VL, Gemma 3 or LLaVA model), or serve it with its vision "
            "projector"
            if what == "an image"
            else "check the model's settings on the server"
        )
        raise ModelError(f"'{model}' at {where['url']} refused {what} (HTTP 400: {_server_text(exc)}): {fix}") from None
    return False


def _completion(answer: Any) -> None:
    """Raise NotACompletion unless `answer` is a chat completion: the client hands back any 200 that is not JSON
    (a proxy's web page) as it came, so the probe would otherwise pass a server the run's first call fails on."""
    if not isinstance(getattr(answer, "choices", None), list):
        raise NotACompletion(f"the answer is not an OpenAI chat completion ({type(answer).__name__})")


def _raise_named_refusal(exc: Any, *, url: str, model: str, key_env: str, has_key: bool) -> None:
    """Raise the key's or the model's ModelError when a refusal's body names one of them; return otherwise."""
    kind = refusal_kind(exc)
    if kind == "key":
        raise key_error(url, f"'{model}'", exc.status_code, has_key, key_env, exc) from None
    if kind == "model":
        raise model_error(url, f"'{model}'", exc) from None


#: Words of error bodies that mean the key was refused or is missing (LiteLLM's proxy says so with HTTP 400).
_KEY_WORDS = (
    "api key",
    "api_key",
    "authentication",
    "auth_error",
    "unauthorized",
    "invalid proxy server token",
    "virtual key",
    "no_db_connection",
    "no connected db",
)
#: ... and that the model is not there.
_MODEL_WORDS = ("invalid model", "model_not_found", "does not exist", "unknown model", "no such model", "not found")


def refusal_kind(exc: Any) -> str | None:
    """`key` or `model` when an HTTP error's body says the key or the model is what was refused, else None."""
    body = getattr(exc, "body", None)
    fields = body if isinstance(body, dict) else {}
    parts = (getattr(exc, "message", ""), fields.get("type"), fields.get("code"), fields.get("message"))
    text = " ".join(str(part) for part in parts if part).lower()
    if any(word in text for word in _KEY_WORDS):
        return "key"
    if any(word in text for word in _MODEL_WORDS):
        return "model"
    return None


def key_error(url: str, name: str, status: int, has_key: bool, key_env: str, exc: Any) -> ModelError:
    """The key was refused, or none was set: say which, and which variable to fill."""
    said = f"HTTP {status}: {_server_text(exc)}"
    if not has_key:
        return ModelError(
            f"the server at {url} wants an API key for {name} ({said}) and {key_env} is not set: export "
            f"{key_env}=<your key>, or name the variable that holds it with --openai-key-env"
        )
    return ModelError(
        f"the server at {url} refused the key in {key_env} for {name} ({said}): put a valid key in that variable, "
        "or name another with --openai-key-env"
    )


def model_error(url: str, name: str, exc: Any) -> ModelError:
    """The server has no such model."""
    return ModelError(
        f"the server at {url} has no model {name} (HTTP {getattr(exc, 'status_code', '?')}: {_server_text(exc)}): "
        f"check the name (GET {url}/models lists them) and that --openai-url ends in /v1"
    )


def _server_text(exc: Any, limit: int = 160) -> str:
    """The server's own message, on one short line, without the key or control characters."""
    body = getattr(exc, "body", None)
    said = body.get("message") if isinstance(body, dict) else None
    text = said if isinstance(said, str) and said.strip() else getattr(exc, "message", None) or str(exc)
    line = " ".join(redact(clean_model_text(str(text))).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def explain_openai_error(
    exc: BaseException, *, url: str, model: str | None, key_env: str, has_key: bool | None = None
) -> ModelError | None:
    """A one-line ModelError for a failure talking to an OpenAI-compatible server; None for anything else.

    Looks through the exception's causes, since wrappers (LangGraph, langchain) may chain the original.
    """
    if "openai" not in sys.modules:
        return None
    import openai

    name = f"'{model}'" if model else "the model"
    if has_key is None:
        has_key = bool(os.environ.get(key_env, "").strip())
    for current in causes(exc):
        if isinstance(current, ModelError):
            return current
        if isinstance(current, openai.APITimeoutError):
            return ModelError(
                f"the server at {url} did not answer {name} in time: give it more time with --critic-timeout"
            )
        if isinstance(current, openai.APIConnectionError):
            return ModelError(
                f"cannot reach the OpenAI-compatible server at {url}: start it, or pass its /v1 address with "
                "--openai-url (or set OPENAI_BASE_URL)"
            )
        if isinstance(current, openai.AuthenticationError | openai.PermissionDeniedError):
            return key_error(url, name, getattr(current, "status_code", 401), has_key, key_env, current)
        if isinstance(current, openai.NotFoundError):
            return model_error(url, name, current)
        if isinstance(current, openai.BadRequestError) and (kind := refusal_kind(current)):
            if kind == "key":
                return key_error(url, name, current.status_code, has_key, key_env, current)
            return model_error(url, name, current)
        if isinstance(current, openai.RateLimitError):
            return ModelError(
                f"the server at {url} kept answering {name} with HTTP 429 (rate limited or busy): wait and resume "
                "the run, or raise --critic-retries"
            )
        if isinstance(current, openai.APIStatusError):
            status = current.status_code
            if status >= 500:
                return ModelError(
                    f"the server at {url} failed on {name} (HTTP {status}: {_server_text(current)}): check its "
                    "log, then resume the run"
                )
            return ModelError(
                f"the server at {url} refused the request to {name} (HTTP {status}: {_server_text(current)}): "
                "check the model's settings on the server"
            )
        if isinstance(current, StreamCut):
            return ModelError(
                f"the server at {url} cut off its streamed answer to {name} before the end: check its log and any "
                "proxy in between (or drop --openai-stream), then resume the run"
            )
        if cut_off(current):  # the transfer broke off, wherever the URL points
            return ModelError(
                f"the server at {url} answered {name} with {broken_reply(current)}: check its log and any proxy in "
                "between, then resume the run"
            )
        # NotACompletion, or LangChain's own words for a stream that carried no completion.
        if isinstance(current, NotACompletion) or (
            isinstance(current, ValueError) and "No generations found in stream" in str(current)
        ):
            what = broken_reply(current) or "something that is not an OpenAI chat completion"
            return ModelError(f"the server at {url} answered {name} with {what}: {_NOT_AN_API}")
    return broken_reply_error(exc, "the server", url, name, f"{_NOT_AN_API}, then resume the run")


def explain_for_settings(exc: BaseException, settings: RunSettings) -> ModelError | None:
    """explain_openai_error for the run's OpenAI-compatible model (the critic's, else the agent's)."""
    spec = next((s for s in (settings.eval_model, settings.agent_model) if s.startswith("openai:")), "")
    if not spec:
        return None
    return explain_openai_error(
        exc, url=resolve_openai_url(settings.openai_url), model=spec[7:], key_env=settings.openai_key_env
    )


def is_openai_model(model: Any) -> bool:
    """Whether `model` (or a copy of it) was made by load_openai."""
    meta = getattr(model, "metadata", None) or {}
    return "openai" in meta


def structured_openai(model: Any, schema_cls: type[BaseModel]) -> Runnable[Any, Any] | None:
    """The model answering in `schema_cls` through `response_format: json_schema`, returning {"raw", "parsed",
    "parsing_error"} and never raising on a bad reply; None when the server refused a schema at the probe
    (the caller then reads the plain text with the tolerant parser).

    The schema request and the parsing are `refineloop.backends.chat.invoke.parsed_structured`, shared with Ollama.
    """
    meta = (getattr(model, "metadata", None) or {}).get("openai") or {}
    if not meta.get("json_schema"):
        return None
    response_format = {
        "type": "json_schema",
        # Not strict: strict mode needs every property required and no defaults, which not every server checks
        # alike; the parser below reads whatever comes back, and the text parser catches the rest.
        "json_schema": {"name": schema_cls.__name__, "schema": schema_cls.model_json_schema(), "strict": False},
    }
    return parsed_structured(model, schema_cls, response_format=response_format)


def _check_spec(spec: str) -> None:
    if not spec.removeprefix("openai:").strip():
        raise SettingsError("is not a model: use openai:<model> (e.g. openai:gpt-4o-mini)")


def _load_spec(spec: str, settings: RunSettings, vision: bool) -> Any:
    return load_openai(
        spec.removeprefix("openai:"),
        base_url=reveal(settings.openai_url),
        key_env=settings.openai_key_env,
        stream=settings.openai_stream,
        timeout=settings.critic_timeout,
        require_vision=vision,
    )


OPENAI_BACKEND = Backend(
    name="openai",
    kind="chat",
    syntax="openai:<model>",
    summary="a vision model on any OpenAI-compatible /v1 server (--openai-url, key from --openai-key-env)",
    claims=prefixed("openai"),
    check=_check_spec,
    load=_load_spec,
    options=("openai_url", "openai_key_env", "openai_stream"),
)
