"""`refineloop run | demo | resume | fork | runs`.

Only argparse and the settings dataclass load at start-up: langgraph, torch and diffusers are imported
when a command needs them, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args, get_type_hints

from refineloop.batch_cli import add_batch_command
from refineloop.errors import RefineError
from refineloop.settings import STRATEGIES, RunSettings

DEMO_DEFAULTS = {"image_model": "sketch", "eval_model": "demo", "strategy": "climbing"}


@functools.cache
def _settings_hints() -> dict[str, Any]:
    return get_type_hints(RunSettings)


def _flag_type(field: dataclasses.Field[Any]) -> Any:
    """The flag's type: the field's annotation, with `| None` dropped (an empty flag is the default)."""
    annotation = _settings_hints()[field.name]
    if isinstance(annotation, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def add_settings_flags(
    parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None, *, overrides_only: bool = False
) -> None:
    """One flag per RunSettings field, described by the field's own description.

    With `overrides_only` a flag not given leaves no attribute at all (so a fork can tell what was asked for),
    and booleans get a `--no-` form, since the setting they override may be on.
    """
    defaults = defaults or {}
    for field in dataclasses.fields(RunSettings):
        flag = "--" + field.name.replace("_", "-")
        default = argparse.SUPPRESS if overrides_only else defaults.get(field.name, field.default)
        help_text = field.metadata.get("description", "")
        if field.name == "strategy":
            help_text += f" Choices: {', '.join(STRATEGIES)}."
        shown = "" if overrides_only or default in (None, "") else f" (default: {default})"
        if _flag_type(field) is bool:
            action = argparse.BooleanOptionalAction if overrides_only else "store_true"
            parser.add_argument(flag, dest=field.name, action=action, default=default, help=help_text)
            continue
        parser.add_argument(
            flag,
            dest=field.name,
            type=_flag_type(field),
            default=default,
            help=help_text + shown,
            metavar=field.name.upper(),
        )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="refineloop",
        description="Refine an image until a vision critic is satisfied: draw, judge, condense, keep the best.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="start a refinement run", description="Start a refinement run.")
    add_settings_flags(run)
    demo = commands.add_parser(
        "demo",
        help="offline demo: sketch painter + heuristic critic, done in seconds",
        description="Offline demo with the sketch painter and the heuristic demo critic (no real models).",
    )
    add_settings_flags(demo, DEMO_DEFAULTS)
    resume = commands.add_parser("resume", help="continue an interrupted or crashed run from its last image")
    resume.add_argument("run_dir", help="the run folder to continue")
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
    add_settings_flags(fork, overrides_only=True)
    runs = commands.add_parser("runs", help="list run folders with status, images and best score")
    runs.add_argument("root", nargs="?", default="runs", help="folder holding runs (default: runs)")
    add_batch_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `refineloop` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("run", "demo"):
            return _run(args)
        if args.command == "resume":
            from refineloop.runner import resume_run

            return resume_run(args.run_dir).exit_code
        if args.command == "fork":
            return _fork(args)
        if args.command == "batch":
            return args.batch_handler(args)
        return _list_runs(args.root)
    except RefineError as exc:
        print(f"refineloop: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(RunSettings)}
    settings = RunSettings(**{k: v for k, v in vars(args).items() if k in names})
    settings.validate()  # before importing langgraph: a bad flag answers instantly
    from refineloop.runner import start_run

    return start_run(settings).exit_code


def _fork(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(RunSettings)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    from refineloop.fork import fork_run

    return fork_run(args.run_dir, args.from_iteration, overrides).exit_code


def _list_runs(root: str) -> int:
    from refineloop.tools.run_folder import is_run_folder, read_checkpoint, read_meta

    folders = sorted(p for p in Path(root).glob("*") if p.is_dir() and is_run_folder(p)) if Path(root).is_dir() else []
    if not folders:
        print(f"no runs in {root}/ yet: start one with `refineloop demo`")
        return 0
    print(f"{'run':<40} {'strategy':<10} {'status':<12} {'images':>6} {'best':>5}  reason")
    for folder in folders:
        meta = read_meta(str(folder))
        found = read_checkpoint(str(folder), meta["thread_id"])
        values = dict(found.checkpoint["channel_values"]) if found else {}
        best = values.get("best") or {}
        score = f"{best['score']}/10" if best.get("score") is not None else "-"
        print(
            f"{folder.name:<40} {meta.get('strategy', '?'):<10} {_status(str(folder), values, found):<12} "
            f"{values.get('iteration', 0):>6} {score:>5}  {values.get('stop_reason', '')}"
        )
    return 0


def _status(run_dir: str, values: dict[str, Any], found: Any) -> str:
    """running (a process holds it), done, review (paused at a question), interrupted, or new."""
    from refineloop.tools.run_folder import is_locked

    if is_locked(run_dir):
        return "running"
    status = values.get("status", "new")
    if status != "running":
        return status
    # A run paused at a review question has the interrupt pending in its last checkpoint.
    waiting = found is not None and any(channel == "__interrupt__" for _, channel, _ in found.pending_writes or [])
    return "review" if waiting else "interrupted"


if __name__ == "__main__":
    sys.exit(main())
