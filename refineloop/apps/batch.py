"""Batches: many goals, one run folder each, a summary at the end; resumable after any interruption.

A goals file holds the items: one goal per line (`.txt`), one JSON object per line (`.jsonl`; a line of a
text file that starts with `{` is read the same way), or `[[items]]` tables in TOML with an optional
`[defaults]` table. An item may carry its own `task`, `seed` and any run setting (`strategy`,
`max_iterations`, ...); flags on the command line apply to every item that does not set them itself.

The batch folder keeps `batch.json` (the items, their thread ids and run folders, fixed at the first start),
one run folder per item (`001-<goal>`), and `summary.txt` / `summary.json`. Running the same command again
resumes: finished items are left untouched, the interrupted one continues from its last image, the rest start.

Checkpoints and the queue live in a *store*: `FolderStore` (SQLite in each run folder, a file lock per item)
here, or `refineloop.scale.postgres.PostgresStore` (shared Postgres, the runs table, advisory locks). The
function that executes one item, `run_item`, is the same for the local engine and for Ray runner actors.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import threading
import time
import tomllib
import types
import typing
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from refineloop.errors import RefineError, RunFolderError, SettingsError
from refineloop.run_folder.names import safe_component
from refineloop.run_folder.safe_io import read_user_text, write_text_atomic
from refineloop.settings import RunSettings, settings_warnings

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.runtime import RunControl

    from refineloop.backends.model_cache import ModelCache

MANIFEST = "batch.json"
ITEM_RECORD = "batch-item.json"
SUMMARY_TEXT = "summary.txt"
SUMMARY_JSON = "summary.json"

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130

#: Settings an item cannot set: the batch gives every item its own folder, and nobody answers review questions.
ITEM_FORBIDDEN = {"output_dir": "the batch gives each item its own run folder", "review": "a batch runs unattended"}
_ITEM_KEYS = ("goal", "task", "seed")

#: A goals file is read whole before anything starts; past these it is surely the wrong file.
MAX_GOALS_BYTES = 16_000_000
MAX_ITEMS = 10_000


# --------------------------------------------------------------------------------------------- items


@dataclass
class BatchItem:
    """One goal of a batch, with the run settings it overrides and, once planned, its thread and folder."""

    index: int
    """1-based position in the goals file."""
    goal: str = ""
    """The goal sentence (a quick task); empty when `task` names a preset or task file instead."""
    task: str = ""
    """A task preset or TOML file; empty takes the command line's (or the default) task."""
    seed: int | None = None
    """The item's own seed; None takes the command line's, else one is chosen and recorded."""
    flags: dict[str, Any] = field(default_factory=dict)
    """Run settings this item sets itself (RunSettings field names)."""
    source: str = ""
    """Where the item was read (`goals.txt:3`), for messages."""
    thread_id: str = ""
    """The LangGraph thread of the item's run; fixed in batch.json at the batch's first start."""
    run_dir: str = ""
    """The item's run folder."""
    problem: str = ""
    """Why the item cannot run (one line naming it), found while reading or checking it; such an item is
    reported as failed and the others run."""

    @property
    def label(self) -> str:
        """What the summary shows: the goal, or the task it names."""
        return self.goal or (f"task {self.task}" if self.task else "task (default)")

    def spec(self) -> dict[str, Any]:
        """What defines the item: compared with batch.json so an edited goals file is noticed."""
        return {"goal": self.goal, "task": self.task, "seed": self.seed, "flags": dict(sorted(self.flags.items()))}

    def settings(self, base: RunSettings) -> RunSettings:
        """The item's run settings: the command line's, then the item's own, in the item's run folder."""
        values = base.to_dict()
        values.update(self.flags)
        if self.goal or self.task:
            values["goal"] = self.goal
            values["task"] = self.task or base.task
        if self.seed is not None:
            values["seed"] = self.seed
        values["output_dir"] = self.run_dir
        values["review"] = False
        return RunSettings.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (for Ray calls and batch.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchItem:
        """The inverse of `to_dict`."""
        return cls(**data)


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
    if task.endswith(".toml") and "\x00" not in task and not _expanded(task).is_absolute():
        # A task file named in a goals file is found next to the goals file, wherever the command runs.
        beside = (base_dir / task).resolve()
        if beside.is_file():
            task = str(beside)
    return BatchItem(index=index, goal=goal.strip(), task=task, seed=seed, flags=flags, source=where)


def _expanded(path: str) -> Path:
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
    file = _expanded(str(path))
    if not file.exists():
        raise SettingsError(f"goals file {path} does not exist: pass a text, JSONL or TOML file of goals")
    text = read_user_text(file, f"goals file {path}", MAX_GOALS_BYTES, SettingsError)
    base_dir = file.resolve().parent
    items = _parse_toml(text, file, base_dir) if file.suffix.lower() == ".toml" else _parse_lines(text, file, base_dir)
    if not items:
        raise SettingsError(f"goals file {path} has no goals: write one goal per line")
    if len(items) > MAX_ITEMS:
        raise SettingsError(f"goals file {path} has {len(items)} goals, more than {MAX_ITEMS}: split it")
    _raise_if_all_bad(items)
    return items


def _raise_if_all_bad(items: list[BatchItem]) -> None:
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


# --------------------------------------------------------------------------------------------- plan


@dataclass
class BatchPlan:
    """A batch ready to run: its folder, its id (the prefix of its thread ids), items and shared settings."""

    goals_file: str
    batch_dir: str
    batch_id: str
    items: list[BatchItem]
    """The items that run."""
    base: RunSettings
    """The command line's settings, applied to every item that does not override them."""
    store_kind: str
    """sqlite or postgres: a batch keeps the checkpointer it started with."""
    rejected: list[BatchItem] = field(default_factory=list)
    """Items that cannot run (each with its `problem`): reported as failed, never started."""

    def settings_for(self, item: BatchItem) -> RunSettings:
        """The settings an item starts with."""
        return item.settings(self.base)


def _slug(text: str, limit: int = 40) -> str:
    """A goal, task or file name as one folder-name component (goals files are user text: no `..`, no `/`)."""
    return safe_component(text.lower(), limit, fallback="item")


def default_batch_dir(goals_file: str | Path, root: str = "runs") -> str:
    """runs/<goals file name>-batch: the same command finds the same folder again, which is what resumes it."""
    return str((Path(root) / f"{_slug(Path(goals_file).stem, 60)}-batch").resolve())


def plan_batch(goals_file: str, base: RunSettings, batch_dir: str = "", store_kind: str = "sqlite") -> BatchPlan:
    """Parse, check every item's settings, and fix thread ids and folders in batch.json (or read them back).

    The first start writes the manifest; a later start with the same goals file reuses it. An item edited
    since then, or a different checkpointer, is refused in one line: resuming it would mix two batches.
    """
    items = parse_goals(goals_file)
    for item in items:
        item.problem = item.problem or _item_problem(item, base)
    _raise_if_all_bad(items)
    folder = _expanded(batch_dir).resolve() if batch_dir else Path(default_batch_dir(goals_file))
    manifest_path = folder / MANIFEST
    old = _read_manifest(manifest_path)
    if old is None:
        batch_id = uuid.uuid4().hex[:12]
        known: dict[int, dict[str, Any]] = {}
    else:
        batch_id = old["batch_id"]
        if old.get("store") != store_kind:
            raise SettingsError(
                f"{folder} was started with {old.get('store')} checkpoints: run it with the same --checkpointer "
                "(or pass a new --output-dir)"
            )
        known = {int(entry["index"]): entry for entry in old.get("items", [])}
        if len(items) < len(known):
            raise SettingsError(
                f"{goals_file} has {len(items)} items but the batch in {folder} has {len(known)}: restore the "
                "goals file, or pass a new --output-dir"
            )
    for item in items:
        entry = known.get(item.index)
        if entry is not None:
            if entry["spec"] != json.loads(json.dumps(item.spec())) and not item.problem:
                raise SettingsError(
                    f"{item.source} changed since the batch in {folder} started: restore it, or pass a new "
                    "--output-dir (new goals may be appended at the end)"
                )
            item.thread_id, item.run_dir = entry["thread_id"], entry["run_dir"]
        elif not item.problem:
            item.thread_id = f"{batch_id}-{item.index:03d}"
            item.run_dir = str(folder / f"{item.index:03d}-{_slug(item.label)}")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "batch_id": batch_id,
        "goals_file": str(Path(goals_file).resolve()),
        "store": store_kind,
        "created": old["created"] if old else time.strftime("%Y-%m-%dT%H:%M:%S"),
        # A refused item keeps the entry it had (restored, it resumes); one that never ran gets none, so once
        # fixed it is taken like an appended goal.
        "items": [known[i.index] if i.problem else _manifest_entry(i) for i in items if i.thread_id],
    }
    _write_json(manifest_path, manifest)
    runnable = [i for i in items if not i.problem]
    rejected = [i for i in items if i.problem]
    return BatchPlan(str(Path(goals_file).resolve()), str(folder), batch_id, runnable, base, store_kind, rejected)


def _manifest_entry(item: BatchItem) -> dict[str, Any]:
    return {
        "index": item.index,
        "spec": item.spec(),
        "thread_id": item.thread_id,
        "run_dir": item.run_dir,
        "source": item.source,
    }


def _check_item(item: BatchItem, base: RunSettings) -> None:
    """Validate an item's settings and task now, so a typo in item 40 is known before item 1 starts."""
    from refineloop.tasks import resolve_task

    settings = item.settings(base)
    try:
        settings.validate()
        resolve_task(settings.task, settings.goal)
    except RefineError as exc:
        raise type(exc)(f"{item.source}: {exc}") from None


def _item_problem(item: BatchItem, base: RunSettings) -> str:
    """`_check_item`'s one-line refusal, or "" when the item can run."""
    try:
        _check_item(item, base)
    except RefineError as exc:
        return str(exc)
    return ""


def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
        if not isinstance(data, dict) or "batch_id" not in data:
            raise ValueError("no batch_id")
    except (OSError, ValueError):
        raise RunFolderError(f"{path} is damaged: restore it, or pass a new --output-dir") from None
    return data


def _write_json(path: Path, data: Any) -> None:
    """Write through a temporary file and a rename, so a crash never leaves half a file; never through a link."""
    write_text_atomic(path, json.dumps(data, indent=1))


# --------------------------------------------------------------------------------------------- stores


class Store(Protocol):
    """Where items keep checkpoints, exclusivity and status (SQLite folders, or Postgres)."""

    kind: str

    def register(self, batch: str, items: list[BatchItem]) -> None:
        """Make the items known (the Postgres queue inserts rows)."""

    def hold(self, item: BatchItem) -> AbstractContextManager[BaseCheckpointSaver]:
        """Hold the item exclusively and yield its checkpointer; RunBusyError when someone else holds it."""

    def values(self, item: BatchItem) -> dict[str, Any]:
        """The item's latest checkpointed state, {} before the first."""

    def records(self, batch: str) -> dict[str, dict[str, Any]]:
        """Per thread id: status, attempts and error of the last attempt."""

    def finished(self, item: BatchItem, result: ItemResult) -> None:
        """Record how an attempt ended."""

    def claim_batch(self, batch: str) -> None:
        """Be the one driver of `batch` until `close`; RunBusyError when another driver has it."""

    def close(self) -> None:
        """Release connections (and the batch, when claimed)."""


class FolderStore:
    """SQLite checkpoints in each item's run folder, the folder's file lock, and `batch-item.json` for status.

    Each item folder is an ordinary run folder, so `refineloop resume` and `refineloop runs` work on it too.
    Every process of one host may share it (the local engine, or the runner processes of a local Ray): flock
    keeps an item to one holder and is freed by the kernel when the holder dies, and SQLite's WAL serves
    readers beside the one writer. Batches across hosts use Postgres (WAL does not work over network storage).
    """

    kind = "sqlite"

    def __init__(self, batch_dir: str) -> None:
        self.batch_dir = batch_dir
        self._items: list[BatchItem] = []
        self._batch_lock: int | None = None

    def register(self, batch: str, items: list[BatchItem]) -> None:
        """Remember the items for `records` (the folders themselves are the queue)."""
        self._items = list(items)

    @contextmanager
    def hold(self, item: BatchItem) -> Iterator[BaseCheckpointSaver]:
        """Lock the item's folder (flock: freed by the kernel if this process dies) and open its SQLite."""

        from refineloop.run_folder.folder import connect, locked, run_saver
        from refineloop.scale import RunBusyError

        Path(item.run_dir).mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            try:
                stack.enter_context(locked(item.run_dir))
            except RunFolderError as exc:
                raise RunBusyError(str(exc)) from None
            record = self._record(item)
            record.update(status="running", attempts=int(record.get("attempts", 0)) + 1, error="")
            _write_json(Path(item.run_dir) / ITEM_RECORD, record)
            conn = connect(item.run_dir)
            stack.callback(conn.close)
            yield run_saver(conn)

    def values(self, item: BatchItem) -> dict[str, Any]:
        """The folder's latest checkpoint (without taking its lock: reading is safe under WAL)."""
        from refineloop.run_folder.folder import CHECKPOINTS, read_values

        if not (Path(item.run_dir) / CHECKPOINTS).is_file():
            return {}
        return read_values(item.run_dir, item.thread_id)

    def records(self, batch: str) -> dict[str, dict[str, Any]]:
        """Status records of the registered items."""
        return {item.thread_id: self._record(item) for item in self._items}

    def finished(self, item: BatchItem, result: ItemResult) -> None:
        """Write the attempt's outcome next to the item's checkpoints."""
        record = self._record(item)
        record.update(status=result.status, error=result.error)
        _write_json(Path(item.run_dir) / ITEM_RECORD, record)

    def claim_batch(self, batch: str) -> None:
        """Hold `.batch.lock` in the batch folder (flock, freed when this process dies) until `close`."""
        import fcntl

        from refineloop.scale import RunBusyError

        fd = os.open(Path(self.batch_dir) / ".batch.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunBusyError(f"batch {self.batch_dir} is being driven by another process right now") from None
        self._batch_lock = fd

    def close(self) -> None:
        """Let go of the batch; nothing else is kept open between items."""
        if self._batch_lock is not None:
            os.close(self._batch_lock)
            self._batch_lock = None

    def _record(self, item: BatchItem) -> dict[str, Any]:
        path = Path(item.run_dir) / ITEM_RECORD
        try:
            return dict(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError):
            return {"status": "pending", "attempts": 0, "error": ""}


def open_store(checkpointer: str, batch_dir: str, *, pool_size: int = 8, create_tables: bool = True) -> Store:
    """`FolderStore` for "" or "sqlite", `PostgresStore` for a postgres:// URL (tables created if missing, unless
    a driver already did: `create_tables=False`)."""
    if checkpointer in ("", "sqlite"):
        return FolderStore(batch_dir)
    from refineloop.scale.postgres import PostgresStore, check_url, prepare

    if create_tables:
        prepare(check_url(checkpointer))
    return PostgresStore(checkpointer, pool_size=pool_size)


def store_kind(checkpointer: str) -> str:
    """The store a --checkpointer value names: sqlite or postgres (a one-line error otherwise)."""
    if checkpointer in ("", "sqlite"):
        return "sqlite"
    from refineloop.scale.postgres import check_url

    check_url(checkpointer)
    return "postgres"


# --------------------------------------------------------------------------------------------- one item


@dataclass
class ItemResult:
    """How one attempt at an item ended."""

    thread_id: str
    status: str
    """done, interrupted, failed, or busy (someone else holds the item: nothing was done)."""
    best_score: int | None = None
    best_iteration: int | None = None
    images: int = 0
    seconds: float = 0.0
    """Working time: generate and judge, summed over the item's images (downtime between attempts excluded)."""
    error: str = ""
    resumed_after: int | None = None
    """The image the attempt continued after, or None when it started the item (or found it finished)."""
    worker: str = ""
    """host:pid of the process that ran the attempt."""

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (returned by Ray runner actors)."""
        return dataclasses.asdict(self)


def result_from_values(thread_id: str, status: str, values: dict[str, Any], **extra: Any) -> ItemResult:
    """An ItemResult read from a checkpointed state."""
    best = values.get("best") or {}
    # The state's running total of working time (budgets use it); older states only have it per image.
    seconds = values.get("seconds")
    if seconds is None:
        seconds = sum(float(entry.get("seconds") or 0.0) for entry in values.get("history") or [])
    return ItemResult(
        thread_id=thread_id,
        status=status,
        best_score=best.get("score"),
        best_iteration=best.get("iteration"),
        images=int(values.get("iteration") or 0),
        seconds=round(float(seconds), 3),
        worker=f"{socket.gethostname()}:{os.getpid()}",
        **extra,
    )


class _Null(io.TextIOBase):
    """A sink for progress nobody watches (runs inside Ray runner actors)."""

    def write(self, text: str) -> int:
        return len(text)


def run_item(
    item: BatchItem,
    settings: RunSettings,
    store: Store,
    models: ModelCache,
    *,
    out: TextIO | None = None,
    control: RunControl | None = None,
) -> ItemResult:
    """Start, resume or skip one item, holding it exclusively; never raises for a run's own failure.

    A finished item is returned untouched. One with a checkpoint continues from it (the interrupted node
    re-runs from its top, so an image is remade into its own file, never added twice to the state). Runs in
    any thread: unlike the terminal runner it installs no signal handlers, and `control` (when given)
    drains it.
    """
    from refineloop.scale import RunBusyError

    sink = out or _Null()
    try:
        with store.hold(item) as saver:
            result = _run_held(item, settings, saver, models, sink, control)
    except RunBusyError as exc:
        return ItemResult(item.thread_id, "busy", error=str(exc), worker=f"{socket.gethostname()}:{os.getpid()}")
    if result.status != "busy":
        store.finished(item, result)
    return result


def _run_held(
    item: BatchItem,
    settings: RunSettings,
    saver: BaseCheckpointSaver,
    models: ModelCache,
    out: TextIO,
    control: RunControl | None,
) -> ItemResult:
    from langgraph.runtime import RunControl

    from refineloop.apps.engine import check_images, execute, load_models
    from refineloop.graph import build_graph
    from refineloop.nodes.setup import initial_state, resolve_settings
    from refineloop.run_folder.folder import write_meta

    config: dict[str, Any] = {"configurable": {"thread_id": item.thread_id}}
    values = build_graph(settings.strategy, saver).get_state(config).values
    resumed_after: int | None = None
    try:
        if values.get("status") == "done":
            return result_from_values(item.thread_id, "done", values)
        if values.get("settings"):
            settings = RunSettings.from_dict(values["settings"])
            check_images(values)
            given: dict[str, Any] | None = None
            resumed_after = int(values.get("iteration") or 0)
        else:
            settings, task = resolve_settings(settings)
            given = initial_state(settings, task)
            write_meta(settings.output_dir, item.thread_id, settings.strategy, loras=settings.lora)
        load_models(models, settings, _Null())
    except RefineError as exc:
        return result_from_values(item.thread_id, "failed", values, error=str(exc), resumed_after=resumed_after)
    outcome = execute(
        settings,
        given,
        item.thread_id,
        models,
        out,
        saver,
        control=control or RunControl(),
        reviewer=_no_reviewer,
        report=False,
    )
    status, error = outcome.status, outcome.error
    if status == "done" and outcome.values.get("status") != "done":
        status, error = "failed", f"the run stopped before its end ({outcome.values.get('stop_reason') or 'no reason'})"
    return result_from_values(item.thread_id, status, outcome.values, error=error, resumed_after=resumed_after)


def _no_reviewer(question: dict[str, Any]) -> Any:
    """Nobody answers review questions in a batch: fail the item in one line (it stays resumable)."""
    raise RefineError("the run asked a review question, which nobody answers in a batch")


# --------------------------------------------------------------------------------------------- summary


@dataclass
class SummaryRow:
    """One line of the batch summary."""

    index: int
    goal: str
    status: str
    """done, failed, interrupted (has a checkpoint, not finished), running (held elsewhere) or pending."""
    best_score: int | None
    images: int
    seconds: float
    attempts: int
    run_dir: str
    thread_id: str
    error: str = ""
    audit: str = ""
    """With --audit-model: whether the independent critic agrees the run improved (improved, not improved,
    unsure); empty without an audit."""


def summarize(plan: BatchPlan, store: Store) -> list[SummaryRow]:
    """Rows from the checkpoints (the truth about images and scores) and the store's records (attempts, errors)."""
    from refineloop.judges.audit import audit_word

    records = store.records(plan.batch_id)
    rows = []
    for item in plan.items:
        values = store.values(item)
        record = records.get(item.thread_id, {})
        if values.get("status") == "done":
            status = "done"
        elif record.get("status") == "failed":
            status = "failed"
        elif values:
            status = "interrupted"
        else:
            status = "pending"
        got = result_from_values(item.thread_id, status, values)
        rows.append(
            SummaryRow(
                index=item.index,
                goal=item.label,
                status=status,
                best_score=got.best_score,
                images=got.images,
                seconds=got.seconds,
                attempts=int(record.get("attempts") or 0),
                run_dir=item.run_dir,
                thread_id=item.thread_id,
                error=str(record.get("error") or "") if status != "done" else "",
                audit=audit_word(values.get("audit")) if values.get("audit") else "",
            )
        )
    for item in plan.rejected:
        rows.append(
            SummaryRow(
                index=item.index,
                goal=item.label,
                status="failed",
                best_score=None,
                images=0,
                seconds=0.0,
                attempts=0,
                run_dir=item.run_dir,
                thread_id=item.thread_id,
                error=item.problem,
            )
        )
    return sorted(rows, key=lambda row: row.index)


def format_summary(rows: list[SummaryRow], wall_seconds: float | None = None) -> str:
    """The summary table, with a totals line."""
    width = max([len("goal")] + [min(len(r.goal), 48) for r in rows])
    audited = any(r.audit for r in rows)  # the column shows only when some run had an auditor
    audit_head = f" {'audit':<12}" if audited else ""
    lines = [f"{'#':>3}  {'goal':<{width}}  {'status':<11} {'best':>5} {'images':>6} {'time':>8}{audit_head}  folder"]
    for r in rows:
        goal = r.goal if len(r.goal) <= 48 else r.goal[:45] + "..."
        best = f"{r.best_score}/10" if r.best_score is not None else "-"
        audit = f" {r.audit or '-':<12}" if audited else ""
        lines.append(
            f"{r.index:>3}  {goal:<{width}}  {r.status:<11} {best:>5} {r.images:>6} {r.seconds:>7.1f}s{audit}  "
            f"{Path(r.run_dir).name if r.run_dir else '-'}"
        )
        if r.error:
            lines.append(f"{'':>3}  error: {r.error}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    told = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    total = f"{len(rows)} items: {told}; {sum(r.images for r in rows)} images, {sum(r.seconds for r in rows):.1f}s work"
    if wall_seconds is not None:
        total += f", {wall_seconds:.1f}s wall time this session"
    lines.append(total)
    return "\n".join(lines) + "\n"


def write_summary(plan: BatchPlan, rows: list[SummaryRow], wall_seconds: float | None = None) -> str:
    """Write summary.txt and summary.json into the batch folder; return the text."""
    text = format_summary(rows, wall_seconds)
    folder = Path(plan.batch_dir)
    write_text_atomic(folder / SUMMARY_TEXT, text)
    _write_json(folder / SUMMARY_JSON, [dataclasses.asdict(r) for r in rows])
    return text


def exit_code(rows: list[SummaryRow]) -> int:
    """0 when every item is done, 130 when some were left unfinished by a stop, else 1."""
    if all(r.status == "done" for r in rows):
        return EXIT_OK
    if any(r.status in ("interrupted", "pending", "running") for r in rows) and not any(
        r.status == "failed" for r in rows
    ):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


# --------------------------------------------------------------------------------------------- local engine


def run_local(
    plan: BatchPlan,
    store: Store,
    *,
    models: ModelCache | None = None,
    out: TextIO,
    on_item: Callable[[BatchItem, ItemResult], None] | None = None,
) -> list[SummaryRow]:
    """Run the items one after another in this process; the first Ctrl-C finishes the current image and stops.

    Returns the summary rows (also written to the batch folder). `on_item` is told after each attempt.
    """
    from langgraph.runtime import RunControl

    from refineloop.apps.engine import ctrl_c_drains
    from refineloop.backends.model_cache import MODELS

    cache = models or MODELS
    store.register(plan.batch_id, plan.items)
    started = time.time()
    control = RunControl()
    # Signal handlers can only be installed from the main thread (tests and embedders may call from others).
    guard = ctrl_c_drains(control, out) if threading.current_thread() is threading.main_thread() else nullcontext()
    total = len(plan.items)
    for item in plan.rejected:
        out.write(f"[{item.source}] {item.label}: not run: {item.problem}\n")
    try:
        with guard:
            for n, item in enumerate(plan.items, start=1):
                values = store.values(item)
                if values.get("status") == "done":
                    out.write(f"[item {n}/{total}] {item.label}: finished earlier, left as it is\n")
                    continue
                verb = f"resuming after image {values.get('iteration', 0)}" if values else "starting"
                out.write(f"[item {n}/{total}] {item.label}: {verb} -> {item.run_dir}\n")
                for warning in settings_warnings(plan.settings_for(item)):
                    out.write(f"[item {n}/{total}] {warning}\n")
                out.flush()
                result = run_item(item, plan.settings_for(item), store, cache, out=out, control=control)
                if result.status == "busy":
                    out.write(f"[item {n}/{total}] skipped: {result.error}\n")
                    continue
                best = f"best {result.best_score}/10" if result.best_score is not None else "no score"
                line = f"[item {n}/{total}] {result.status}: {best}, {result.images} images, {result.seconds:.1f}s"
                out.write(line + (f"; {result.error}" if result.error else "") + "\n")
                out.flush()
                if on_item is not None:
                    on_item(item, result)
                if result.status == "interrupted":
                    break
    except KeyboardInterrupt:
        # A second Ctrl-C between two items: nothing is mid-step, the summary below says what is left.
        out.write("stopped\n")
    rows = summarize(plan, store)
    out.write("\n" + write_summary(plan, rows, time.time() - started))
    out.write(f"summary: {Path(plan.batch_dir) / SUMMARY_TEXT}\n")
    out.flush()
    return rows
