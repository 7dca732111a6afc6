"""Progress inside a long step, told to whoever listens, without knowing who that is.

Two kinds of progress happen inside a node, where the engine's per-node updates cannot see it: the denoising
steps of the images being drawn, and a judging phase that calls the critic several times (the final pick, a
DONE's confirmation, writing a checklist, the audit, judge-check). The code doing the work calls
`denoise_step` or `critic_call_done`; the listener a caller installed with `reporting` (the CLI's terminal,
through the engine) hears a `Progress` event. Without a listener every call here does nothing.

The listener and the phase travel in context variables: critic calls that fan out run in copies of the
caller's context (refineloop.backends.chat.fan_out), so their calls count toward the phase that made them.
Events may arrive from several threads at once: a listener must be thread-safe.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Progress:
    """Where a long step stands."""

    kind: str
    """`denoise` (steps of the images being drawn) or `calls` (critic calls of a judging phase)."""
    label: str
    """What is being done, for a person: `images 3-4`, `final pick`, `DONE check`."""
    done: int
    """Steps or calls finished so far."""
    total: int | None
    """How many there will be, when known."""
    started: float
    """When the step began (time.monotonic())."""
    finished: bool = False
    """The last event of this step: it is over (done may fall short of total when a budget cut it)."""


Listener = Callable[[Progress], None]

_LISTENER: contextvars.ContextVar[Listener | None] = contextvars.ContextVar("refineloop_progress", default=None)
_DRAWING: contextvars.ContextVar[str] = contextvars.ContextVar("refineloop_drawing", default="")
_PHASE: contextvars.ContextVar[_Phase | None] = contextvars.ContextVar("refineloop_phase", default=None)


@contextlib.contextmanager
def reporting(listener: Listener | None) -> Iterator[None]:
    """Send the progress of everything done inside the block (in this context) to `listener`."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def listening() -> bool:
    """Whether anyone hears progress here (a backend skips its per-step hook otherwise)."""
    return _LISTENER.get() is not None


def _tell(event: Progress) -> None:
    listener = _LISTENER.get()
    if listener is not None:
        listener(event)


@contextlib.contextmanager
def drawing(label: str) -> Iterator[None]:
    """Name the images drawn inside the block (`images 3-4`) for the denoising events of the backend."""
    token = _DRAWING.set(label)
    try:
        yield
    finally:
        _DRAWING.reset(token)


class DenoiseSteps:
    """The denoising steps of one pipeline call, reported as they finish."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.label = _DRAWING.get() or "image"

    def step(self, done: int, total: int | None = None) -> None:
        """Step `done` (1-based) has finished; `total` corrects the count when the pipeline knows better."""
        self.done, self.total = done, total or self.total
        _tell(Progress("denoise", self.label, done, self.total, self.started))

    def end(self) -> None:
        """The call is over (finished, or failed after `done` steps)."""
        _tell(Progress("denoise", self.label, self.done, self.total, self.started, finished=True))


class _Phase:
    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total = label, total
        self.done = 0
        self.started = time.monotonic()
        self.lock = threading.Lock()

    def event(self, *, finished: bool = False) -> Progress:
        return Progress("calls", self.label, self.done, self.total, self.started, finished)


@contextlib.contextmanager
def critic_phase(label: str, total: int | None = None) -> Iterator[None]:
    """A judging phase: the critic calls made inside the block count toward it, one event per call. A phase
    inside another (the duel of a DONE check inside the final pick) counts toward the outer one."""
    if _PHASE.get() is not None or not listening():
        yield
        return
    phase = _Phase(label, total)
    token = _PHASE.set(phase)
    _tell(phase.event())
    try:
        yield
    finally:
        _PHASE.reset(token)
        _tell(phase.event(finished=True))


def critic_call_done() -> None:
    """A critic call has been answered: count it toward the phase it belongs to, if any."""
    phase = _PHASE.get()
    if phase is None:
        return
    with phase.lock:
        phase.done += 1
        event = phase.event()
    _tell(event)


class HeldProgress:
    """A listener for work begun before anyone listens (the CLI's first image, drawn while the run starts up):
    it keeps the events until `hand_over` names the listener and the label of the context that takes the work
    over, then tells that listener everything kept, in order, and every event after it as it comes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: list[Progress] = []
        self._handed = False
        self._listener: Listener | None = None
        self._label = ""

    def __call__(self, event: Progress) -> None:
        with self._lock:  # held while telling: the kept events and the live ones reach the listener in order
            if not self._handed:
                self._kept.append(event)
            elif self._listener is not None:
                self._listener(self._relabelled(event))

    def hand_over(self) -> None:
        """From now on, tell the listener of the calling context (if any), under the label it draws with."""
        listener = _LISTENER.get()
        with self._lock:
            self._handed, self._listener, self._label = True, listener, _DRAWING.get()
            kept, self._kept = self._kept, []
            if listener is not None:
                for event in kept:
                    listener(self._relabelled(event))

    def _relabelled(self, event: Progress) -> Progress:
        return replace(event, label=self._label) if self._label else event
