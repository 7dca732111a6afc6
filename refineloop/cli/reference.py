"""The generated reference pages: docs/cli.md from the parser's own `--help`, docs/settings.md from the settings'
descriptions and shapes. `python -m refineloop.cli.reference` rewrites both; tests/test_reference.py fails when
either page differs from what the code says now.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from refineloop.cli.main import build_parsers
from refineloop.knob_shapes import GROUPS, shape_of
from refineloop.settings import RunSettings

#: Help is wrapped at this width whatever the terminal, so the page is the same on every machine.
WIDTH = 100
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _help_of(parser: argparse.ArgumentParser) -> str:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return parser.format_help()
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def cli_reference() -> str:
    """docs/cli.md: the top-level help, then each command's, exactly as `--help` prints them."""
    parser, commands = build_parsers()
    parts = [
        "# Command-line reference\n",
        "Generated from the parser by `python -m refineloop.cli.reference`; a test fails when it drifts.\n",
        "```text\n" + _help_of(parser) + "```\n",
    ]
    for name, command in commands.items():
        parts.append(f"## `refineloop {name}`\n\n```text\n{_help_of(command)}```\n")
    return "\n".join(parts)


def settings_reference() -> str:
    """docs/settings.md: every run setting by group, with its flag, default, bounds or choices and description."""
    by_group: dict[str, list[dataclasses.Field[object]]] = {}
    for field in dataclasses.fields(RunSettings):
        by_group.setdefault(shape_of(field.name).group, []).append(field)
    parts = [
        "# Settings reference\n",
        "Every setting of a run, as `run`, `demo`, `fork` and `batch` take it (`--flag`), as Studio's form and a "
        "batch file's `[defaults]` name it (`name`), with its bounds. Generated from `RunSettings` and "
        "`refineloop/knob_shapes.py` by `python -m refineloop.cli.reference`; a test fails when it drifts.\n",
    ]
    for group in [*GROUPS, *sorted(set(by_group) - set(GROUPS))]:
        if group not in by_group:
            continue
        parts.append(f"## {group.capitalize()}: {GROUPS.get(group, 'not grouped yet')}\n")
        parts.append("| flag | name | default | allowed | what it does |\n|---|---|---|---|---|")
        for field in by_group[group]:
            parts.append(_row(field))
        parts.append("")
    return "\n".join(parts)


def _row(field: dataclasses.Field[object]) -> str:
    shape = shape_of(field.name)
    if field.default is not dataclasses.MISSING:
        default = "(empty)" if field.default in ("", None) else f"`{field.default}`"
    else:
        default = "(none)"
    allowed = ", ".join(f"`{c}`" for c in shape.options() if c) if shape.options() else shape.words()
    description = str(field.metadata.get("description", "")).replace("|", "\\|")
    flag = "--" + field.name.replace("_", "-")
    return f"| `{flag}` | `{field.name}` | {default} | {allowed or '-'} | {description} |"


PAGES = {"cli.md": cli_reference, "settings.md": settings_reference}


def main() -> int:
    """Rewrite the generated pages under docs/."""
    DOCS.mkdir(exist_ok=True)
    for name, render in PAGES.items():
        (DOCS / name).write_text(render(), "utf-8")
        print(f"wrote docs/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
