"""`refineloop run | demo | resume | fork | runs | show | batch`.

Only argparse and the settings dataclass load at start-up: langgraph, torch and diffusers are imported
when a command needs them, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refineloop.backends.checks import validated
from refineloop.cli.batch import add_batch_command
from refineloop.cli.flags import add_settings_flags
from refineloop.cli.judge_check import add_judge_check_command
from refineloop.errors import RefineError
from refineloop.settings import RESUME_OVERRIDES, RunSettings

DEMO_DEFAULTS = {"image_model": "sketch", "eval_model": "demo", "strategy": "climbing"}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    return build_parsers()[0]


def build_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The whole command line, and each command's own parser by name (for the generated reference)."""
    parser = argparse.ArgumentParser(
        prog="refineloop",
        description="Refine an image until a vision critic is satisfied: draw, judge, condense, keep the best.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="start a refinement run", description="Start a refinement run.")
    add_settings_flags(run)
    _add_checkpointer_flag(run)
    demo = commands.add_parser(
        "demo",
        help="offline demo: sketch painter + heuristic critic, done in seconds",
        description="Offline demo with the sketch painter and the heuristic demo critic (no real models).",
    )
    add_settings_flags(demo, DEMO_DEFAULTS)
    _add_checkpointer_flag(demo)
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


def _add_checkpointer_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpointer",
        default="",
        metavar="URL",
        help="postgres://user@host:port/db keeps the checkpoints in Postgres (recorded in run.json without the "
        "password; give it here, or in PGPASSWORD, to reach them again); default: SQLite in the run folder",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `refineloop` console script."""
    args = build_parser().parse_args(argv)
    # Until a run installs its own handlers (the first stop drains), SIGTERM and SIGHUP stop like Ctrl-C:
    # whatever was half made before the first image is cleaned up, and the user reads one line.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_now)
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # inside the try: a reader that went away is noticed here, not at exit
        return code
    except RefineError as exc:
        print(f"refineloop: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        what = "the run folder is as it was" if args.command in ("resume", "fork", "batch") else "nothing was kept"
        print(f"refineloop: stopped before the first image: {what}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`refineloop runs | head`): stop quietly, as command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _stop_now(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("run", "demo"):
        return _run(args)
    if args.command == "resume":
        from refineloop.cli.run_commands import resume_run

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
    return _list_runs(args.root)


def _checked_url(args: argparse.Namespace) -> str:
    """The --checkpointer URL after a one-line check (empty: SQLite, or what run.json records)."""
    if not args.checkpointer:
        return ""
    from refineloop.errors import ScaleError

    if not args.checkpointer.startswith(("postgres://", "postgresql://")):
        raise ScaleError(f"--checkpointer takes a postgres://user@host:port/db URL, got '{args.checkpointer}'")
    return str(args.checkpointer)


def _run(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(RunSettings)}
    settings = RunSettings(**{k: v for k, v in vars(args).items() if k in names})
    validated(settings)  # before importing langgraph: a bad flag answers instantly
    url = _checked_url(args)
    from refineloop.cli.run_commands import start_run

    # sys.stdout as it is now, not as the runner's default bound it at import (a caller may have swapped it).
    return start_run(settings, checkpointer_url=url, out=sys.stdout).exit_code


def _fork(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(RunSettings)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    url = _checked_url(args)
    from refineloop.apps.fork import fork_run
    from refineloop.cli.terminal import Terminal

    terminal = Terminal(sys.stdout)
    return fork_run(args.run_dir, args.from_iteration, overrides, checkpointer_url=url, callbacks=terminal).exit_code


def _list_runs(root: str) -> int:
    """Every run folder under `root`, and the runs inside each batch folder there, grouped under it."""
    from refineloop.apps.batch.plan import MANIFEST
    from refineloop.run_folder.folder import is_run_folder

    base = Path(root)
    entries = sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink()) if base.is_dir() else []
    runs = [p for p in entries if is_run_folder(p)]
    batches = [p for p in entries if (p / MANIFEST).is_file() and not is_run_folder(p)]
    if not runs and not batches:
        print(f"no runs in {root}/ yet: start one with `refineloop demo`")
        return 0
    print(f"{'run':<40} {'strategy':<10} {'status':<12} {'images':>6} {'best':>5}  reason")
    for folder in runs:
        print(_run_row(folder, folder.name))
    for batch in batches:
        items = sorted(p for p in batch.iterdir() if p.is_dir() and not p.is_symlink() and is_run_folder(p))
        print(f"batch {batch.name}/ ({len(items)} runs)")
        for folder in items:
            print(_run_row(folder, "  " + folder.name))
    return 0


def _run_row(folder: Path, label: str) -> str:
    """One line of `refineloop runs`, read without writing; a folder that cannot be read is `damaged`."""
    from refineloop.apps.reading import read_checkpoint, read_values
    from refineloop.errors import RefineError
    from refineloop.run_folder.folder import read_meta

    try:
        meta = read_meta(str(folder))
        found = read_checkpoint(str(folder), meta["thread_id"], meta.get("checkpointer", ""))
        # The image records are delta channels, which the checkpoint alone does not hold: the graph rebuilds them.
        values = read_values(str(folder), meta["thread_id"], meta.get("checkpointer", "")) if found else {}
        best = values.get("best") or {}
        score = f"{best['score']:g}/10" if isinstance(best.get("score"), (int, float)) else "-"
        status = _status(str(folder), values, found)
        return (
            f"{label:<40} {meta['strategy']:<10} {status:<12} "
            f"{values.get('iteration', 0):>6} {score:>5}  {values.get('stop_reason', '')}"
        )
    except (RefineError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"{label:<40} {'?':<10} {'damaged':<12} {'-':>6} {'-':>5}  {reason}"


def _status(run_dir: str, values: dict[str, Any], found: Any) -> str:
    """running (a process holds it), done, review (paused at a question), interrupted, or new."""
    from refineloop.run_folder.lock import is_locked

    if is_locked(run_dir):
        return "running"
    status = str(values.get("status", "new"))
    if status != "running":
        return status
    # A run paused at a review question has the interrupt pending in its last checkpoint.
    waiting = found is not None and any(channel == "__interrupt__" for _, channel, _ in found.pending_writes or [])
    return "review" if waiting else "interrupted"


if __name__ == "__main__":
    sys.exit(main())
