"""The local batch engine: the items one after another in this process, each item's images shown as they are
judged, the first Ctrl-C finishing the current image and stopping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from refineloop.apps.batch.attempt import run_item
from refineloop.apps.batch.items import BatchItem, ItemResult, not_run_line, score_text
from refineloop.apps.batch.plan import BatchPlan
from refineloop.apps.batch.stores import Store
from refineloop.apps.batch.summary import SUMMARY_TEXT, SummaryRow, summarize, write_summary
from refineloop.apps.progress import ProgressLines
from refineloop.apps.stop_signals import ctrl_c_drains
from refineloop.backends.checks import all_warnings

if TYPE_CHECKING:
    from refineloop.backends.model_cache import ModelCache


def run_local(
    plan: BatchPlan,
    store: Store,
    *,
    models: ModelCache | None = None,
    out: TextIO,
    on_item: Callable[[BatchItem, ItemResult], None] | None = None,
) -> list[SummaryRow]:
    """Run the items one after another in this process; the first Ctrl-C finishes the current image and stops.

    Returns the summary rows (also written to the batch folder). `on_item` is told after each attempt.
    """
    from langgraph.runtime import RunControl

    from refineloop.backends.model_cache import MODELS

    cache = models or MODELS
    progress = ProgressLines(out)
    # One driver per batch: a second one started beside it is refused (RunBusyError, one line) before any item.
    store.claim_batch(plan.batch_id)
    store.register(plan.batch_id, plan.items)
    started = time.time()
    control = RunControl()
    # Signal handlers can only be installed from the main thread (tests and embedders may call from others).
    guard = (
        ctrl_c_drains(control, progress.note)
        if threading.current_thread() is threading.main_thread()
        else nullcontext()
    )
    total = len(plan.items)
    for item in plan.rejected:
        out.write(not_run_line(item) + "\n")
    try:
        with guard:
            for n, item in enumerate(plan.items, start=1):
                values = store.values(item)
                if values.get("status") == "done":
                    out.write(f"[item {n}/{total}] {item.shown}: finished earlier, left as it is\n")
                    continue
                verb = f"resuming after image {values.get('iteration', 0)}" if values else "starting"
                out.write(f"[item {n}/{total}] {item.shown}: {verb} -> {item.run_dir}\n")
                for warning in all_warnings(plan.settings_for(item)):
                    out.write(f"[item {n}/{total}] {warning}\n")
                out.flush()
                result = run_item(item, plan.settings_for(item), store, cache, callbacks=progress, control=control)
                if result.status == "busy":
                    out.write(f"[item {n}/{total}] skipped: {result.error}\n")
                    continue
                best = f"best {score_text(result.best_score)}" if result.best_score is not None else "no score"
                line = f"[item {n}/{total}] {result.status}: {best}, {result.images} images, {result.seconds:.1f}s"
                out.write(line + (f"; {result.error}" if result.error else "") + "\n")
                out.flush()
                if on_item is not None:
                    on_item(item, result)
                if result.status == "interrupted":
                    break
    except KeyboardInterrupt:
        # A second Ctrl-C between two items: nothing is mid-step, the summary below says what is left.
        out.write("stopped\n")
    rows = summarize(plan, store)
    out.write("\n" + write_summary(plan, rows, time.time() - started))
    out.write(f"summary: {Path(plan.batch_dir) / SUMMARY_TEXT}\n")
    out.flush()
    return rows
