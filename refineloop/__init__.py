"""refineloop: iterative image refinement as a LangGraph state machine.

The Python API is three functions and one result (refineloop.api):

    import refineloop
    result = refineloop.run(goal="a cosy cabin in deep snow", max_iterations=4)
    result = refineloop.resume(result.folder)
    other = refineloop.fork(result.folder, from_iteration=2, strategy="annealing")

Kept import-light on purpose: `refineloop --help` must not pay for langgraph, torch or diffusers, so the API's
names are looked up on first use.
"""

from __future__ import annotations

from typing import Any

from refineloop.version import __version__

API = ("RunResult", "fork", "resume", "run")
__all__ = ["__version__", *API]


def __getattr__(name: str) -> Any:
    if name in API:
        from refineloop import api

        return getattr(api, name)
    raise AttributeError(f"module 'refineloop' has no attribute {name!r}")
