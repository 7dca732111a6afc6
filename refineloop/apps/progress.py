"""Progress lines on a text stream: one line per judged image, the stop line, and the engine's notes.

The terminal (refineloop.cli.terminal) builds on it, and the local batch engine prints its items' images
with it; Ray runner actors print nothing.

Progress inside a long step (refineloop.progress_events) is drawn by `LiveLine`: on a terminal one line that
updates in place (carriage return) and is wiped when the step ends or another line is written; elsewhere (a
pipe, a log file) plain lines only, with no carriage return, and only for steps that take a while: a judging
phase gets a line once it has run PLAIN_AFTER seconds, then one at most every PLAIN_EVERY seconds, and one when
it ends; a drawing that took PLAIN_AFTER seconds or more gets one line when it is done.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any, TextIO

from refineloop.apps.engine import EngineCallbacks
from refineloop.judges.audit import audit_lines
from refineloop.judges.final_pick import pick_headline
from refineloop.progress_events import Progress
from refineloop.settings import RunSettings
from refineloop.state import score_words, walk_lines
from refineloop.visible_text import WIPE_LINE

#: When the output is not a terminal: a judging phase or a drawing that takes less than PLAIN_AFTER seconds gets
#: no line, and a longer phase gets one at most every PLAIN_EVERY seconds, and one when it ends.
PLAIN_AFTER = 1.0
PLAIN_EVERY = 10.0


def is_terminal(stream: TextIO) -> bool:
    """Whether `stream` is a terminal (a closed or odd stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _rate(event: Progress, unit: str) -> str:
    """`0.41 s/step, 7.4 s left` from the event's pace so far ("" before the first step)."""
    if event.done <= 0:
        return ""
    each = (time.monotonic() - event.started) / event.done
    text = f", {each:.2f} s/{unit}"
    if event.total and event.total > event.done:
        text += f", {each * (event.total - event.done):.1f} s left"
    return text


def live_text(event: Progress) -> str:
    """The updating line of a step in progress."""
    if event.kind == "denoise":
        of = f" of {event.total}" if event.total else ""
        return f"  drawing {event.label}: step {event.done}{of}{_rate(event, 'step')}"
    of = f" of {event.total}" if event.total else ""
    return f"  {event.label}: critic call {event.done}{of}{_rate(event, 'call')}"


def plain_text(event: Progress) -> str | None:
    """The plain line for an event when the output is not a terminal; None for an event that gets none."""
    seconds = time.monotonic() - event.started
    if event.kind == "denoise":
        if not event.finished:
            return None
        each = f" ({seconds / event.done:.2f} s/step)" if event.done else ""
        return f"  drew {event.label}: {event.done} steps in {seconds:.1f} s{each}"
    calls = f"{event.total} critic calls" if event.total else "critic calls"
    if event.finished:
        return f"  {event.label}: {event.done} critic calls in {seconds:.1f} s"
    if event.done == 0:
        return f"  {event.label}: {calls}..."
    of = f" of {event.total}" if event.total else ""
    return f"  {event.label}: {event.done}{of} critic calls, {seconds:.1f} s"


def write_control(out: TextIO, code: str) -> None:
    """Write one of refineloop's own terminal codes: through the output boundary's own door where it has one
    (everything else written there is made visible, escapes dropped), as it is on a plain stream."""
    door = getattr(out, "write_control", None)
    if callable(door):
        door(code)
    else:
        out.write(code)


class LiveLine:
    """Draws progress events on `out` (see the module notes); thread-safe, since critic calls fan out."""

    def __init__(self, out: TextIO, live: bool | None = None) -> None:
        self.out = out
        self.live = is_terminal(out) if live is None else live
        self.lock = threading.RLock()
        self.shown = False
        self.last_plain = 0.0
        self.plain_step: tuple[str, str, float] | None = None

    def __call__(self, event: Progress) -> None:
        with self.lock:
            if self.live:
                self._draw(event)
            else:
                self._plain(event)

    def _draw(self, event: Progress) -> None:
        if event.finished:
            self.wipe()
            return
        write_control(self.out, WIPE_LINE)
        self.out.write(live_text(event))
        self.out.flush()
        self.shown = True

    def _plain(self, event: Progress) -> None:
        now = time.monotonic()
        ongoing = self.plain_step == (event.kind, event.label, event.started)
        if event.finished:
            # A step that said nothing while it ran was quick: it ends without a line either.
            due = ongoing or (event.kind == "denoise" and now - event.started >= PLAIN_AFTER)
        elif event.kind == "calls":
            due = now - (self.last_plain if ongoing else event.started) >= (PLAIN_EVERY if ongoing else PLAIN_AFTER)
        else:
            due = False  # a drawing gets one line, when it is done
        line = plain_text(event) if due else None
        if line:
            self.out.write(line + "\n")
            self.out.flush()
            self.last_plain = now
            self.plain_step = None if event.finished else (event.kind, event.label, event.started)

    def wipe(self) -> None:
        """Take the updating line off the screen, so the next line starts on a clean one."""
        with self.lock:
            if self.shown:
                write_control(self.out, WIPE_LINE)
                self.out.flush()
                self.shown = False


class WipingWriter(io.TextIOBase):
    """A text stream that takes the live line off the screen before each write, for code that prints lines of
    its own while progress is drawn (judge-check's per-image lines)."""

    def __init__(self, out: TextIO, live: LiveLine) -> None:
        super().__init__()
        self.out, self.live = out, live

    def write(self, text: str) -> int:
        with self.live.lock:
            self.live.wipe()
            return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


class ProgressLines(EngineCallbacks):
    """Writes to `out`: each note, per judged image its iteration, score, best so far, decision and time, and
    the progress inside long steps (`LiveLine`)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.cap = 0
        self.started = time.time()
        self.width = 2
        self.live = LiveLine(out)

    def progress(self, event: Progress) -> None:
        """Draw it on the updating line (a terminal), or as a plain line now and then."""
        self.live(event)

    def note(self, line: str) -> None:
        """Write the line as it is."""
        with self.live.lock:
            self.live.wipe()
            self.out.write(line + "\n")
            self.out.flush()

    def begin(self, settings: RunSettings, started: float) -> None:
        """Remember the image cap and the run's start, which every progress line shows, and how wide a score is:
        a mean of samples or a checklist's pass rate has decimals (7.33), a single 1-10 score has none."""
        self.cap, self.started = settings.image_cap(), started
        self.width = 5 if settings.judge == "checklist" or settings.judge_samples > 1 else 2

    def step(self, node: str, update: dict[str, Any]) -> None:
        """A line when an image was accepted or rejected, and when the run stops."""
        with self.live.lock:
            self.live.wipe()
            self._step(node, update)

    def _step(self, node: str, update: dict[str, Any]) -> None:
        # The baseline node judges the user's own picture (--init-image) as image 0, before any image is drawn.
        if (node.startswith("accept_") or node == "baseline") and update.get("history"):
            entry = update["history"][-1]
            score = score_words(entry["score"])
            leader = entry["best_iteration"]
            best = f"{score_words(entry['best_score'])} (#{leader})" if leader is not None else "-"
            extra = f"  T={entry['temperature']:.2f}" if entry.get("temperature") is not None else ""
            self.out.write(
                f"[{entry['iteration']:>2}/{self.cap}] score {score:>{self.width}}/10  best {best:<{self.width + 6}} "
                f"{entry['decision']:<14}{time.time() - self.started:6.1f}s{extra}\n"
            )
        elif node == "stop":
            self.out.write(f"stopped: {update.get('stop_reason')}\n")
            headlines = (*walk_lines(update.get("walk_finish")), pick_headline(update.get("final_pick")))
            for line in (*headlines, *audit_lines(update.get("audit"))[:1]):
                if line:
                    self.out.write(line + "\n")
        self.out.flush()
