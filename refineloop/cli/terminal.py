"""The terminal as the engine's listener: progress lines, review questions asked on standard input, and the
closing lines that say where the run's files are and how to resume it.

With `--review` the graph pauses before each next image; the terminal shows the question, reads the
person's answer (approve / edit / checklist / stop) and the engine goes on with it. End of input is no
answer: the run stays paused at that question (status "paused", exit code 3) and `refineloop resume RUN_DIR`
asks it again, so a script that closes stdin neither hangs nor ends the run on the person's behalf.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, TextIO

from refineloop.apps.engine import NoAnswer, Outcome
from refineloop.apps.progress import ProgressLines
from refineloop.apps.stop_signals import ctrl_c_raises
from refineloop.cli.output import reader_gone
from refineloop.nodes.review import ALIASES
from refineloop.state import score_words

#: What a closed standard input leaves the run as.
NO_ANSWER = "no answer on standard input: the run is paused at this review question"


class Terminal(ProgressLines):
    """Progress and notes on `out`, review questions answered from `inp` (standard input by default), and
    where the run's files are once it stops."""

    def __init__(self, out: TextIO, inp: TextIO | None = None) -> None:
        super().__init__(out)
        self.reviewer = TerminalReviewer(inp or sys.stdin, out)

    def review(self, question: dict[str, Any]) -> dict[str, Any]:
        """Ask the person; NoAnswer at the end of input."""
        return self.reviewer(question)

    def end(self, outcome: Outcome) -> None:
        """The best image, the folder, and the resume command of a run that did not finish."""
        if reader_gone(self.out):
            self._end_unread(outcome)
            return
        self.live.wipe()
        best = outcome.values.get("best")
        if best:
            where = Path(outcome.run_dir) / "best.png"
            self.out.write(f"best: image {best['iteration']} scored {score_words(best['score'])}/10 -> {where}\n")
        if not outcome.values.get("settings"):
            return  # nothing a resume could continue from was checkpointed: there is nothing to look at or resume
        self.out.write(f"files: {outcome.run_dir}\n")
        if outcome.status != "done":
            self.out.write(f"resume with: refineloop resume {outcome.run_dir}\n")
        self.out.flush()

    def _end_unread(self, outcome: Outcome) -> None:
        """Nobody reads the output any more: the one line that matters goes to standard error."""
        if not outcome.values.get("settings"):
            return
        if outcome.status == "done":
            line = f"the output was closed; the run finished: its files are in {outcome.run_dir}"
        else:
            after = outcome.values.get("iteration", 0)
            line = (
                f"the output was closed, so the run stopped after image {after}: it is kept; resume it with "
                f"`refineloop resume {outcome.run_dir}`"
            )
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"refineloop: {line}\n")
            sys.stderr.flush()


class TerminalReviewer:
    """Shows a review payload (`refineloop.nodes.review.review_payload`) and reads approve / edit / stop."""

    def __init__(self, inp: TextIO, out: TextIO) -> None:
        self.inp, self.out = inp, out

    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The answer to resume the graph with; NoAnswer at end of input."""
        self.out.write(format_review(payload))
        checklist = "checklist" in payload  # offered only to runs judged by a checklist
        menu = (
            "[a]pprove / [e]dit prompt / [c]hecklist / [s]top: "
            if checklist
            else "[a]pprove / [e]dit prompt / [s]top: "
        )
        while True:
            choice = self._ask(menu)
            action = ALIASES.get(choice.lower())
            if action == "edit":
                prompt = self._ask("new prompt: ")
                if prompt:
                    return {"action": "edit", "prompt": prompt}
                self.out.write("an empty prompt changes nothing: choose again\n")
            elif action == "checklist" and checklist:
                questions = self._ask_lines(
                    "new checklist, one question a line ('question | 2' weighs it 2), an empty line to end:"
                )
                if questions:
                    return {"action": "checklist", "questions": questions}
                self.out.write("an empty checklist changes nothing: choose again\n")
            elif action and action != "checklist":
                return {"action": action}
            else:
                self.out.write(f"'{choice}' is not a choice: type a, e{', c' if checklist else ''} or s\n")

    def _ask_lines(self, question: str) -> list[str]:
        """Lines up to the first empty one (or the end of input once some were given)."""
        self.out.write(question + "\n")
        lines: list[str] = []
        while True:
            try:
                line = self._ask("  > ")
            except NoAnswer:
                if lines:
                    return lines
                raise
            if not line:
                return lines
            lines.append(line)

    def _ask(self, question: str) -> str:
        self.out.write(question)
        self.out.flush()
        try:
            with ctrl_c_raises():
                line = self.inp.readline()
        except KeyboardInterrupt:
            self.out.write("\n")  # the report that follows starts on a line of its own
            raise
        if not line:
            self.out.write("\n")
            raise NoAnswer(NO_ANSWER)
        if not _isatty(self.inp):
            # Piped answers are not echoed by a terminal; showing them keeps a log readable.
            self.out.write(line if line.endswith("\n") else line + "\n")
        return line.strip()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_review(payload: dict[str, Any]) -> str:
    """The payload as a few readable lines."""
    score = "?" if payload.get("score") is None else payload["score"]
    best = f"{payload['best_score']}/10 (#{payload['best_iteration']})" if payload.get("best_iteration") else "-"
    lines = [
        f"--- review of image {payload.get('iteration')}/{payload.get('cap')}: score {score}/10, "
        f"{payload.get('verdict')}, {payload.get('decision') or 'judged'}; best {best}",
        f"  image:       {payload.get('image')}",
        f"  critique:    {payload.get('critique') or '-'}",
        f"  next prompt: {payload.get('next_prompt')}   (from the {payload.get('next_from')})",
    ]
    for n, question in enumerate(payload.get("checklist") or [], start=1):
        lines.append(
            f"  {'checklist:' if n == 1 else '':<12} {n}. {question['question']} (weight {question['weight']:g})"
        )
    if payload.get("problem"):
        lines.append(f"  problem:     {payload['problem']}")
    return "\n".join(lines) + "\n"
