"""Critic calls made at once see the caller's context (the run's drain, the critic's working size, the phase
that counts the calls), each in its own copy."""

from __future__ import annotations

import contextvars
import threading

from refineloop.backends.chat.fan_out import run_all

SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="nothing")


def test_calls_at_once_see_the_callers_context_and_leave_it_alone():
    SEEN.set("the caller's")
    started = threading.Barrier(3, timeout=10)

    def call() -> str:
        started.wait()  # all three in flight together: they really ran at once, on other threads
        value = SEEN.get()
        SEEN.set("changed inside")
        return value

    assert run_all([call, call, call], limit=3) == ["the caller's"] * 3
    assert SEEN.get() == "the caller's"
