"""Offline stand-ins for the demo and the tests: a procedural image model and a heuristic critic. NOT real models.

The critic's entry in the backend table lives here rather than in `critic`, which imports langchain_core at its
top: the table is read by every CLI start, and the critic loads only when a run names it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from refineloop.backends.table import Backend, fixed
from refineloop.errors import SettingsError

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from refineloop.settings import RunSettings


#: The longest pause a `demo:delay=S` critic may take per call.
MAX_DELAY = 60.0


def is_demo(spec: str) -> bool:
    """Whether a chat model spec names the offline demo critic (`demo`, or `demo:delay=SECONDS`)."""
    return DEMO_BACKEND.claims(spec)


def demo_delay(spec: str) -> float:
    """`demo:delay=1.5`: seconds each demo critic call waits, standing in for a slow model; SettingsError with
    the fix for any other option or a delay out of bounds."""
    delay = 0.0
    for part in filter(None, spec.partition(":")[2].split(",")):
        key, _, value = part.partition("=")
        if key != "delay":
            raise SettingsError(f"has an unknown demo critic option '{key}': use demo or demo:delay=SECONDS")
        try:
            delay = float(value)
        except ValueError:
            raise SettingsError(f"gives demo option delay '{value}', which is not a number of seconds") from None
        if not (math.isfinite(delay) and 0 <= delay <= MAX_DELAY):
            raise SettingsError(f"asks for a demo delay of {value}: use 0 to {MAX_DELAY:g} seconds")
    return delay


def _check_demo(spec: str) -> None:
    demo_delay(spec)


def _load_demo(spec: str, settings: RunSettings, vision: bool) -> BaseChatModel:
    from refineloop.backends.demo.critic import DemoCritic

    return DemoCritic(seed=settings.seed or 0, delay=demo_delay(spec))


DEMO_BACKEND = Backend(
    name="demo",
    kind="chat",
    syntax="demo[:delay=S]",
    summary="the offline heuristic critic (measures heat in the image; NOT a real model); delay=S answers "
    "after S seconds, like a slow model",
    claims=fixed("demo"),
    check=_check_demo,
    load=_load_demo,
)
