"""`refineloop run | demo | resume | fork | runs | show | batch`.

Only argparse and the settings dataclass load at start-up: langgraph, torch and diffusers are imported
when a command needs them, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO, cast

from refineloop.apps.stop_signals import ignore_stop_signals, raise_interrupt
from refineloop.cli.output import ReaderSafeOutput
from refineloop.errors import RefineError, RunKept, SettingsError, causes, disk_problem
from refineloop.visible_text import visible

DEMO_DEFAULTS = {"image_model": "sketch", "eval_model": "demo", "strategy": "climbing"}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    return build_parsers()[0]


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The whole command line, and each command's own parser by name (for the generated reference)."""
    from refineloop.cli.batch import add_batch_command
    from refineloop.cli.flags import add_settings_flags
    from refineloop.cli.judge_check import add_judge_check_command
    from refineloop.settings import RESUME_OVERRIDES

    parser = argparse.ArgumentParser(
        prog="refineloop",
        description="Refine an image until a vision critic is satisfied: draw, judge, condense, keep the best.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="start a refinement run", description="Start a refinement run.")
    add_settings_flags(run)
    _add_checkpointer_flag(run)
    _add_goal_argument(run)
    _add_head_start_flag(run)
    demo = commands.add_parser(
        "demo",
        help="offline demo: sketch painter + heuristic critic, done in seconds",
        description="Offline demo with the sketch painter and the heuristic demo critic (no real models).",
    )
    add_settings_flags(demo, DEMO_DEFAULTS)
    _add_checkpointer_flag(demo)
    _add_goal_argument(demo)
    _add_head_start_flag(demo)
    resume = commands.add_parser(
        "resume",
        help="continue an interrupted or crashed run from its last image",
        description="Continue a run from its last checkpoint, in the folder given (a copied or moved run folder "
        "resumes into itself). The flags below may change how the models are reached, never what they make.",
    )
    resume.add_argument("run_dir", help="the run folder to continue")
    add_settings_flags(resume, overrides_only=True, only=RESUME_OVERRIDES)
    _add_checkpointer_flag(resume)
    fork = commands.add_parser(
        "fork",
        help="start a new run from image K of an old one (other settings or strategy allowed)",
        description="Start a new run folder from the checkpoint right after image K of RUN_DIR was judged: images "
        "1..K are copied, the flags given replace the original run's settings, and the new run goes on like "
        "`refineloop run`. The new folder is RUN_DIR-fork-K unless --output-dir is given; RUN_DIR is not changed.",
    )
    fork.add_argument("run_dir", help="the run folder to fork")
    fork.add_argument(
        "--from-iteration", type=int, required=True, metavar="K", help="the last image the new run shares"
    )
    add_settings_flags(fork, overrides_only=True, skip=("from_image", "init_image"))
    _add_checkpointer_flag(fork)
    runs = commands.add_parser(
        "runs", help="list run folders (and the runs inside batch folders) with status, images and best score"
    )
    runs.add_argument("root", nargs="?", default="runs", help="folder holding runs (default: runs)")
    runs.add_argument(
        "--checkpointer",
        default="",
        metavar="URL",
        help="also read the runs whose run.json names this Postgres (never opened unless given here)",
    )
    show = commands.add_parser(
        "show",
        help="print the provenance an image carries (prompt, seed, model, run...)",
        description="Print what a PNG refineloop wrote says about itself: prompt, negative prompt, seed, steps, "
        "guidance, size, strength, model, LoRAs and run id; images from other tools that use the `parameters` "
        "text convention are read too.",
    )
    show.add_argument("image", help="a PNG file (NN.png, best.png, or any image with a parameters text)")
    show.add_argument("--json", action="store_true", help="print the full record as JSON")
    add_batch_command(commands)
    add_judge_check_command(commands)
    return parser, dict(commands.choices)


def _add_goal_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "goal_words",
        nargs="*",
        metavar="GOAL",
        help='the image you want, in words, as --goal takes it: refineloop run "a cosy cabin in snow"',
    )


def goal_of(args: argparse.Namespace) -> str:
    """The run's goal: --goal, or the words given without a flag (the same thing, written twice is refused)."""
    words = " ".join(getattr(args, "goal_words", None) or [])
    if words and args.goal:
        raise SettingsError(f'the goal is given twice (--goal and "{words}"): keep one of them')
    return str(args.goal or words)


def _add_head_start_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--head-start",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="begin the first image while the run starts up (LangGraph loading, the critic's check), so it comes "
        "sooner; the same image either way (default: on, except for a diffusers model drawing on every CPU core, "
        "which the start-up would slow; never on resume, fork, batch, --init-image, agent modes, or a first "
        "round of drafts)",
    )


def _add_checkpointer_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpointer",
        default="",
        metavar="URL",
        help="postgres://user@host:port/db keeps the checkpoints in Postgres (recorded in run.json without the "
        "password; give it here, or in PGPASSWORD, to reach them again); default: SQLite in the run folder",
    )


STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: Commands that make or continue runs: a closed output stops them as a closed terminal does.
RUNNING = ("run", "demo", "resume", "fork", "batch", "judge-check")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `refineloop` console script (`argv` None: this process's own command line).

    The process's own command ends here, with its status: stop signals from now on are ignored, the output is
    flushed, and the process exits without the interpreter's shutdown, which would put the default handlers
    back (a late Ctrl-C then kills a process that has already said how it ended) and wait for threads still
    blocked in calls the run gave up on (a streaming critic that timed out).
    """
    handlers = {sig: signal.getsignal(sig) for sig in STOPS}
    try:
        code = _main(argv)
    finally:
        if argv is not None:  # called from Python, which goes on: its handlers back
            for sig, handler in handlers.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(sig, handler)
    if argv is None:
        ignore_stop_signals()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    return code


def _main(argv: Sequence[str] | None) -> int:
    # Until a run installs its own handlers (the first stop drains), Ctrl-C, SIGTERM and SIGHUP stop alike:
    # whatever was half made before the first image is cleaned up, and the user reads one line. Installed
    # before the parser, whose settings import LangGraph: a second or so in which a stop used to be a traceback.
    for sig in STOPS:
        signal.signal(sig, raise_interrupt)
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        _say("refineloop: stopped before anything was made")
        return 130
    given = sys.stdout
    if not isinstance(given, ReaderSafeOutput):
        sys.stdout = cast(TextIO, ReaderSafeOutput(given, stops=args.command in RUNNING))
    try:
        code = _dispatch(args)
        ignore_stop_signals()  # the work is over: a late signal must not turn a clean end into a misleading line
        sys.stdout.flush()  # inside the try: a reader that went away is noticed here, not at exit
        return code
    except RunKept as exc:
        ignore_stop_signals()
        _say(f"refineloop: {exc}")
        return exc.exit_code
    except RefineError as exc:
        _say(f"refineloop: error: {exc}")
        return 2
    except KeyboardInterrupt as exc:
        kept = next((cause for cause in causes(exc) if isinstance(cause, RunKept)), None)
        if kept is not None:  # a second stop landed while the first one's report was on its way
            _say(f"refineloop: {kept}")
            return kept.exit_code
        what = "the run folder is as it was" if args.command in ("resume", "fork", "batch") else "nothing was kept"
        _say(f"refineloop: stopped before the first image: {what}")
        return 130
    except BrokenPipeError:
        # The reader went away (`refineloop runs | head`): stop quietly, as command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if (problem := disk_problem(exc)) is None:
            raise
        _say(f"refineloop: error: {problem}")
        return 2
    except Exception as exc:
        if any(isinstance(cause, KeyboardInterrupt) for cause in causes(exc)):  # a library wrapped the stop
            _say("refineloop: stopped before the first image: nothing was kept")
            return 130
        raise
    finally:
        sys.stdout = given


def _say(line: str) -> None:
    """One line on standard error, even when standard error itself is gone."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(visible(line) + "\n")
        sys.stderr.flush()


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("run", "demo"):
        return _run(args)
    if args.command == "resume":
        from refineloop.backends.checks import validated
        from refineloop.cli.run_commands import resume_run
        from refineloop.settings import RESUME_OVERRIDES, RunSettings

        overrides = {name: getattr(args, name) for name in RESUME_OVERRIDES if hasattr(args, name)}
        if overrides:
            validated(RunSettings(**overrides))  # a bad value answers before anything opens
        url = _checked_url(args)
        return resume_run(args.run_dir, checkpointer_url=url, overrides=overrides, out=sys.stdout).exit_code
    if args.command == "fork":
        return _fork(args)
    if args.command == "batch":
        return int(args.batch_handler(args))
    if args.command == "judge-check":
        return int(args.handler(args))
    if args.command == "show":
        from refineloop.cli.show import show

        return show(args.image, as_json=args.json)
    from refineloop.cli.runs_listing import list_runs

    return list_runs(args.root, checkpointer=args.checkpointer)


def _checked_url(args: argparse.Namespace) -> str:
    """The --checkpointer URL after a one-line check (empty: SQLite, or what run.json records)."""
    if not args.checkpointer:
        return ""
    from refineloop.errors import ScaleError

    if not args.checkpointer.startswith(("postgres://", "postgresql://")):
        raise ScaleError(f"--checkpointer takes a postgres://user@host:port/db URL, got '{args.checkpointer}'")
    return str(args.checkpointer)


def _run(args: argparse.Namespace) -> int:
    from refineloop.backends.checks import validated
    from refineloop.settings import RunSettings

    names = {f.name for f in dataclasses.fields(RunSettings)}
    settings = RunSettings(**{**{k: v for k, v in vars(args).items() if k in names}, "goal": goal_of(args)})
    validated(settings)  # before importing langgraph: a bad flag answers instantly
    url = _checked_url(args)
    from refineloop.apps.head_start import begin_first_image
    from refineloop.apps.new_run import opened_run
    from refineloop.apps.stop_signals import stop_ends_loading
    from refineloop.backends.image import head_start
    from refineloop.run_start import resolve_run

    try:
        with opened_run(resolve_run(settings)) as opened:
            with stop_ends_loading("nothing was kept", opened.take_back):
                if args.head_start is not False:  # the image model loads, and the first image begins, before LangGraph
                    begin_first_image(opened, always=bool(args.head_start))
                from refineloop.cli.run_commands import start_run
            # sys.stdout as it is now, not as the runner's default bound it at import (a caller may have swapped it).
            return start_run(settings, checkpointer_url=url, out=sys.stdout, opened=opened).exit_code
    finally:
        head_start.stop()  # a first image the run never took: a server need not go on drawing it


def _fork(args: argparse.Namespace) -> int:
    from refineloop.settings import RunSettings

    names = {f.name for f in dataclasses.fields(RunSettings)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    url = _checked_url(args)
    from refineloop.apps.fork import fork_run
    from refineloop.cli.terminal import Terminal

    terminal = Terminal(sys.stdout)
    return fork_run(args.run_dir, args.from_iteration, overrides, checkpointer_url=url, callbacks=terminal).exit_code


if __name__ == "__main__":
    sys.exit(main())
