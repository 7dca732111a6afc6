"""`refineloop judge-check [RUN_DIR]`: its flags and its entry (argparse only here: `--help` stays instant)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO, cast

from refineloop.backends.checks import validated
from refineloop.cli.flags import add_settings_flags
from refineloop.errors import RefineError, SettingsError

#: The run settings judge-check reads: which critic (and auditor), how it is reached, and what to draw.
CHECK_SETTINGS = (
    "task",
    "goal",
    "eval_model",
    "audit_model",
    "ollama_url",
    "openai_url",
    "openai_key_env",
    "openai_stream",
    "critic_keep_alive",
    "judge_image_size",
    "critic_timeout",
    "critic_retries",
    "judge_attempts",
    "image_model",
    "device",
    "dtype",
    "width",
    "height",
    "steps",
    "guidance",
    "seed",
    "draft_steps",
    "draft_size",
    "output_dir",
)

_DESCRIPTION = """\
Measure your critic on real images and recommend judge settings for it: how often a cold score repeats, how far
warm samples spread, how often a duel flips with the order of its two images or ties, whether scores agree with
duels, and (with --audit-model) whether a second critic ranks the images alike. With RUN_DIR it judges that run's
images (spread over the run) and writes judge-check.json there; without, it draws a small fresh batch from the
task into a new folder (runs/<time>-judge-check, or --output-dir); with --draft-steps or --draft-size it draws
each fresh image's draft too and measures whether drafts rank the images as the images do (whether
--draft-walk suits your model and critic). Flags not given take the run's settings (with RUN_DIR) or the
defaults; the offline demo critic answers when no --eval-model is given.
"""


def add_judge_check_command(subparsers: Any) -> None:
    """Add `judge-check` to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "judge-check",
        help="measure your critic (repeats, spread, position flips, agreement) and recommend judge settings",
        description=_DESCRIPTION,
    )
    parser.add_argument("run_dir", nargs="?", help="a run folder whose images to judge (default: a fresh batch)")
    parser.add_argument("--images", type=int, default=6, help="images to judge, 2 to 20 (default: 6)")
    parser.add_argument("--samples", type=int, default=3, help="warm samples per image, 2 to 8 (default: 3)")
    parser.add_argument("--pairs", type=int, default=6, help="pairs of images to duel, 1 to 30 (default: 6)")
    add_settings_flags(parser, overrides_only=True, only=CHECK_SETTINGS)
    parser.set_defaults(handler=run_judge_check)


def run_judge_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Check the critic the arguments name; every user-fixable problem is one line on stderr (exit 2)."""
    out = out or sys.stdout
    try:
        return _check(args, out)
    except RefineError as exc:
        print(f"refineloop: error: {exc}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace, out: TextIO) -> int:
    for name, low, high in (("images", 2, 20), ("samples", 2, 8), ("pairs", 1, 30)):
        value = getattr(args, name)
        if not low <= value <= high:
            raise SettingsError(f"--{name} must be between {low} and {high}, got {value}")
    given = {name: getattr(args, name) for name in CHECK_SETTINGS if hasattr(args, name)}
    from refineloop.settings import RunSettings

    validated(RunSettings(**given))  # a bad flag answers before any model loads
    from refineloop.apps.judge_check import judge_check
    from refineloop.backends.model_cache import MODELS
    from refineloop.tasks import Task, resolve_task

    run_dir = None
    if args.run_dir and (given.get("draft_steps") or given.get("draft_size")):
        raise SettingsError(
            "--draft-steps and --draft-size measure drafts of a fresh batch, drawn beside their images: leave "
            "RUN_DIR out"
        )
    if args.run_dir:
        from refineloop.apps.reading import read_values
        from refineloop.run_folder.folder import read_meta

        run_dir = str(Path(args.run_dir).expanduser().resolve())
        meta = read_meta(run_dir)
        values = read_values(run_dir, meta["thread_id"], meta.get("checkpointer", ""))
        settings = RunSettings.from_dict({**(values.get("settings") or {}), **given, "output_dir": run_dir})
        task = Task.from_dict(values["task"]) if values.get("task") else resolve_task(settings.task, settings.goal)
    else:
        from refineloop.run_start import default_run_dir

        settings = RunSettings(**given)
        task = resolve_task(settings.task, settings.goal)
        settings.output_dir = str(Path(settings.output_dir).expanduser().resolve()) if settings.output_dir else ""
        settings.output_dir = settings.output_dir or default_run_dir("judge-check")
        if settings.seed is None:
            settings.seed = 0  # the fresh batch is made again exactly by the same command
    validated(settings)
    counts = {"images": args.images, "samples": args.samples, "pairs": args.pairs}
    from refineloop.apps.progress import LiveLine, WipingWriter
    from refineloop.progress_events import reporting

    live = LiveLine(out)
    with reporting(live):
        shown = cast(TextIO, WipingWriter(out, live))
        try:
            judge_check(settings, task, run_dir, named="output_dir" in given, models=MODELS, out=shown, **counts)
        except Exception as exc:
            from refineloop.apps.engine import explain_model_failure

            if (mapped := explain_model_failure(exc, settings)) is None:
                raise
            raise mapped from None
    return 0
