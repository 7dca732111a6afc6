"""Running the graph for a person: a run folder, SQLite checkpoints, Ctrl-C, progress and artifacts.

The first Ctrl-C asks LangGraph to drain: the node in progress finishes, its checkpoint is written, and
the run stops. A second Ctrl-C stops at once; the interrupted node re-runs from its top on resume. Either
way best.png, summary.txt and collage.png are written from the last checkpoint and the exact resume
command is printed.

With `--review` the graph pauses before each next image (`refineloop.nodes.review`): the stream ends with an
`__interrupt__` update, the runner shows its payload, reads the person's answer from standard input and goes on
with `Command(resume=answer)`. End of input is no answer: the run stays paused at that question (status
"paused", exit code 3) and `refineloop resume RUN_DIR` asks it again, so a script that closes stdin neither
hangs nor ends the run on the person's behalf.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.errors import GraphDrained
from langgraph.runtime import RunControl
from langgraph.types import Command

from refineloop.backends.chat.text_safety import redact
from refineloop.backends.model_cache import MODELS, ModelCache
from refineloop.errors import RefineError, RunFolderError, SettingsError
from refineloop.graph import build_graph
from refineloop.judges.audit import audit_lines, auditor_settings
from refineloop.judges.final_pick import pick_headline
from refineloop.nodes.review import ALIASES
from refineloop.nodes.setup import initial_state, resolve_settings
from refineloop.run_folder.artifacts import image_problem, write_artifacts
from refineloop.run_folder.folder import (
    connect,
    database_error,
    locked,
    new_run_folder,
    read_meta,
    read_values,
    run_saver,
    write_meta,
)
from refineloop.run_folder.report import REPORT_NAME
from refineloop.run_folder.safe_io import write_text_atomic
from refineloop.run_view import apply_view, make_view
from refineloop.settings import RunSettings

#: Each image takes 4-5 super-steps; a cap well above any image limit keeps `--max-iterations 0` safe.
STEPS_PER_IMAGE = 8

EXIT_OK, EXIT_FAILED, EXIT_PAUSED, EXIT_INTERRUPTED = 0, 1, 3, 130

#: Strategies whose graph has the review node; the agent modes steer themselves.
REVIEWED_STRATEGIES = ("greedy", "climbing", "annealing", "img2img")


@dataclass
class Outcome:
    """How a run ended, for the CLI and for tests."""

    run_dir: str
    status: str
    """done, interrupted, paused (waiting for a review answer) or failed."""
    exit_code: int
    values: dict[str, Any]
    error: str = ""
    """The one-line reason of a failed run."""


class Progress:
    """One line per judged image: iteration, score, best so far, decision, elapsed time."""

    def __init__(self, out: TextIO, cap: int, started: float) -> None:
        self.out, self.cap, self.started = out, cap, started

    def __call__(self, node: str, update: dict[str, Any]) -> None:
        if node.startswith("accept_") and update.get("history"):
            entry = update["history"][-1]
            score = "?" if entry["score"] is None else entry["score"]
            best = f"{entry['best_score']} (#{entry['best_iteration']})" if entry["best_iteration"] else "-"
            extra = f"  T={entry['temperature']:.2f}" if entry.get("temperature") is not None else ""
            self.out.write(
                f"[{entry['iteration']:>2}/{self.cap}] score {score:>2}/10  best {best:<8} "
                f"{entry['decision']:<14}{time.time() - self.started:6.1f}s{extra}\n"
            )
        elif node == "stop":
            self.out.write(f"stopped: {update.get('stop_reason')}\n")
            for line in (pick_headline(update.get("final_pick")), *audit_lines(update.get("audit"))[:1]):
                if line:
                    self.out.write(line + "\n")
        self.out.flush()


#: What stops a run: Ctrl-C, and what `kill`, `timeout`, systemd, Slurm and container runtimes send (SIGTERM),
#: or a closed terminal (SIGHUP). All three drain alike.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def raise_interrupt(signum: int, frame: Any) -> None:
    """A stop signal as KeyboardInterrupt, so whatever runs unwinds (and cleans up) as for Ctrl-C."""
    raise KeyboardInterrupt


@contextmanager
def stop_ends_loading(note: str, cleanup: Callable[[], None] | None = None) -> Iterator[None]:
    """While models load, a stop signal ends the process at once, in one line, after `cleanup`.

    A KeyboardInterrupt raised in the middle of importing torch or diffusers can leave half-initialised
    modules behind that fail in odd ways (a recursion error, say) instead of unwinding: nothing has been
    made yet that a drain could finish, so the handler cleans up and exits without unwinding the import.
    """

    def end(signum: int, frame: Any) -> None:
        if cleanup is not None:
            cleanup()
        os.write(2, f"refineloop: stopped before the first image: {note}\n".encode())
        os._exit(EXIT_INTERRUPTED)

    with _on_stop_signals(end):  # off the main thread the caller's own stop handling applies
        yield


@contextmanager
def ctrl_c_drains(control: RunControl, out: TextIO) -> Iterator[None]:
    """The first stop signal drains the graph; the next one raises KeyboardInterrupt (stop now)."""

    def first(signum: int, frame: Any) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        out.write(f"\n{name}: finishing the current step, then stopping (Ctrl-C again to stop now)\n")
        out.flush()
        control.request_drain(name.lower())
        for sig in STOP_SIGNALS:
            signal.signal(sig, raise_interrupt)

    with _on_stop_signals(first):  # off the main thread the caller drains through its own control
        yield


@contextmanager
def _on_stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
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


class NoAnswer(Exception):
    """Standard input ended before the person answered a review question."""


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
            raise NoAnswer
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


@contextmanager
def checkpoints(
    run_dir: str, saver: BaseCheckpointSaver | None = None, url: str = "", thread_id: str = ""
) -> Iterator[BaseCheckpointSaver]:
    """The run's checkpointer: the one given (in memory, say), else Postgres at `url` (holding the run's
    advisory lock, which batch runners respect too), else SQLite in the run folder."""
    if saver is not None:
        yield saver
        return
    if url:
        from refineloop.scale.postgres import PostgresStore, prepare

        prepare(url)
        store = PostgresStore(url, pool_size=2)
        try:
            with store.locks.hold(thread_id or Path(run_dir).name):
                yield store.saver
        finally:
            store.close()
        return
    conn = connect(run_dir)
    try:
        yield run_saver(conn)
    finally:
        conn.close()


def start_run(
    settings: RunSettings,
    *,
    models: ModelCache = MODELS,
    out: TextIO = sys.stdout,
    saver: BaseCheckpointSaver | None = None,
    checkpointer_url: str = "",
    thread_id: str | None = None,
    inp: TextIO | None = None,
) -> Outcome:
    """Start a new run. Settings and task are checked first; then the run folder is made and locked at once,
    before the slow model loads, so no other run can take it; a failure before the first image removes it.

    `saver` replaces the run folder's SQLite checkpoints (in memory, say), `checkpointer_url` keeps them in
    Postgres (recorded, without its password, so `resume_run` finds them again), and `thread_id` replaces the
    default thread (the folder's name). `inp` is where review answers are read (standard input by default).
    """
    named = bool(settings.output_dir)
    settings, task = resolve_settings(settings)
    with new_run_folder(settings.output_dir, named=named) as claim:
        settings.output_dir = run_dir = claim.path
        with stop_ends_loading("nothing was kept", claim.discard):
            load_models(models, settings, out)
        state = initial_state(settings, task)
        thread_id = thread_id or Path(run_dir).name
        with checkpoints(run_dir, saver, checkpointer_url, thread_id) as checkpointer:
            write_meta(run_dir, thread_id, settings.strategy, checkpointer_url, loras=settings.lora)
            out.write(
                f"run folder: {run_dir}\nstrategy: {settings.strategy}   seed: {settings.seed}   goal: {task.goal}\n"
                f"live report: {Path(run_dir) / REPORT_NAME} (updated as the run goes)\n"
            )
            outcome = execute(settings, state, thread_id, models, out, checkpointer, inp=inp)
            if outcome.values.get("settings"):  # a checkpoint a resume can continue from
                claim.keep()
            else:
                out.write("nothing was checkpointed, so the run folder is removed: run the same command again\n")
            return outcome


def resume_run(
    run_dir: str,
    *,
    models: ModelCache = MODELS,
    out: TextIO = sys.stdout,
    saver: BaseCheckpointSaver | None = None,
    checkpointer_url: str = "",
    overrides: dict[str, Any] | None = None,
    inp: TextIO | None = None,
) -> Outcome:
    """Continue a run from its last checkpoint; a run paused at a review question asks it again.

    The folder given is the truth: a copied or moved folder resumes into itself (`refineloop.run_view`).
    Checkpoints come from `saver`, else the Postgres at `checkpointer_url` or the one run.json records, else
    the folder's SQLite. `overrides` may change the settings in `RESUME_OVERRIDES` (how models are reached,
    never what they make). A finished run is only read: nothing in its folder changes.
    """
    run_dir = str(Path(run_dir).expanduser().resolve())
    meta = read_meta(run_dir)
    url = checkpointer_url or meta.get("checkpointer", "")
    if saver is None:
        # Read without the lock or any write first: a finished run (read-only, say) is left exactly as it is.
        earlier = read_values(run_dir, meta["thread_id"], url)
        if earlier.get("status") == "done":
            return _already_finished(run_dir, earlier, out)
    with locked(run_dir), checkpoints(run_dir, saver, url, meta["thread_id"]) as checkpointer:
        config = {"configurable": {"thread_id": meta["thread_id"]}}
        try:
            values = build_graph(meta["strategy"], checkpointer).get_state(config).values
        except sqlite3.DatabaseError as exc:
            raise database_error(run_dir, exc) from None
        if not values.get("settings"):
            raise RunFolderError(f"{run_dir} has no checkpoint yet: start a new run instead")
        if values.get("status") == "done":
            return _already_finished(run_dir, values, out)
        view = make_view(values, run_dir, overrides)
        check_images(apply_view(values, view))
        settings = RunSettings.from_dict({**values["settings"], **(overrides or {}), "output_dir": run_dir})
        with stop_ends_loading("the run folder is as it was"):
            load_models(models, settings, out)
        out.write(f"resuming {run_dir} after image {values.get('iteration', 0)}\n")
        out.write(f"live report: {Path(run_dir) / REPORT_NAME} (updated as the run goes)\n")
        return execute(settings, None, meta["thread_id"], models, out, checkpointer, inp=inp, view=view)


def _already_finished(run_dir: str, values: dict[str, Any], out: TextIO) -> Outcome:
    out.write(f"{run_dir} already finished ({values.get('stop_reason')}); nothing to do.\n")
    return Outcome(run_dir, "done", EXIT_OK, values)


def check_images(values: dict[str, Any]) -> None:
    """Refuse to continue from a best or current image that is missing or unreadable (one line)."""
    for key in ("best", "current"):
        record = values.get(key)
        if record and (problem := image_problem(record["path"])):
            raise RunFolderError(
                f"{record['path']} {problem}, and the run continues from it: restore the file, or start a new run"
            )


def load_models(models: ModelCache, settings: RunSettings, out: TextIO) -> None:
    """Load both models up front, so a missing model fails before any image is made.

    The critic comes first: an Ollama critic is loaded into the server's memory now (an empty request with
    `--critic-keep-alive`), so the image model's placement measures the GPU memory it really leaves free, and
    the placement line says how much the critic holds (from /api/ps).
    """
    models.chat_model(settings)
    critic_note = _load_critic(settings)
    image_model = models.image_model(settings)
    if settings.strategy == "img2img" and not image_model.traits.img2img:
        raise SettingsError(f"{image_model.name} cannot start from an image: use --strategy climbing with it")
    if settings.audit_model:
        models.chat_model(auditor_settings(settings))  # the auditor too: a missing one fails before any image
    placement = getattr(image_model, "placement", "")
    out.write(
        f"image model: {image_model.name}"
        + (f" on {placement}" if placement else "")
        + f"   critic: {settings.eval_model}{critic_note}"
        + (f"   auditor: {settings.audit_model}" if settings.audit_model else "")
        + "\n"
    )
    if settings.lora:
        out.write(f"LoRAs: {', '.join(settings.lora)}\n")
    if settings.compile:
        out.write("--compile: the denoiser compiles during the first image; later images run the compiled code\n")
    from refineloop.run_folder.provenance import from_image_notes

    for note in from_image_notes(settings, image_model.name):
        out.write(note + "\n")
    if settings.strategy == "img2img" and not image_model.traits.strength:
        out.write(
            f"warning: {image_model.name} has no strength knob: the strength schedule does nothing, "
            "but every round still starts from the best image\n"
        )
    if settings.review and settings.strategy not in REVIEWED_STRATEGIES:
        out.write(f"warning: --review pauses only in {', '.join(REVIEWED_STRATEGIES)}; {settings.strategy} runs on\n")
    from refineloop.settings import settings_warnings

    # Options the strategy ignores are said, not dropped in silence (the checks that refuse are in validate).
    for warning in settings_warnings(settings):
        out.write(warning + "\n")


def _load_critic(settings: RunSettings) -> str:
    """Load an Ollama critic into memory now and describe what it holds, for the placement line ("" for other
    critics)."""
    if not settings.eval_model.startswith("ollama:"):
        return ""
    from refineloop.backends.chat.ollama import load_resident, resolve_base_url

    url = resolve_base_url(settings.ollama_url or None)
    keep = settings.critic_keep_alive
    resident = load_resident(settings.eval_model[7:], base_url=url, keep_alive=keep, timeout=settings.critic_timeout)
    parts = urlsplit(url)
    # A remote Ollama's memory is its own host's: say whose GPU it is, since it is not the one being placed on.
    where = "" if parts.hostname in ("127.0.0.1", "localhost", "::1") else f" at {parts.netloc}"
    kept = ""
    if keep == "-1":
        kept = ", kept loaded for ever"
    elif keep and keep != "0":
        kept = f", kept loaded {keep}"
    if resident is None:
        return f" (not resident{where}: unloaded after each call)" if keep == "0" else f" (not resident{where})"
    return f" ({resident.line()}{where}{kept})"


def execute(
    settings: RunSettings,
    state: dict[str, Any] | None,
    thread_id: str,
    models: ModelCache,
    out: TextIO,
    checkpointer: BaseCheckpointSaver,
    *,
    inp: TextIO | None = None,
    control: RunControl | None = None,
    reviewer: Callable[[dict[str, Any]], Any] | None = None,
    report: bool = True,
    view: dict[str, Any] | None = None,
) -> Outcome:
    """Stream the graph on `thread_id` from `state` (None: from its last checkpoint) to an end, a pause or a
    failure; write the artifacts of an unfinished run and, with `report`, say where things are.

    The terminal runner drains on Ctrl-C and asks review questions on `inp`; a batch worker passes its own
    `control` (it may run in any thread, where no signal handler can be installed) and `reviewer`. `view`
    (from `refineloop.run_view.make_view`) is how this process sees a resumed run: its folder and overrides.
    """
    run_dir = settings.output_dir
    graph = build_graph(settings.strategy, checkpointer)
    config = {
        "configurable": {"thread_id": thread_id, "models": models, "run_view": view or {}},
        "recursion_limit": settings.image_cap() * STEPS_PER_IMAGE + 20,
    }
    started = (state or {}).get("started_at") or time.time()
    progress = Progress(out, settings.image_cap(), started)
    status, code, error = "done", EXIT_OK, ""
    try:
        if control is None:
            control = RunControl()
            with ctrl_c_drains(control, out):
                _stream(graph, state, config, control, progress, TerminalReviewer(inp or sys.stdin, out))
        else:
            _stream(graph, state, config, control, progress, reviewer or TerminalReviewer(inp or sys.stdin, out))
    except (GraphDrained, KeyboardInterrupt):
        status, code = "interrupted", EXIT_INTERRUPTED
    except NoAnswer:
        status, code = "paused", EXIT_PAUSED
        out.write("no answer on standard input: the run is paused at this review question\n")
    except RefineError as exc:
        status, code, error = "failed", EXIT_FAILED, str(exc)
    except Exception as exc:  # a model or library failure mid-run: keep the run, explain in one line
        status, code = "failed", EXIT_FAILED
        error = explain(exc, settings) + _logged(run_dir)
    if error:
        out.write(f"error: {error}\n")
    values = apply_view(_last_state(graph, config), view)
    if status != "done" and values.get("run_dir"):
        try:
            write_artifacts(values)
        except (OSError, RefineError) as exc:
            # The checkpoints hold the run; the artifacts are made again at its next stop.
            out.write(f"warning: could not write the run's artifacts ({explain(exc, settings)})\n")
    if report:
        _report(out, run_dir, status, values)
    return Outcome(run_dir, status, code, values, error)


def _last_state(graph: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The last checkpointed state; {} when the checkpoints cannot be read (the failure was already reported)."""
    try:
        return dict(graph.get_state(config).values)
    except (sqlite3.Error, OSError):
        return {}


def _stream(
    graph: Any,
    state: dict[str, Any] | None,
    config: dict[str, Any],
    control: RunControl,
    progress: Callable[[str, dict[str, Any]], None],
    reviewer: Callable[[dict[str, Any]], Any],
) -> None:
    """Run to the end; each review interrupt is answered by `reviewer` and the graph resumed with it."""
    given: Any = state
    while True:
        question = None
        # "updates" keeps nodes on the main thread, so a second Ctrl-C lands at once.
        for chunk in graph.stream(given, config, stream_mode="updates", durability="sync", control=control):
            for node, update in chunk.items():
                if node == "__interrupt__":
                    # The graph has checkpointed the pause and the stream ends here.
                    question = update[0].value
                elif isinstance(update, dict):
                    progress(node, update)
        if question is None:
            return
        given = Command(resume=reviewer(question))


def _logged(run_dir: str) -> str:
    """Write the traceback being handled to the run's error.log; the note that says where (or why not)."""
    log = Path(run_dir) / "error.log"
    try:
        write_text_atomic(log, redact(traceback.format_exc()))
    except (OSError, RefineError) as exc:
        return f" (no error.log: {exc.strerror if isinstance(exc, OSError) else exc})"
    return f" (details in {log})"


#: Write failures a person fixes by making room, not by reading a traceback.
_NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up", errno.EFBIG: "a file limit"}


def explain(exc: BaseException, settings: RunSettings) -> str:
    """One line for an unexpected failure, naming the model when it came from one."""
    from refineloop.backends.chat.ollama import explain_connection_error

    if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
        return f"{_NO_ROOM[exc.errno]} ({exc.strerror}): free some space, then resume the run"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and exc.filename:
        return f"cannot write {exc.filename} ({exc.strerror}): make the run folder writable, then resume the run"
    if isinstance(exc, sqlite3.DatabaseError):
        return str(database_error(settings.output_dir, exc))
    from refineloop.backends.chat.openai_compatible import explain_for_settings

    mapped = explain_for_settings(exc, settings) or explain_connection_error(exc, settings.ollama_url or None)
    if mapped is not None:
        return redact(str(mapped))
    first = redact(str(exc)).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _report(out: TextIO, run_dir: str, status: str, values: dict[str, Any]) -> None:
    best = values.get("best")
    if best:
        out.write(f"best: image {best['iteration']} scored {best['score']}/10 -> {Path(run_dir) / 'best.png'}\n")
    if not values.get("settings"):
        return  # nothing a resume could continue from was checkpointed: there is nothing to look at or resume
    out.write(f"files: {run_dir}\n")
    if status != "done":
        out.write(f"resume with: refineloop resume {run_dir}\n")
    out.flush()
