"""`refineloop batch GOALS_FILE`: the command line of batches (local, or on Ray with Postgres).

`add_batch_command(subparsers)` adds the subcommand to refineloop's parser and `run_batch(args)` runs it;
`python -m refineloop.cli.batch batch ...` runs it on its own. Like the rest of the CLI, only argparse and
the settings load at start-up; langgraph, psycopg and ray are imported when a batch actually starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from refineloop.backends.checks import validated
from refineloop.cli.flags import add_settings_flags
from refineloop.cli.output import reader_gone
from refineloop.errors import RefineError, SettingsError
from refineloop.settings import RunSettings

_DESCRIPTION = """\
Run one refinement per goal: GOALS_FILE has one goal per line, or JSONL objects / TOML [[items]] tables with
their own goal or task, seed and settings. Flags below apply to every item that does not set them itself.
Each item gets a run folder inside the batch folder, and a summary table is printed and written there.
Running the same command again resumes the batch: finished items are left as they are, the interrupted one
continues from its last image. --engine ray runs many at once on Ray (one batched image generator per GPU):
without --address it starts a Ray on this machine and keeps checkpoints, queue and locks in the batch folder;
a cluster (--address) keeps them in Postgres (--checkpointer postgres://...), which every host can reach.
"""


def add_batch_command(subparsers: Any) -> None:
    """Add `batch` to an argparse subparsers object (refineloop's own, or any other)."""
    parser = subparsers.add_parser(
        "batch",
        help="run many goals, one run folder each, with a summary; resumable; optionally on Ray",
        description=_DESCRIPTION,
        # The batch redefines --output-dir (the batch folder) and drops --goal / --review from the run flags.
        conflict_handler="resolve",
    )
    parser.add_argument("goals_file", metavar="GOALS_FILE", help="goals: .txt (one per line), .jsonl or .toml")
    add_settings_flags(parser)
    parser.add_argument(
        "--output-dir",
        dest="batch_dir",
        default="",
        metavar="DIR",
        help="batch folder (default: runs/<goals file name>-batch); the same folder resumes the batch",
    )
    parser.add_argument("--goal", dest="goal", default="", help=argparse.SUPPRESS)
    parser.add_argument("--review", dest="review", action="store_true", default=False, help=argparse.SUPPRESS)
    scale = parser.add_argument_group("engine and storage")
    scale.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: one item after another in this process (default); ray: many at once on a Ray cluster",
    )
    scale.add_argument(
        "--address", default="", help="Ray cluster to join (host:6379 or auto); empty starts a local Ray"
    )
    scale.add_argument(
        "--checkpointer",
        default="",
        metavar="URL",
        help="postgres://user@host:port/db keeps checkpoints and the queue in Postgres (needed by --engine ray "
        "with --address); default: SQLite in each run folder",
    )
    scale.add_argument("--replicas", type=int, default=0, help="generator replicas (default: one per GPU)")
    scale.add_argument("--runners", type=int, default=2, help="runner processes (default: 2)")
    scale.add_argument("--runs-per-runner", type=int, default=16, help="concurrent runs per runner (default: 16)")
    scale.add_argument("--max-batch-size", type=int, default=8, help="most images per pipeline call (default: 8)")
    scale.add_argument(
        "--batch-wait", type=float, default=0.05, metavar="S", help="seconds a batch waits to fill (default: 0.05)"
    )
    scale.add_argument(
        "--replica-cpus", type=float, default=1.0, help="CPUs per generator replica without GPUs (default: 1)"
    )
    parser.set_defaults(batch_handler=run_batch)


def run_batch(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the batch the parsed arguments describe; every user-fixable problem is one line on stderr (exit 2)."""
    out = out or sys.stdout
    try:
        try:
            return _run(args, out)
        except _postgres_errors() as exc:
            from refineloop.apps.postgres import where
            from refineloop.errors import ScaleError

            # Postgres went away mid-batch: everything up to the last checkpoint is kept, so say how to go on.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ScaleError(
                f"lost Postgres at {where(args.checkpointer)} ({first}): once it is back, run the same command "
                "again to resume"
            ) from None
    except RefineError as exc:
        print(f"refineloop: error: {exc}", file=sys.stderr)
        return 2


def _postgres_errors() -> tuple[type[BaseException], ...]:
    """psycopg's error classes when the postgres extra is installed (none otherwise: nothing to catch)."""
    if importlib.util.find_spec("psycopg") is None:
        return ()
    import psycopg

    try:
        from psycopg_pool import PoolTimeout
    except ImportError:
        return (psycopg.Error,)
    return (psycopg.Error, PoolTimeout)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from refineloop.apps.batch import exit_code, open_store, plan_batch, store_kind

    if args.goal:
        raise SettingsError("a batch reads its goals from GOALS_FILE: put the goal there instead of --goal")
    if args.review:
        raise SettingsError("--review needs a person at the terminal for every image: not available in a batch")
    if args.address and args.engine != "ray":
        raise SettingsError("--address joins a Ray cluster: add --engine ray")
    if args.engine == "ray" and args.address and not args.checkpointer:
        from refineloop.scale import check_storage

        check_storage(args.checkpointer, args.address)
    # The pool logs every failed reconnection; the batch reports a lost server itself, in one line.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    names = {f.name for f in dataclasses.fields(RunSettings)}
    base = RunSettings(**{k: v for k, v in vars(args).items() if k in names and k not in ("output_dir", "goal")})
    validated(base)
    plan = plan_batch(args.goals_file, base, args.batch_dir, store_kind(args.checkpointer))
    out.write(f"batch: {len(plan.items)} items from {args.goals_file} -> {plan.batch_dir}\n")
    out.flush()
    if args.engine == "local":
        from refineloop.apps.batch import run_local

        store = open_store(args.checkpointer, plan.batch_dir)
        try:
            rows = run_local(plan, store, out=out)
        finally:
            store.close()
    else:
        rows = _run_ray(plan, args, out)
    code = exit_code(rows)
    if code != 0:
        out.write(f"to resume, run the same command again (batch folder {plan.batch_dir})\n")
        if reader_gone(out):  # nobody reads the output any more: the line that matters goes to stderr
            print(
                f"refineloop: the output was closed, so the batch stopped; everything made is kept: run the same "
                f"command again to resume (batch folder {plan.batch_dir})",
                file=sys.stderr,
            )
    return code


def _run_ray(plan: Any, args: argparse.Namespace, out: TextIO) -> list[Any]:
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("ray.serve") is None:
        from refineloop.errors import missing_extra

        raise missing_extra("ray[serve]", "ray")
    import ray

    from refineloop.errors import ScaleError
    from refineloop.scale.ray import EngineOptions, run_ray

    options = EngineOptions(
        address=args.address,
        replicas=args.replicas,
        runners=args.runners,
        runs_per_runner=args.runs_per_runner,
        max_batch_size=args.max_batch_size,
        batch_wait_s=args.batch_wait,
        replica_cpus=args.replica_cpus,
    )
    try:
        return run_ray(plan, args.checkpointer, options, out=out)
    except ray.exceptions.RayError as exc:
        from refineloop.scale.ray import reason

        # Whatever Ray raises past our own handling is still reported in one line, never as a traceback.
        raise ScaleError(f"the Ray cluster failed: {reason(exc)}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m refineloop.cli.batch batch GOALS_FILE ...`, the same command without refineloop's CLI."""
    parser = argparse.ArgumentParser(prog="refineloop")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_batch_command(commands)
    args = parser.parse_args(argv)
    return int(args.batch_handler(args))


if __name__ == "__main__":
    sys.exit(main())
