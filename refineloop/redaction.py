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
#: key=value and "key": "value" pairs whose key names a secret.
_PAIR = re.compile(
    r"(?P<key>\b[\w.-]*(?:api[_-]?key|apikey|password|passwd|pwd|secret|token|authorization|credentials?)(?![\w]))"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"'&,;}]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
_KEY_SHAPES = re.compile(r"\b(?:sk|pk|rk|ghp|gho|ghs|hf|xox[abp])[-_][A-Za-z0-9_-]{12,}")


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
    if not match.group("user"):
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
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _PAIR.sub(lambda m: m[0] if m.group("value") == MASK else f"{m.group('key')}{m.group('sep')}{MASK}", text)
    return _KEY_SHAPES.sub(MASK, text)


def redact_url(url: str) -> str:
    """A URL fit to print or record: its password and token-like credentials masked, its query's secret
    parameters too."""
    return redact(url)
