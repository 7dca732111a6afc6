"""Offline stand-ins for the demo and the tests: a procedural image model and a heuristic critic. NOT real models.

The critic's entry in the backend table lives here rather than in `critic`, which imports langchain_core at its
top: the table is read by every CLI start, and the critic loads only when a run names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from refineloop.backends.table import Backend

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from refineloop.settings import RunSettings


def _load_demo(spec: str, settings: RunSettings, vision: bool) -> BaseChatModel:
    from refineloop.backends.demo.critic import DemoCritic

    return DemoCritic(seed=settings.seed or 0)


DEMO_BACKEND = Backend(
    name="demo",
    kind="chat",
    syntax="demo",
    summary="the offline heuristic critic (measures heat in the image; NOT a real model)",
    claims=lambda spec: spec == "demo",
    load=_load_demo,
)
