"""Critic calls that do not depend on each other, made at the same time.

The candidates of a best-of-N round, the two orders of a duel and the samples of `--judge-samples` each wait
on the critic's server, not on this process; a server with parallel slots (`OLLAMA_NUM_PARALLEL`, vLLM,
llama.cpp's `--parallel`) answers them together. `run_all` starts up to `limit` of them at once and returns
their results in the order given, so whatever order the answers arrive in, the run applies them in the same
order and decides the same way; a resumed run is unchanged.

Each call runs in a copy of the caller's context, so the run config (the drain on Ctrl-C), the critic's
working size and the per-call timeout reach it as they would a call made in line.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


_INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("refineloop_fan_out", default=False)


def run_all(calls: Sequence[Callable[[], T]], limit: int) -> list[T]:
    """Run `calls`, up to `limit` at a time, and return their results in order. If any raises, every call is
    still awaited (none is left running against the run's files), then the first failure in order is raised.

    A fan-out inside another (the samples of each of a round's candidates) runs its calls one after another,
    so `limit` bounds the calls in flight, not only those of one level."""
    if limit <= 1 or len(calls) <= 1 or _INSIDE.get():
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(limit, len(calls)), thread_name_prefix="refineloop-critic") as pool:
        # A copy of the caller's context per call, taken here in the caller's thread (a worker's own context is
        # empty), and one each: a context cannot be entered by two threads at once.
        futures = [pool.submit(contextvars.copy_context().run, _inside, call) for call in calls]
        for future in futures:
            future.exception()  # wait for every call before looking at any failure
    return [future.result() for future in futures]


def _inside(call: Callable[[], T]) -> T:
    _INSIDE.set(True)  # inside the call's own context copy: the caller's stays as it was
    return call()
