"""Progress lines on a text stream: one line per judged image, the stop line, and the engine's notes.

The terminal (refineloop.cli.terminal) builds on it, and the local batch engine prints its items' images
with it; Ray runner actors print nothing.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from refineloop.apps.engine import EngineCallbacks
from refineloop.judges.audit import audit_lines
from refineloop.judges.final_pick import pick_headline
from refineloop.settings import RunSettings
from refineloop.state import score_words


class ProgressLines(EngineCallbacks):
    """Writes to `out`: each note, and per judged image its iteration, score, best so far, decision and time."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.cap = 0
        self.started = time.time()
        self.width = 2

    def note(self, line: str) -> None:
        """Write the line as it is."""
        self.out.write(line + "\n")
        self.out.flush()

    def begin(self, settings: RunSettings, started: float) -> None:
        """Remember the image cap and the run's start, which every progress line shows, and how wide a score is:
        a mean of samples or a checklist's pass rate has decimals (7.33), a single 1-10 score has none."""
        self.cap, self.started = settings.image_cap(), started
        self.width = 5 if settings.judge == "checklist" or settings.judge_samples > 1 else 2

    def step(self, node: str, update: dict[str, Any]) -> None:
        """A line when an image was accepted or rejected, and when the run stops."""
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
            for line in (pick_headline(update.get("final_pick")), *audit_lines(update.get("audit"))[:1]):
                if line:
                    self.out.write(line + "\n")
        self.out.flush()
