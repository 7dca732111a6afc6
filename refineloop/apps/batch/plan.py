"""A batch ready to run: its folder, its id, and batch.json, which fixes every item's thread id and run folder.

The first start writes the manifest; running the same command again reads it back, which is what resumes the
batch. An item edited since then, or a different checkpointer, is refused in one line.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refineloop.apps.batch.goals_file import expanded_path, parse_goals, refuse_if_all_bad
from refineloop.apps.batch.items import BatchItem
from refineloop.backends.checks import validated
from refineloop.errors import RefineError, RunFolderError, SettingsError
from refineloop.files.names import safe_component
from refineloop.files.safe_io import read_json_object, write_json_atomic
from refineloop.settings import RunSettings

MANIFEST = "batch.json"


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
    refuse_if_all_bad(items)
    folder = expanded_path(batch_dir).resolve() if batch_dir else Path(default_batch_dir(goals_file))
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
    write_json_atomic(manifest_path, manifest)
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
        validated(settings)
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
    if not path.exists() and not path.is_symlink():
        return None
    data = read_json_object(path, 16 << 20)  # a FIFO, a folder or a huge file there is damage too
    if data is None or "batch_id" not in data:
        raise RunFolderError(f"{path} is damaged: restore it, or pass a new --output-dir") from None
    return data
