"""The run as this process sees it: the folder it was given and the settings it may change on resume.

A run folder is relocatable: copied or moved, it resumes into itself, and nothing outside it is written. The
checkpointed state still names the folder the run was started in, so the runner hands the graph a *view*
(`configurable.run_view` in the run config): the folder given, and the settings that change how models are
reached but never what they make (a critic's URL, a device, timeouts). Every node sees the state through the
view (`in_run_view` wraps them in `refineloop.graph_build`), so what it writes lands in the folder given and what
it returns is checkpointed with the new paths. Without a view (Studio, or a run in its own folder with its own
settings) the state is used as it is, at no cost.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from langgraph.config import get_config

from refineloop.backends.chat import critic_images
from refineloop.redaction import redact_deep, scrub_exception


def rewrite_paths(value: Any, source: str, target: str) -> Any:
    """`value` with every string naming `source` or a file in it pointed at `target` instead."""
    if isinstance(value, dict):
        return {key: rewrite_paths(item, source, target) for key, item in value.items()}
    if isinstance(value, list):
        return [rewrite_paths(item, source, target) for item in value]
    if isinstance(value, str) and (value == source or value.startswith(source + os.sep)):
        return target + value[len(source) :]
    return value


def make_view(values: dict[str, Any], run_dir: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The view of a checkpointed run opened from `run_dir` with `overrides`; {} when nothing differs."""
    view: dict[str, Any] = {}
    if values.get("run_dir") and values["run_dir"] != run_dir:
        view["run_dir"] = run_dir
    if overrides:
        view["settings"] = dict(overrides)
    return view


def apply_view(state: dict[str, Any], view: dict[str, Any] | None) -> dict[str, Any]:
    """`state` with its paths rebased on the view's folder and its settings overridden."""
    if not view or not state:
        return state
    seen = dict(state)
    folder = view.get("run_dir")
    if folder and seen.get("run_dir") and seen["run_dir"] != folder:
        seen = rewrite_paths(seen, seen["run_dir"], folder)
    if seen.get("settings") is not None and (folder or view.get("settings")):
        settings = {**seen["settings"], **view.get("settings", {})}
        if folder:
            settings["output_dir"] = folder
        seen["settings"] = settings
    return seen


def in_run_view(node: Callable[..., Any]) -> Callable[..., Any]:
    """`node`, reading its state through the run config's view (see the module docstring), with the run's
    critic working size in effect for the images it sends (refineloop.backends.chat.critic_images), and no
    secret in what it returns or raises (refineloop.redaction)."""

    @functools.wraps(node)
    def seen_through_view(state: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            view = get_config().get("configurable", {}).get("run_view")
        except RuntimeError:  # called outside a graph (tests call nodes directly): nothing to apply
            view = None
        seen = apply_view(state, view) if view else state
        size = (seen.get("settings") or {}).get("judge_image_size") if isinstance(seen, dict) else None
        token = critic_images.WORKING_SIZE.set(size or critic_images.DEFAULT_SIZE)
        try:
            # Secrets stop here on both ways out: the update goes into the checkpoint, and so does the text of
            # an exception (LangGraph records a failing node's error as a pending write).
            return redact_deep(node(seen, *args, **kwargs))
        except Exception as exc:
            scrub_exception(exc)  # in place: the same exception goes on, its text without secrets
            raise
        finally:
            critic_images.WORKING_SIZE.reset(token)

    return seen_through_view
