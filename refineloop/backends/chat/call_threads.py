"""Daemon threads that critic calls run in, kept and reused from call to call.

Each critic call runs in a thread of its own so the node's thread can stop waiting for it (a timeout, a drain:
refineloop.backends.chat.invoke). Starting a thread per call cost about 0.17 ms, a third of the graph's own
time per image with a fast critic; an idle thread here takes the next call instead. A thread whose call was
abandoned stays busy until that call returns, and a new thread is started whenever none is idle, so an
abandoned call never delays a later one. The threads are daemons: a hung call never holds the process at exit.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable

Job = Callable[[], None]


class CallThreads:
    """A pool of daemon threads that grows when every thread is busy and never blocks a caller."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._idle = 0

    def run(self, job: Job) -> None:
        """Hand `job` to an idle thread, or to a new one when none is idle; returns at once."""
        with self._lock:
            start_one = self._idle == 0
            if not start_one:
                self._idle -= 1
        self._jobs.put(job)
        if start_one:
            threading.Thread(target=self._serve, name=self.name, daemon=True).start()

    def forget_threads(self) -> None:
        """After a fork the child has none of the parent's threads: count none idle, drop queued jobs."""
        self._lock = threading.Lock()
        self._jobs = queue.SimpleQueue()
        self._idle = 0

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            # A job hands its own outcome back to its caller; whatever escapes it must not end the thread.
            with contextlib.suppress(BaseException):
                job()
            with self._lock:
                self._idle += 1


#: The threads every critic call runs in.
CRITIC_CALLS = CallThreads("critic-call")
os.register_at_fork(after_in_child=CRITIC_CALLS.forget_threads)
