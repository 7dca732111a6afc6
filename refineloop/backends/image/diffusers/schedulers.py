"""`--scheduler NAME` on a loaded pipeline: the sampler the table names (refineloop.samplers), built from the
model's own scheduler config so its training settings (betas, prediction type, timestep spacing) carry over.

A pipeline takes a sampler only when its own scheduler lists the class as compatible (diffusers keeps that
list per scheduler), or for the consistency samplers (LCM, TCD) on any model that is not flow-matching.
Flow-matching models (SD3, FLUX) list only their own kind: they are refused in one line.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from refineloop.errors import ModelError
from refineloop.samplers import CONSISTENCY, SAMPLERS, Sampler, sampler_for


def is_flow_matching(scheduler: Any) -> bool:
    """Whether a loaded scheduler integrates a flow (rectified flow models), which other samplers cannot drive."""
    config = getattr(scheduler, "config", {}) or {}
    return (
        "flowmatch" in type(scheduler).__name__.lower()
        or bool(config.get("use_flow_sigmas"))
        or config.get("prediction_type") == "flow_prediction"
    )


def scheduler_problem(scheduler: Any, name: str, model_name: str) -> str | None:
    """Why the model whose scheduler is `scheduler` cannot draw with sampler `name`; None when it can."""
    sampler = SAMPLERS.get(name)
    if sampler is None:
        return f"unknown scheduler '{name}': use one of {', '.join(SAMPLERS)}"
    own = type(scheduler).__name__
    compatible = {cls.__name__ for cls in getattr(scheduler, "compatibles", []) or []} | {own}
    takes = sampler.scheduler_class in compatible or (
        sampler.scheduler_class in CONSISTENCY and not is_flow_matching(scheduler)
    )
    if not takes:
        kind = "a flow-matching model" if is_flow_matching(scheduler) else f"a model sampled by {own}"
        return (
            f"--scheduler {name} cannot drive {model_name}: it is {kind}, which keeps its own scheduler "
            f"({own}): drop --scheduler"
        )
    if sampler.needs and importlib.util.find_spec(sampler.needs) is None:
        return f"--scheduler {name} needs the {sampler.needs} package: pip install {sampler.needs}, or pick another"
    return None


def build_scheduler(scheduler: Any, name: str, model_name: str) -> Any:
    """A new scheduler of the sampler `name`, from `scheduler`'s config; ModelError (one line) when refused."""
    problem = scheduler_problem(scheduler, name, model_name)
    if problem:
        raise ModelError(problem)
    import diffusers

    sampler = SAMPLERS[name]
    cls = getattr(diffusers, sampler.scheduler_class)
    return cls.from_config(scheduler.config, **sampler.config)


def sampler_words(scheduler: Any) -> tuple[str, str]:
    """A1111's (`Sampler`, `Schedule type`) words for a loaded scheduler: the table's entry where one matches,
    else the class name (without `Scheduler`) with the sigmas' kind."""
    if scheduler is None:
        return "", ""
    config = dict(getattr(scheduler, "config", {}) or {})
    own = type(scheduler).__name__
    found: Sampler | None = sampler_for(own, config)
    if found is not None:
        return found.a1111, found.schedule
    schedule = "Karras" if config.get("use_karras_sigmas") else "Automatic"
    return own.removesuffix("Scheduler"), schedule
