"""Goals files: one goal per line (`.txt`), one JSON object per line (`.jsonl`; a line of a text file that starts
with `{` is read the same way), or `[[items]]` tables in TOML with an optional `[defaults]` table.

An item may carry its own `task`, `seed` and any run setting (`strategy`, `max_iterations`, ...); flags on the
command line apply to every item that does not set them itself. A bad entry becomes an item that fails alone.
"""

from __future__ import annotations

import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from refineloop.apps.batch.items import BatchItem
from refineloop.errors import SettingsError
from refineloop.files.safe_io import read_user_text
from refineloop.settings import RunSettings

#: Settings an item cannot set: the batch gives every item its own folder, and nobody answers review questions.
ITEM_FORBIDDEN = {"output_dir": "the batch gives each item its own run folder", "review": "a batch runs unattended"}
_ITEM_KEYS = ("goal", "task", "seed")

#: A goals file is read whole before anything starts; past these it is surely the wrong file.
MAX_GOALS_BYTES = 16_000_000
MAX_ITEMS = 10_000


def _setting_types() -> dict[str, Any]:
    """RunSettings field name -> the type its values must have (None stripped from optionals)."""
    hints = typing.get_type_hints(RunSettings)
    kinds: dict[str, Any] = {}
    for name, hint in hints.items():
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        kinds[name] = hint
    return kinds


def _coerce(name: str, value: Any, kind: Any, where: str) -> Any:
    """A setting value of the right type, or a one-line SettingsError naming the item."""
    flag = "--" + name.replace("_", "-")
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{where}: {flag} takes true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise SettingsError(f"{where}: {flag} takes a whole number, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise SettingsError(f"{where}: {flag} takes a number, got {value!r}")
    if typing.get_origin(kind) is list:
        # A knob given several times on the command line (--lora): a list of texts here, or one text.
        values = [value] if isinstance(value, str) else value
        if isinstance(values, list) and all(isinstance(v, str) for v in values):
            return list(values)
        raise SettingsError(f'{where}: {flag} takes a list of texts, got {value!r}: write ["a", "b"]')
    if isinstance(value, str):
        return value
    raise SettingsError(f"{where}: {flag} takes text, got {value!r}")


def _item_from_mapping(data: dict[str, Any], index: int, where: str, base_dir: Path) -> BatchItem:
    """Build an item from a JSON object or TOML table: goal/task/seed plus run settings."""
    kinds = _setting_types()
    flags: dict[str, Any] = {}
    for raw_key, value in data.items():
        if not isinstance(raw_key, str):
            raise SettingsError(f"{where}: setting names are text, got {raw_key!r}")
        key = raw_key.replace("-", "_")
        if key in _ITEM_KEYS:
            continue
        if key in ITEM_FORBIDDEN:
            raise SettingsError(f"{where}: '{raw_key}' cannot be set per item ({ITEM_FORBIDDEN[key]})")
        if key not in kinds:
            raise SettingsError(f"{where}: unknown setting '{raw_key}' (see `refineloop run --help` for the names)")
        flags[key] = _coerce(key, value, kinds[key], where)
    goal = data.get("goal", "")
    task = data.get("task", "")
    for key, value in (("goal", goal), ("task", task)):
        if not isinstance(value, str):
            raise SettingsError(f'{where}: {key} must be text, got {value!r}: write {key} = "..."')
    if not goal.strip() and not task.strip():
        raise SettingsError(f"{where}: an item needs a goal or a task")
    seed = _coerce("seed", data.get("seed"), int, where)
    task = task.strip()
    if task.endswith(".toml") and "\x00" not in task and not expanded_path(task).is_absolute():
        # A task file named in a goals file is found next to the goals file, wherever the command runs.
        beside = (base_dir / task).resolve()
        if beside.is_file():
            task = str(beside)
    return BatchItem(index=index, goal=goal.strip(), task=task, seed=seed, flags=flags, source=where)


def expanded_path(path: str) -> Path:
    """`~/x` expanded; `~nobody/x` (an unknown user) left as written rather than raising."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def parse_goals(path: str | Path) -> list[BatchItem]:
    """Read a goals file (text, JSONL or TOML) into items.

    A file that cannot be read as a whole (missing, too large, not UTF-8, not TOML, no items) is a one-line
    SettingsError. A bad entry is not: it becomes an item whose `problem` says what is wrong, so it fails
    alone and the others run; only when every entry is bad is the first one's problem raised.
    """
    file = expanded_path(str(path))
    if not file.exists():
        raise SettingsError(f"goals file {path} does not exist: pass a text, JSONL or TOML file of goals")
    text = read_user_text(file, f"goals file {path}", MAX_GOALS_BYTES, SettingsError)
    base_dir = file.resolve().parent
    items = _parse_toml(text, file, base_dir) if file.suffix.lower() == ".toml" else _parse_lines(text, file, base_dir)
    if not items:
        raise SettingsError(f"goals file {path} has no goals: write one goal per line")
    if len(items) > MAX_ITEMS:
        raise SettingsError(f"goals file {path} has {len(items)} goals, more than {MAX_ITEMS}: split it")
    refuse_if_all_bad(items)
    return items


def refuse_if_all_bad(items: list[BatchItem]) -> None:
    """Nothing could run: say the first problem in one line rather than print a table of failures."""
    if items and all(item.problem for item in items):
        raise SettingsError(items[0].problem)


def _refused(index: int, where: str, preview: Any, problem: SettingsError | str) -> BatchItem:
    """An entry that cannot run: kept in its place so the summary reports it, labelled by what it said."""
    goal = preview if isinstance(preview, str) else ""
    if not goal.strip():
        goal = f"(unreadable entry at {where})"
    return BatchItem(index=index, goal=" ".join(goal.split())[:200], source=where, problem=str(problem))


def _parse_lines(text: str, file: Path, base_dir: Path) -> list[BatchItem]:
    items: list[BatchItem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{file.name}:{number}"
        index = len(items) + 1
        if not line.startswith(("{", '"')):
            items.append(BatchItem(index=index, goal=line, source=where))
            continue
        try:
            data = _json_line(line, where)
            items.append(_item_from_mapping(data, index, where, base_dir))
        except SettingsError as exc:
            items.append(_refused(index, where, line, exc))
    return items


def _json_line(line: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "nested too deep"
        raise SettingsError(f"{where}: not valid JSON ({detail})") from None
    if isinstance(data, str):
        data = {"goal": data}
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: a JSON line must be an object or a string")
    return data


def _parse_toml(text: str, file: Path, base_dir: Path) -> list[BatchItem]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{file.name}: not valid TOML ({exc})") from None
    unknown = sorted(set(doc) - {"defaults", "items", "item"})
    if unknown:
        raise SettingsError(f"{file.name}: unknown table(s) {', '.join(unknown)}: use [defaults] and [[items]]")
    defaults = doc.get("defaults", {})
    entries = doc.get("items", doc.get("item", []))
    if not isinstance(defaults, dict) or not isinstance(entries, list):
        raise SettingsError(f"{file.name}: write [defaults] as a table and each goal as an [[items]] table")
    items: list[BatchItem] = []
    for n, entry in enumerate(entries, start=1):
        where = f"{file.name} item {n}"
        if isinstance(entry, str):
            entry = {"goal": entry}
        preview = entry.get("goal") or entry.get("task") if isinstance(entry, dict) else None
        try:
            if not isinstance(entry, dict):
                raise SettingsError(f"{where}: an item is a table with a goal (or task)")
            items.append(_item_from_mapping({**defaults, **entry}, n, where, base_dir))
        except SettingsError as exc:
            items.append(_refused(n, where, preview, exc))
    return items
