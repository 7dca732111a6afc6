"""One command-line flag per RunSettings field, described by the field's own description.

`refineloop run`, `demo`, `resume`, `fork` and `batch` all take their run settings through `add_settings_flags`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
from collections.abc import Sequence
from typing import Any, get_args, get_type_hints

from refineloop.backends.builtin import BACKENDS
from refineloop.backends.table import Kind
from refineloop.knob_shapes import GROUPS, shape_of
from refineloop.settings import RunSettings

#: The settings whose help lists the backends that can serve them, and the kind of backend each one takes.
MODEL_FLAGS: dict[str, Kind] = {"image_model": "image", "eval_model": "chat"}


def backend_help(kind: Kind) -> str:
    """The spec shapes of every registered backend of `kind`, each with its one line, for --help."""
    return " Backends: " + "; ".join(f"{e.syntax}: {e.summary}" for e in BACKENDS.all(kind) if e.summary) + "."


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
    parser: argparse.ArgumentParser,
    defaults: dict[str, Any] | None = None,
    *,
    overrides_only: bool = False,
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
) -> None:
    """One flag per RunSettings field (or per field named in `only`), described by the field's own description.

    With `overrides_only` a flag not given leaves no attribute at all (so a fork or a resume can tell what was
    asked for), and booleans get a `--no-` form, since the setting they override may be on.
    """
    defaults = defaults or {}
    fields = [f for f in dataclasses.fields(RunSettings) if (only is None or f.name in only) and f.name not in skip]
    groups = _groups(parser, {shape_of(f.name).group for f in fields})
    for field in fields:
        target = groups[shape_of(field.name).group]
        flag = "--" + field.name.replace("_", "-")
        default = argparse.SUPPRESS if overrides_only else defaults.get(field.name, field.default)
        if default is dataclasses.MISSING:
            default = field.default_factory()  # type: ignore[operator]  # a list knob: a fresh empty list
        if _flag_type(field) == list[str]:
            # A knob that holds several values takes its flag once per value (--lora a --lora b:0.5).
            target.add_argument(
                flag,
                dest=field.name,
                action="append",
                default=default,
                help=field.metadata.get("description", ""),
                metavar=field.name.upper(),
            )
            continue
        help_text = field.metadata.get("description", "") + _shape_help(field.name)
        if field.name in MODEL_FLAGS:
            help_text += backend_help(MODEL_FLAGS[field.name])
        shown = "" if overrides_only or default in (None, "") else f" (default: {default})"
        if _flag_type(field) is bool:
            # A setting that is on by default needs its --no- form to be turned off at all.
            action = argparse.BooleanOptionalAction if overrides_only or default is True else "store_true"
            target.add_argument(flag, dest=field.name, action=action, default=default, help=help_text)
            continue
        # `--from IMAGE` reads as a sentence; --from-image stays for symmetry with the setting's name.
        names = (flag, "--from") if field.name == "from_image" else (flag,)
        target.add_argument(
            *names,
            dest=field.name,
            type=_flag_type(field),
            default=default,
            help=help_text + shown,
            metavar=field.name.upper(),
        )


def _groups(parser: argparse.ArgumentParser, wanted: set[str]) -> dict[str, Any]:
    """One argument group per settings group in `wanted`, made in GROUPS' order so --help reads in it."""
    order = [*GROUPS, *sorted(wanted - set(GROUPS))]
    return {
        group: parser.add_argument_group(f"{group} settings", GROUPS.get(group, "not grouped yet").capitalize() + ".")
        for group in order
        if group in wanted
    }


def _shape_help(name: str) -> str:
    """The bounds or choices of setting `name`, as a sentence for its help."""
    shape = shape_of(name)
    if shape.options():
        return f" Choices: {', '.join(choice for choice in shape.options() if choice)}."
    words = shape.words()
    return f" Must be {words}." if words else ""
