"""The driver (`run_ray`): registers the batch in the store (the Postgres runs table, or the batch folder), keeps a
bounded number of runs in flight on the runner actors, resubmits runs that come back busy (a dying process still
held their lock) and writes the summary. It holds the batch's lock, so two drivers never run one batch."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import ray

from refineloop.apps.batch import BatchItem, BatchPlan, ItemResult, SummaryRow, summarize, write_summary
from refineloop.apps.batch.items import not_run_line, score_text
from refineloop.backends.checks import all_warnings
from refineloop.errors import SettingsError
from refineloop.scale import check_storage
from refineloop.scale.ray.connect import connect
from refineloop.scale.ray.deploy import cluster_gpus, deploy_generator
from refineloop.scale.ray.options import EngineOptions
from refineloop.scale.ray.reasons import reason
from refineloop.scale.ray.runners import start_runners
from refineloop.settings import RunSettings


def _one_image_model(plan: BatchPlan) -> RunSettings:
    """The settings the generator is built from; every item must agree on the image model."""
    first = plan.settings_for(plan.items[0])
    for item in plan.items[1:]:
        other = plan.settings_for(item)
        if (other.image_model, other.device, other.dtype) != (first.image_model, first.device, first.dtype):
            raise SettingsError(
                f"{item.source} uses image model {other.image_model} but the batch's generator serves "
                f"{first.image_model}: a Ray batch uses one image model (split the goals file)"
            )
    return first


def _storage(url: str, plan: BatchPlan) -> str:
    if not url:
        return f"SQLite in {plan.batch_dir}"
    from refineloop.apps.postgres import where

    return f"postgres {where(url)}"


def run_ray(
    plan: BatchPlan,
    url: str,
    options: EngineOptions,
    *,
    out: TextIO,
    on_ready: Callable[[list[Any]], None] | None = None,
) -> list[SummaryRow]:
    """Run a batch on Ray; returns (and writes) the summary. Checkpoints and the queue live in Postgres when
    `url` names one, else in the batch folder, which only a Ray on this machine alone may share.

    `on_ready` is called with the runner actors once they are up (tests use it to kill one).
    """
    from refineloop.apps.batch import open_store

    options.check()
    check_storage(url, options.address)
    generator_settings = _one_image_model(plan)
    store = open_store(url, plan.batch_dir, pool_size=2)
    started = time.time()
    joined = False
    runners: list[Any] = []
    try:
        # One driver per batch: a second one would submit every run twice (their locks would refuse the copies).
        store.claim_batch(plan.batch_id)
        store.register(plan.batch_id, plan.items)
        joined = connect(options)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        out.write(
            f"ray: {len(nodes)} node(s), {cluster_gpus()} GPU(s)   checkpoints and queue: {_storage(url, plan)}\n"
        )
        out.flush()
        _handle, info = deploy_generator(generator_settings, options)
        replicas = options.replicas or max(1, cluster_gpus())
        out.write(
            f"generator: {replicas} replica(s) of {info['name']} on {info['placement']}, batches of up to "
            f"{options.max_batch_size}\nrunners: {options.runners} x {options.runs_per_runner} runs\n"
        )
        out.flush()
        runners = start_runners(url, plan.batch_dir, options)
        if on_ready is not None:
            on_ready(runners)
        try:
            _drive(plan, store, runners, options, out)
        except KeyboardInterrupt:
            out.write("\nstopped: unfinished runs resume from their last image when the same command runs again\n")
        rows = summarize(plan, store)
    finally:
        for runner in runners:
            # Runs still in flight stop mid-step here; their checkpoints carry them on the next start.
            ray.kill(runner, no_restart=True)
        store.close()
        if joined:
            ray.shutdown()
    out.write("\n" + write_summary(plan, rows, time.time() - started))
    out.flush()
    return rows


def announce(plan: BatchPlan, todo: Iterable[BatchItem], out: TextIO) -> None:
    """What the local engine says before items run, said once up front: goals that will not run, and each
    item's settings warnings (the runners' output stays on their hosts, so the driver is where users look)."""
    for rejected in plan.rejected:
        out.write(not_run_line(rejected) + "\n")
    for item in todo:
        for warning in all_warnings(plan.settings_for(item)):
            out.write(f"[{item.index:03d}] {item.shown}: {warning}\n")
    out.flush()


def _drive(plan: BatchPlan, store: Any, runners: list[Any], options: EngineOptions, out: TextIO) -> None:
    """Keep up to runners x runs_per_runner runs in flight until every item is finished or given up on."""
    records = store.records(plan.batch_id)
    todo = collections.deque(
        item
        for item in plan.items
        if records.get(item.thread_id, {}).get("status") != "done" and store.values(item).get("status") != "done"
    )
    finished = len(plan.items) - len(todo)
    total = len(plan.items)
    if finished:
        out.write(f"{finished} of {total} items finished earlier, left as they are\n")
    announce(plan, todo, out)
    capacity = len(runners) * options.runs_per_runner
    load = [0] * len(runners)
    in_flight: dict[Any, tuple[BatchItem, int]] = {}
    not_before: dict[str, float] = {}
    busy_since: dict[str, float] = {}
    lost: dict[str, int] = collections.Counter()
    while todo or in_flight:
        now = time.monotonic()
        for _ in range(len(todo)):
            if len(in_flight) >= capacity:
                break
            item = todo.popleft()
            if not_before.get(item.thread_id, 0.0) > now:
                todo.append(item)
                continue
            slot = min(range(len(runners)), key=load.__getitem__)
            job = {"item": item.to_dict(), "settings": plan.settings_for(item).to_dict()}
            in_flight[runners[slot].run.remote(job)] = (item, slot)
            load[slot] += 1
        if not in_flight:
            time.sleep(0.2)
            continue
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
        for ref in ready:
            item, slot = in_flight.pop(ref)
            load[slot] -= 1
            try:
                result = ItemResult(**ray.get(ref))
            except ray.exceptions.RayError as exc:
                # The runner died more often than Ray retries: try again later, a bounded number of times.
                lost[item.thread_id] += 1
                if lost[item.thread_id] <= 3:
                    not_before[item.thread_id] = time.monotonic() + 1.0
                    todo.append(item)
                    continue
                result = ItemResult(item.thread_id, "failed", error=f"its runner kept failing ({reason(exc)})")
                store.finished(item, result)
            if result.status == "busy":
                # Usually a process that is dying (its session, and lock, end in a moment): ask again shortly.
                since = busy_since.setdefault(item.thread_id, time.monotonic())
                if time.monotonic() - since < options.busy_timeout_s:
                    not_before[item.thread_id] = time.monotonic() + 1.0
                    todo.append(item)
                    continue
                out.write(f"[{item.index:03d}] {item.shown}: still locked by another process, skipped\n")
                continue
            finished += 1
            best = f"best {score_text(result.best_score)}" if result.best_score is not None else "no score"
            note = f"; {result.error}" if result.error else ""
            out.write(
                f"[{finished}/{total}] {item.shown}: {result.status}, {best}, {result.images} images, "
                f"{result.seconds:.1f}s ({result.worker}){note}\n"
            )
            out.flush()
