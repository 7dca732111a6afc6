"""An Ollama critic loaded into its server's memory before the image model is placed, and what it holds.

An empty chat request with `--critic-keep-alive` loads the model; /api/ps then says how much memory it holds, and
where, for the line that names both models. Loading it first lets the image model's placement measure the memory
the critic really leaves free. Imports no LangGraph or LangChain: the CLI's head start calls it too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from refineloop.redaction import redact
from refineloop.settings import RunSettings


def load_critic(settings: RunSettings) -> str:
    """Load an Ollama critic into memory now and describe what it holds, for the placement line ("" for other
    critics)."""
    if not settings.eval_model.startswith("ollama:"):
        return ""
    from refineloop.backends.chat.ollama import load_resident, settings_url

    url = settings_url(settings)
    keep = settings.critic_keep_alive
    resident = load_resident(settings.eval_model[7:], base_url=url, keep_alive=keep, timeout=settings.critic_timeout)
    # A remote Ollama's memory is its own host's: say whose GPU it is, since it is not the one being placed on.
    where = "" if on_this_machine(url) else f" at {redact(urlsplit(url).netloc)}"
    kept = ""
    if keep == "-1":
        kept = ", kept loaded for ever"
    elif keep and keep != "0":
        kept = f", kept loaded {keep}"
    if resident is None:
        return f" (not resident{where}: unloaded after each call)" if keep == "0" else f" (not resident{where})"
    return f" ({resident.line()}{where}{kept})"


def check_critic(settings: RunSettings) -> None:
    """An Ollama critic's checks (the server answers, has the model, the model sees images), made before it is
    loaded into memory: the head start loads it ahead of the run's own checks (refineloop.apps.head_start), and a
    model that will be refused must not take GPU memory first. Nothing for other critics."""
    if not settings.eval_model.startswith("ollama:"):
        return
    from refineloop.backends.chat.ollama import probe_ollama, settings_url

    probe_ollama(settings.eval_model[7:], base_url=settings_url(settings))


def on_this_machine(url: str) -> bool:
    """Whether a server's URL names this machine (its memory and GPU are the ones an image model is placed on)."""
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")
