"""Where batch items keep checkpoints, exclusivity and status: `FolderStore` (SQLite in each run folder, a file
lock per item) on one machine, or `refineloop.apps.postgres.PostgresStore` (shared Postgres, the runs table,
advisory locks) across hosts.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from refineloop.apps.batch.items import BatchItem, ItemResult
from refineloop.apps.postgres import check_url
from refineloop.apps.reading import read_values
from refineloop.errors import RunBusyError, RunFolderError
from refineloop.files.safe_io import read_json_object, write_json_atomic
from refineloop.run_folder.checkpoints import CHECKPOINTS, connect, run_saver
from refineloop.run_folder.lock import locked

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

ITEM_RECORD = "batch-item.json"


class Store(Protocol):
    """Where items keep checkpoints, exclusivity and status (SQLite folders, or Postgres)."""

    kind: str

    def register(self, batch: str, items: list[BatchItem]) -> None:
        """Make the items known (the Postgres queue inserts rows)."""

    def hold(self, item: BatchItem) -> AbstractContextManager[BaseCheckpointSaver[str]]:
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
    def hold(self, item: BatchItem) -> Iterator[BaseCheckpointSaver[str]]:
        """Lock the item's folder (flock: freed by the kernel if this process dies) and open its SQLite."""
        Path(item.run_dir).mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            try:
                stack.enter_context(locked(item.run_dir))
            except RunFolderError as exc:
                raise RunBusyError(str(exc)) from None
            record = self._record(item)
            record.update(status="running", attempts=int(record.get("attempts", 0)) + 1, error="")
            write_json_atomic(Path(item.run_dir) / ITEM_RECORD, record)
            conn = connect(item.run_dir)
            stack.callback(conn.close)
            yield run_saver(conn)

    def values(self, item: BatchItem) -> dict[str, Any]:
        """The folder's latest checkpoint (without taking its lock: reading is safe under WAL)."""
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
        write_json_atomic(Path(item.run_dir) / ITEM_RECORD, record)

    def claim_batch(self, batch: str) -> None:
        """Hold `.batch.lock` in the batch folder (flock, freed when this process dies) until `close`."""
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
        record = read_json_object(Path(item.run_dir) / ITEM_RECORD, RECORD_LIMIT)
        return record if record is not None else {"status": "pending", "attempts": 0, "error": ""}


#: The most a batch item's record may weigh: it holds a status, counts and one error line.
RECORD_LIMIT = 1 << 20


def open_store(checkpointer: str, batch_dir: str, *, pool_size: int = 8, create_tables: bool = True) -> Store:
    """`FolderStore` for "" or "sqlite", `PostgresStore` for a postgres:// URL (tables created if missing, unless
    a driver already did: `create_tables=False`)."""
    if checkpointer in ("", "sqlite"):
        return FolderStore(batch_dir)
    from refineloop.apps.postgres import PostgresStore, prepare

    if create_tables:
        prepare(check_url(checkpointer))
    return PostgresStore(checkpointer, pool_size=pool_size)


def store_kind(checkpointer: str) -> str:
    """The store a --checkpointer value names: sqlite or postgres (a one-line error otherwise)."""
    if checkpointer in ("", "sqlite"):
        return "sqlite"
    check_url(checkpointer)
    return "postgres"
