"""The A1111 backend's entry in the backend table: `a1111[:CHECKPOINT]`, reached at `--a1111-url`.

At load, `GET /sdapi/v1/sd-models` checks the server answers (and takes the credentials), and finds the
checkpoint the spec names by its title, its name, its file name or its short hash; the credentials come from the
variable `--a1111-auth-env` names, and only from there.
"""

from __future__ import annotations

import base64
import os
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from refineloop.backends.chat.text_safety import register_secret
from refineloop.backends.image.http_calls import Server
from refineloop.backends.table import Backend, fixed
from refineloop.errors import ModelError
from refineloop.redaction import reveal
from refineloop.samplers import SAMPLERS

if TYPE_CHECKING:
    from refineloop.backends.image.a1111.model import A1111ImageModel
    from refineloop.settings import RunSettings

NAME = "the A1111 server"


def auth_headers(variable: str) -> dict[str, str]:
    """The basic-auth header from `user:password` in the environment variable `variable` ({} when none is named)."""
    if not variable:
        return {}
    value = os.environ.get(variable, "")
    if ":" not in value:
        raise ModelError(
            f"--a1111-auth-env names {variable}, which is {'not set' if not value else 'not user:password'}: "
            f"export {variable}=user:password"
        )
    token = base64.b64encode(value.encode()).decode()
    register_secret(value)
    register_secret(token)
    return {"Authorization": f"Basic {token}"}


def find_checkpoint(models: Any, wanted: str, url: str) -> str:
    """The server's title of the checkpoint `wanted` names (title, name, file name or short hash)."""
    entries = (
        [m for m in models if isinstance(m, dict) and isinstance(m.get("title"), str)]
        if isinstance(models, list)
        else []
    )
    for entry in entries:
        names = {
            entry["title"],
            str(entry.get("model_name") or ""),
            PurePath(str(entry.get("filename") or "")).name,
            str(entry.get("hash") or ""),
        }
        if wanted in names - {""}:
            return str(entry["title"])
    shown = ", ".join(sorted(e["title"] for e in entries)[:8]) or "none"
    raise ModelError(f"{NAME} at {url} has no checkpoint '{wanted}': it has {shown}")


def sampler_words(settings: RunSettings) -> tuple[str, str]:
    """A1111's `sampler_name` and `scheduler` for the run's `--scheduler` (its words in the sampler table:
    `DPM++ 2M`, `Karras`); empty: the server's own choice."""
    sampler = SAMPLERS.get(settings.scheduler) if settings.scheduler else None
    return (sampler.a1111, sampler.schedule) if sampler is not None else ("", "")


def _load(spec: str, settings: RunSettings) -> A1111ImageModel:
    from refineloop.backends.image.a1111.model import A1111ImageModel

    server = Server(
        NAME,
        reveal(settings.a1111_url).rstrip("/"),
        "--a1111-url",
        headers=auth_headers(settings.a1111_auth_env),
        auth_fix="set --a1111-auth-env to the variable holding the server's user:password",
    )
    models = server.call("GET", "/sdapi/v1/sd-models")
    wanted = spec.partition(":")[2].strip()
    checkpoint = find_checkpoint(models, wanted, server.url) if wanted else None
    sampler, scheduler = sampler_words(settings)
    return A1111ImageModel(server, f"a1111:{wanted}" if wanted else "a1111", checkpoint, sampler, scheduler)


A1111_BACKEND = Backend(
    name="a1111",
    kind="image",
    syntax="a1111[:<checkpoint>]",
    summary="an A1111-compatible server (A1111 WebUI, Forge, SD.Next) at --a1111-url, with a checkpoint it has "
    "(by title, name or hash; none: the one loaded)",
    claims=fixed("a1111"),
    load=_load,
    options=("a1111_url", "a1111_auth_env"),
    samplers=True,
)
