"""Stop signals while a run works: the first one drains the graph, the next one stops at once.

Ctrl-C (SIGINT), what `kill`, `timeout`, systemd, Slurm and container runtimes send (SIGTERM) and a closed
terminal (SIGHUP) all stop alike. Handlers can only be installed from the main thread: elsewhere each block
runs with none, and the caller drains through its own `RunControl`.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langgraph.runtime import RunControl

#: Exit status of a process stopped before anything was made (the shell's 128 + SIGINT).
EXIT_STOPPED = 130

#: What stops a run: Ctrl-C, SIGTERM, or a closed terminal (SIGHUP). All three drain alike.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def raise_interrupt(signum: int, frame: Any) -> None:
    """A stop signal as KeyboardInterrupt, so whatever runs unwinds (and cleans up) as for Ctrl-C. The stop
    signals after it are ignored until whoever installed this handler puts the previous ones back: the
    clean-up, and the one line that says what was kept, must not be cut short by a third Ctrl-C."""
    ignore_stop_signals()
    raise KeyboardInterrupt


def ignore_stop_signals() -> None:
    """Every stop signal does nothing from now on (in the main thread; elsewhere this does nothing). A Python
    handler that returns, not SIG_IGN: a signal already on its way when SIG_IGN is set makes Python raise
    "signal ignored due to race condition" instead."""
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError):
            signal.signal(sig, _ignored)


def _ignored(signum: int, frame: Any) -> None:
    """A stop signal after the one being handled: the process is already on its way out."""


@contextmanager
def stop_ends_loading(note: str, cleanup: Callable[[], object] | None = None) -> Iterator[None]:
    """While models load, a stop signal ends the process at once, in one line, after `cleanup`.

    A KeyboardInterrupt raised in the middle of importing torch or diffusers can leave half-initialised
    modules behind that fail in odd ways (a recursion error, say) instead of unwinding: nothing has been
    made yet that a drain could finish, so the handler cleans up and exits without unwinding the import.
    """

    def end(signum: int, frame: Any) -> None:
        if cleanup is not None:
            cleanup()
        os.write(2, f"refineloop: stopped before the first image: {note}\n".encode())
        os._exit(EXIT_STOPPED)

    with on_stop_signals(end):  # off the main thread the caller's own stop handling applies
        yield


@contextmanager
def ctrl_c_drains(control: RunControl, say: Callable[[str], None]) -> Iterator[None]:
    """The first stop signal drains the graph (and `say`s so); the next one raises KeyboardInterrupt."""

    def first(signum: int, frame: Any) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        say(f"\n{name}: finishing the current step, then stopping (Ctrl-C again to stop now)")
        control.request_drain(name.lower())
        for sig in STOP_SIGNALS:
            signal.signal(sig, raise_interrupt)

    with on_stop_signals(first):  # off the main thread the caller drains through its own control
        yield


@contextmanager
def on_stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """`handler` for every stop signal during the block, the previous handlers after it. Only the main thread
    may install handlers: elsewhere the block runs with none installed."""
    try:
        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def ctrl_c_raises() -> Iterator[None]:
    """While a question waits for a person, Ctrl-C stops at once: draining has nothing to finish, and the drain
    handler would leave the read blocked until Enter."""
    try:
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread: signals cannot be handled here anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
