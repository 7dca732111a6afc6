"""Secrets kept out of everything refineloop stores or shows: one function, `redact`, at every boundary.

A key, a password or a credential in a URL must reach no checkpoint, trace, sidecar, PNG, report, summary,
error.log or terminal line, even when a server quotes it back in an error. Three kinds are masked: values
registered by the code that holds them (the API key a critic was given), values of the environment's secret
variables (`*_API_KEY`, `*_TOKEN`, `*PASSWORD*`, ...), and secrets recognisable by their shape (credentials in a
URL, `password=` / `api_key=` parameters, `Bearer` tokens, `sk-...` keys).
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote

MASK = "***"

#: Shorter values are not registered: masking every "abc" in a reply would mangle text and protect nothing.
MIN_SECRET = 8

_SECRETS: set[str] = set()
_ENV_READ: list[bool] = []

#: Environment variables whose values are secrets by their name.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)

#: user:password@ (or a lone token@) after a scheme: the credentials go, the user of a user:password stays.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s/@:]*)(?::(?P<pw>[^\s/@]*))?@")
#: The words a key that names a secret ends with, in any case (`credential` covers `credentials`).
_KEY_WORDS = (
    "api_key",
    "api-key",
    "apikey",
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "authorization",
    "credential",
)
#: key=value and "key": "value" pairs whose key names a secret. The key is a run of [\w.-] ending in one of the
#: words (no separator can start inside such a run, so it always ends where the run does): the run is taken whole
#: and its end tested once, where a backtracking `[\w.-]*(?:word|...)` tried every word at every character, twice
#: as slow on a long report (a fuzzed comparison of the two forms found no difference).
_PAIR = re.compile(
    r"(?P<key>\b(?=[\w.-])[\w.-]*+(?:" + "|".join(f"(?<={w})" for w in (*_KEY_WORDS, "credentials")) + "))"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"'&,;}]+)",
    re.IGNORECASE,
)
#: The schemes of an Authorization header's credentials, in any case.
_BEARER_WORDS = ("bearer", "basic", "token")
_BEARER = re.compile(r"\b(" + "|".join(_BEARER_WORDS) + r")\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
#: How the API keys of well-known services begin (case as written: _KEY_SHAPES is case-sensitive).
_KEY_PREFIXES = ("sk", "pk", "rk", "ghp", "gho", "ghs", "hf", "xoxa", "xoxb", "xoxp")
_KEY_STARTS = tuple(f"{prefix}{joint}" for prefix in _KEY_PREFIXES for joint in "-_")
_KEY_SHAPES = re.compile(r"\b(?:" + "|".join(_KEY_PREFIXES) + r")[-_][A-Za-z0-9_-]{12,}")
#: The only characters outside ASCII that a case-insensitive pattern takes for ASCII letters (Python's re docs;
#: checked over every code point), mapped to those letters, so that a plain substring test never misses what the
#: patterns would find.
_LOOKALIKES = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}


def register_secret(value: str) -> None:
    """Mask `value` (and its URL-quoted form) wherever text passes :func:`redact` from now on."""
    if isinstance(value, str) and len(value) >= MIN_SECRET:
        _SECRETS.add(value)
        _SECRETS.add(quote(value, safe=""))


def _environment_secrets() -> None:
    """Register, once, the values of the environment's secret-named variables."""
    if _ENV_READ:
        return
    _ENV_READ.append(True)
    for name, value in os.environ.items():
        if _SECRET_NAME.search(name):
            register_secret(value)


def _userinfo(match: re.Match[str]) -> str:
    if match.group("pw") is not None:
        return f"{match.group('scheme')}{match.group('user')}:{MASK}@"
    # A lone name before @ is a token on the web (https://TOKEN@host); elsewhere (postgres://user@) a user.
    if not match.group("user") or not match.group("scheme").lower().startswith(("http", "ws")):
        return match.group(0)
    return f"{match.group('scheme')}{MASK}@"


def redact(text: str) -> str:
    """`text` with every secret masked as `***` (see the module's docstring); any other text as it is."""
    if not isinstance(text, str):
        text = str(text)
    _environment_secrets()
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    if "://" in text and "@" in text:
        text = _URL_USERINFO.sub(_userinfo, text)
    # Each pattern runs only where its words are: scanning a 1000-image report.html that held none of them took
    # the key=value pattern alone half a second of the run's stop. Folded once: masking a Bearer token writes
    # `***`, which can take a word away but never make one.
    folded = _folded(text)
    if any(word in folded for word in _BEARER_WORDS):
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    if any(word in folded for word in _KEY_WORDS):
        text = _PAIR.sub(
            lambda m: m[0] if m.group("value") == MASK else f"{m.group('key')}{m.group('sep')}{MASK}", text
        )
    if any(start in text for start in _KEY_STARTS):
        text = _KEY_SHAPES.sub(MASK, text)
    return text


def _folded(text: str) -> str:
    """`text` lowercased as a case-insensitive pattern sees it, so that an ASCII word test finds what it finds."""
    for lookalike, letter in _LOOKALIKES.items():
        if lookalike in text:
            text = text.replace(lookalike, letter)
    return text.lower()


#: URLs whose credentials were taken out, by the form that is stored and shown: the process that was given a
#: URL reaches its server with it; what a run records (its settings, in every checkpoint) never holds them.
_VAULT: dict[str, str] = {}


def hide_credentials(url: str) -> str:
    """`url` as a run may record it: credentials masked (see `redact`), the whole URL kept in this process so
    `reveal` gives it back to the client that connects. A resumed run in a new process reaches the server
    again when the URL is given anew (or its secret comes from the environment)."""
    if not isinstance(url, str) or not url:
        return url
    shown = redact(url)
    if shown != url:
        _VAULT[shown] = url
        match = _URL_USERINFO.search(url)
        if match and match.group("pw"):
            register_secret(match.group("pw"))
    return shown


def reveal(url: str) -> str:
    """The URL `hide_credentials` was given for its recorded form; any other URL as it is."""
    return _VAULT.get(url, url)


def scrub_exception(exc: BaseException) -> BaseException:
    """`exc` and what it was raised from, with the text of their arguments, messages and notes redacted in
    place (type and traceback kept), so that whoever records it (LangGraph writes a failing node's exception,
    as its repr, into the checkpoint's pending writes) records no secret. Returns `exc`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
            for name in ("message", "msg", "body", "text", "reason"):
                value = getattr(current, name, None)
                if isinstance(value, str) and redact(value) != value:
                    setattr(current, name, redact(value))
            notes = getattr(current, "__notes__", None)
            if isinstance(notes, list):
                notes[:] = [redact(n) if isinstance(n, str) else n for n in notes]
        except (AttributeError, TypeError):  # a read-only attribute: leave it, the rest is done
            pass
        current = current.__cause__ or current.__context__
    return exc


def redact_deep(value: object) -> object:
    """`value` with every string inside it (dicts, lists, tuples) redacted; other values as they are. Only
    rebuilds what changed, so an update without secrets comes back as the same objects."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        out = {k: redact_deep(v) for k, v in value.items()}
        return value if all(out[k] is value[k] for k in value) else out
    if isinstance(value, list):
        items = [redact_deep(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, tuple):
        parts = tuple(redact_deep(v) for v in value)
        return value if all(a is b for a, b in zip(parts, value, strict=True)) else parts
    return value
