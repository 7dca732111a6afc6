"""The Ray engine: a batched Serve generator per GPU, runner actors hosting many runs as threads, a driver.

One module per part: `options` (`EngineOptions`, the Serve names), `connect` (join or start Ray), `generator`
(the batching Serve deployment), `remote_model` (the ImageModel that nodes in a runner see), `runners` (the
runner actors), `deploy` (start or reuse the generator), `driver` (`run_ray`) and `reasons` (one-line failures).

Ray is imported at module level: callers import this package only after checking that the `ray` extra is
installed (`refineloop.cli.batch` does).
"""

from __future__ import annotations

from refineloop.scale.ray.driver import run_ray
from refineloop.scale.ray.generator import Generator
from refineloop.scale.ray.options import APP, DEPLOYMENT, EngineOptions
from refineloop.scale.ray.reasons import reason
from refineloop.scale.ray.runners import start_runners

__all__ = ["APP", "DEPLOYMENT", "EngineOptions", "Generator", "reason", "run_ray", "start_runners"]
