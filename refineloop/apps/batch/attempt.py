"""One attempt at one batch item: start it, resume it from its checkpoint, or leave it when finished.

`run_item` is the same for the local engine and for Ray runner actors; it holds the item exclusively through
the store and never raises for a run's own failure.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from refineloop.apps.batch.items import BatchItem, ItemResult, result_from_values
from refineloop.apps.batch.stores import Store
from refineloop.apps.engine import EngineCallbacks, check_images, execute, load_models
from refineloop.errors import RefineError, RunBusyError
from refineloop.settings import RunSettings

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.runtime import RunControl

    from refineloop.backends.model_cache import ModelCache
    from refineloop.state import RunInput


def run_item(
    item: BatchItem,
    settings: RunSettings,
    store: Store,
    models: ModelCache,
    *,
    callbacks: EngineCallbacks | None = None,
    control: RunControl | None = None,
) -> ItemResult:
    """Start, resume or skip one item, holding it exclusively; never raises for a run's own failure.

    A finished item is returned untouched. One with a checkpoint continues from it (the interrupted node
    re-runs from its top, so an image is remade into its own file, never added twice to the state). Runs in
    any thread: unlike the terminal runner it installs no signal handlers, and `control` (when given)
    drains it. `callbacks` hear the run (the local engine prints its progress); nobody answers review
    questions, so an item that asks one fails (and stays resumable).
    """
    try:
        with store.hold(item) as saver:
            result = _run_held(item, settings, saver, models, callbacks, control)
    except RunBusyError as exc:
        return ItemResult(item.thread_id, "busy", error=str(exc), worker=f"{socket.gethostname()}:{os.getpid()}")
    if result.status != "busy":
        store.finished(item, result)
    return result


def _run_held(
    item: BatchItem,
    settings: RunSettings,
    saver: BaseCheckpointSaver[str],
    models: ModelCache,
    callbacks: EngineCallbacks | None,
    control: RunControl | None,
) -> ItemResult:
    from langgraph.runtime import RunControl

    from refineloop.graph_build import build_graph
    from refineloop.nodes.setup import initial_state
    from refineloop.run_folder.folder import write_meta
    from refineloop.run_start import resolve_settings

    config: RunnableConfig = {"configurable": {"thread_id": item.thread_id}}
    values = build_graph(settings.strategy, saver).get_state(config).values
    resumed_after: int | None = None
    try:
        if values.get("status") == "done":
            return result_from_values(item.thread_id, "done", values)
        if values.get("settings"):
            settings = RunSettings.from_state(values["settings"])
            check_images(values)
            given: RunInput | None = None
            resumed_after = int(values.get("iteration") or 0)
        else:
            settings, task = resolve_settings(settings)
            given = initial_state(settings, task)
            write_meta(settings.output_dir, item.thread_id, settings.strategy, loras=settings.lora)
        load_models(models, settings, EngineCallbacks())  # loading is not worth a line per item
    except RefineError as exc:
        return result_from_values(item.thread_id, "failed", values, error=str(exc), resumed_after=resumed_after)
    outcome = execute(
        settings, given, item.thread_id, models, saver, callbacks=callbacks, control=control or RunControl()
    )
    status, error = outcome.status, outcome.error
    if status == "done" and outcome.values.get("status") != "done":
        status, error = "failed", f"the run stopped before its end ({outcome.values.get('stop_reason') or 'no reason'})"
    return result_from_values(item.thread_id, status, outcome.values, error=error, resumed_after=resumed_after)
