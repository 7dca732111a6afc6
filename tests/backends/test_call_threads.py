"""The threads critic calls run in: reused when idle, never making a call wait behind an abandoned one."""

from __future__ import annotations

import threading
import time

from refineloop.backends.chat.call_threads import CallThreads


def run_and_wait(pool: CallThreads) -> int:
    """Run a job that records its thread, wait for it, return the thread's ident."""
    seen: list[int] = []
    done = threading.Event()

    def record() -> None:
        seen.append(threading.get_ident())
        done.set()

    pool.run(record)
    assert done.wait(5)
    return seen[0]


def test_an_idle_thread_takes_the_next_call() -> None:
    pool = CallThreads("test-calls")
    first = run_and_wait(pool)
    assert all(run_and_wait(pool) == first for _ in range(20))
    assert first != threading.get_ident()


def test_a_hung_call_never_delays_the_next_one() -> None:
    pool = CallThreads("test-calls")
    release = threading.Event()
    hung_on: list[int] = []

    def hang() -> None:
        hung_on.append(threading.get_ident())
        release.wait(30)

    pool.run(hang)
    try:
        later = run_and_wait(pool)  # would time out if it queued behind the hung call
        assert hung_on and later != hung_on[0]
    finally:
        release.set()


def test_a_job_that_raises_leaves_its_thread_serving() -> None:
    pool = CallThreads("test-calls")

    def boom() -> None:
        raise RuntimeError("the job's own error")

    first = run_and_wait(pool)
    pool.run(boom)
    time.sleep(0.2)  # let the raising job end, so its thread is idle again when the next call comes
    assert run_and_wait(pool) == first
