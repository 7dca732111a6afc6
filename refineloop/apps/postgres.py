"""Postgres for batches: one connection pool, LangGraph's PostgresSaver, a runs table as the queue, run locks.

- **Checkpoints** live in LangGraph's own tables (`PostgresSaver`), written through a shared pool that this
  module builds itself: `PostgresSaver.from_conn_string` hard-codes prepared statements, which break behind
  PgBouncer in transaction mode.
- **The queue** is the table `refineloop_runs`: one row per batch item with its goal, thread id, status and
  attempts. A driver that restarts (or a whole cluster) reads it and resubmits only the unfinished rows.
- **Run locks** are session advisory locks keyed by thread id, all held on one dedicated connection per
  process. Postgres drops them the moment that session ends, so a killed holder never leaves a stale lock;
  server-side TCP keepalives make that true across hosts too (a vanished machine sends no FIN).

Every failure a person can fix (a bad URL, a server that is down, a missing extra) is one line.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from refineloop.errors import RunBusyError, ScaleError, missing_extra

if TYPE_CHECKING:
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg import Connection
    from psycopg.rows import DictRow
    from psycopg_pool import ConnectionPool

    from refineloop.apps.batch.items import BatchItem, ItemResult

CONNECT_TIMEOUT_S = 5
"""How long a connection attempt may take before Postgres is reported unreachable."""

# Client keepalives notice a dead server; the same values sent as server settings make Postgres notice a
# dead client (and free its advisory locks) within about a minute instead of the kernel's two hours.
_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
_SERVER_KEEPALIVE = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"

# A fixed key serialises schema set-up between drivers that start at the same moment: CREATE TABLE IF NOT
# EXISTS and LangGraph's migrations both race on an empty database otherwise.
_SETUP_LOCK_KEY = 7_046_311_902_551_117
_LOCK_PREFIX = "refineloop:"

RUNS_TABLE = "refineloop_runs"
FINISHED = ("done",)
"""Row statuses a restarted driver leaves alone."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (
    thread_id   text PRIMARY KEY,
    batch       text NOT NULL,
    item        integer NOT NULL,
    goal        text NOT NULL,
    spec        jsonb NOT NULL,
    run_dir     text NOT NULL,
    status      text NOT NULL DEFAULT 'pending',
    attempts    integer NOT NULL DEFAULT 0,
    best_score  double precision,
    images      integer NOT NULL DEFAULT 0,
    seconds     double precision NOT NULL DEFAULT 0,
    error       text NOT NULL DEFAULT '',
    host        text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (batch, item)
)
"""

# Tables made before scores could be fractional (a mean of several looks, 7.33) kept them as integer, which
# rounds; widening the column in place keeps every row and lets an old batch database open as it was.
_BEST_SCORE_TYPE = f"""
SELECT data_type FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = '{RUNS_TABLE}' AND column_name = 'best_score'
"""
_FLOAT_SCORES = f"ALTER TABLE {RUNS_TABLE} ALTER COLUMN best_score TYPE double precision"


def check_url(url: str) -> str:
    """The URL if it names Postgres (`postgres://` or `postgresql://`), else a one-line ScaleError."""
    if not url.startswith(("postgres://", "postgresql://")):
        raise ScaleError(f"--checkpointer takes a postgres://user@host:port/db URL, got '{url}'")
    return url


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise missing_extra("psycopg", "postgres") from None
    return psycopg


def where(url: str) -> str:
    """host:port/db of a Postgres URL, without user or password, for messages."""
    psycopg = _psycopg()
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ScaleError(f"cannot read the Postgres URL: {_first_line(exc)}") from None
    host = info.get("host") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or info.get('user') or ''}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unreachable(url: str, exc: BaseException) -> ScaleError:
    return ScaleError(
        f"cannot reach Postgres at {where(url)} ({_first_line(exc)}): start it, or fix the --checkpointer URL"
    )


def connect(url: str, *, for_locks: bool = False) -> Connection[tuple[Any, ...]]:
    """One autocommit connection; `for_locks` also asks the server to probe this client with keepalives."""
    psycopg = _psycopg()
    extra: dict[str, Any] = dict(_KEEPALIVE)
    if for_locks:
        extra["options"] = _SERVER_KEEPALIVE
    try:
        conn: Connection[tuple[Any, ...]] = psycopg.connect(
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, **extra
        )
        return conn
    except (psycopg.OperationalError, socket.gaierror) as exc:
        raise _unreachable(url, exc) from None
    except psycopg.ProgrammingError as exc:
        raise ScaleError(f"cannot read the Postgres URL: {_first_line(exc)}") from None


def open_pool(url: str, max_size: int = 8) -> ConnectionPool[Connection[DictRow]]:
    """A pool shaped for PostgresSaver (autocommit, dict rows), opened and checked before it is returned.

    Prepared statements are off (`prepare_threshold=None`) so the pool also works behind PgBouncer.
    """
    connect(url).close()  # the clearest error for an unreachable server comes from a plain connect
    try:
        from psycopg import Connection
        from psycopg.rows import DictRow, dict_row
        from psycopg_pool import ConnectionPool
    except ImportError:
        raise missing_extra("psycopg-pool", "postgres") from None
    kwargs = {"autocommit": True, "row_factory": dict_row, "prepare_threshold": None, **_KEEPALIVE}
    pool = ConnectionPool(
        url,
        connection_class=Connection[DictRow],
        min_size=1,
        max_size=max(1, max_size),
        kwargs=kwargs,
        timeout=60,
        open=False,
        name="refineloop",
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
    except Exception as exc:  # PoolTimeout and friends: the server went away between the probe and now
        pool.close()
        raise _unreachable(url, exc) from None
    return pool


def open_saver(pool: ConnectionPool[Connection[DictRow]]) -> PostgresSaver:
    """LangGraph's PostgresSaver on `pool` (tables must exist: see `prepare`)."""
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError:
        raise missing_extra("langgraph-checkpoint-postgres", "postgres") from None
    return PostgresSaver(pool)


def prepare(url: str) -> None:
    """Create LangGraph's checkpoint tables and the runs table once, serialised between concurrent callers."""
    pool = open_pool(url, max_size=1)
    try:
        with connect(url) as guard:
            guard.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK_KEY,))
            try:
                open_saver(pool).setup()
                guard.execute(_SCHEMA)
                _migrate_scores(guard)
            finally:
                guard.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK_KEY,))
    finally:
        pool.close()


def _migrate_scores(conn: Connection[tuple[Any, ...]]) -> None:
    """Widen an old table's integer best_score to double precision (a no-op on a table made as it is now)."""
    row = conn.execute(_BEST_SCORE_TYPE).fetchone()
    if row is not None and row[0] == "integer":
        conn.execute(_FLOAT_SCORES)


class RunLocks:
    """Advisory locks on run thread ids, all held on one connection of this process.

    One connection for every lock of a process keeps a runner with dozens of runs to one Postgres session;
    the session's end (a crash, a kill, a lost host) frees all of them at once.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = connect(url, for_locks=True)
        self._mutex = threading.Lock()  # a psycopg connection serves one thread at a time
        self._held: set[str] = set()

    def try_take(self, thread_id: str) -> bool:
        """Take the lock of `thread_id`; False when anyone, this process included, holds it."""
        with self._mutex:
            # Postgres advisory locks are re-entrant within a session: refuse a second taker here ourselves.
            if thread_id in self._held:
                return False
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_LOCK_PREFIX + thread_id,)
            ).fetchone()
            if row and row[0]:
                self._held.add(thread_id)
                return True
            return False

    def release(self, thread_id: str) -> None:
        """Free the lock of `thread_id` if this process holds it."""
        with self._mutex:
            if thread_id not in self._held:
                return
            self._held.discard(thread_id)
            if not self._conn.closed:
                self._conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (_LOCK_PREFIX + thread_id,))

    @contextmanager
    def hold(self, thread_id: str) -> Iterator[None]:
        """Hold the lock for the block; RunBusyError when another process has it."""
        if not self.try_take(thread_id):
            raise RunBusyError(f"run {thread_id} is being run by another process right now")
        try:
            yield
        finally:
            self.release(thread_id)

    def close(self) -> None:
        """End the session, which frees every lock it holds."""
        with self._mutex:
            self._held.clear()
            self._conn.close()


class RunsTable:
    """The queue: one row per batch item (thread id, goal, status, attempts, and the outcome when finished)."""

    def __init__(self, pool: ConnectionPool[Connection[DictRow]]) -> None:
        self.pool = pool

    def enqueue(self, batch: str, items: list[BatchItem]) -> None:
        """Add the items not yet in the table; rows already there (and their status) are kept."""
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {RUNS_TABLE} (thread_id, batch, item, goal, spec, run_dir) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (thread_id) DO NOTHING",
                [(i.thread_id, batch, i.index, i.goal, json.dumps(i.spec()), i.run_dir) for i in items],
            )

    def rows(self, batch: str) -> dict[str, dict[str, Any]]:
        """Every row of a batch, by thread id."""
        with self.pool.connection() as conn:
            found = conn.execute(f"SELECT * FROM {RUNS_TABLE} WHERE batch = %s ORDER BY item", (batch,)).fetchall()
        return {row["thread_id"]: dict(row) for row in found}

    def claim(self, thread_id: str, host: str) -> int:
        """Mark a row running (its lock is held) and count the attempt; returns the attempt number."""
        with self.pool.connection() as conn:
            row = conn.execute(
                f"UPDATE {RUNS_TABLE} SET status = 'running', attempts = attempts + 1, host = %s, error = '', "
                "updated_at = now() WHERE thread_id = %s RETURNING attempts",
                (host, thread_id),
            ).fetchone()
        return int(row["attempts"]) if row else 0

    def finish(self, thread_id: str, result: ItemResult) -> None:
        """Record how an attempt ended."""
        with self.pool.connection() as conn:
            conn.execute(
                f"UPDATE {RUNS_TABLE} SET status = %s, best_score = %s, images = %s, seconds = %s, error = %s, "
                "updated_at = now() WHERE thread_id = %s",
                (result.status, result.best_score, result.images, result.seconds, result.error, thread_id),
            )


class PostgresStore:
    """Where batch items keep their checkpoints, locks and status when the batch runs on Postgres.

    The same store serves the local engine (one process) and every Ray runner actor (one per process).
    """

    kind = "postgres"

    def __init__(self, url: str, *, pool_size: int = 8, host: str = "") -> None:
        self.url = check_url(url)
        self.host = host or socket.gethostname()
        self.pool = open_pool(url, max_size=pool_size)
        self.saver = open_saver(self.pool)
        self.table = RunsTable(self.pool)
        self.locks = RunLocks(url)

    def register(self, batch: str, items: list[BatchItem]) -> None:
        """Put the batch's items in the queue table (existing rows untouched)."""
        self.table.enqueue(batch, items)

    @contextmanager
    def hold(self, item: BatchItem) -> Iterator[Any]:
        """The item's checkpointer, while this process holds the item's lock and its row says running."""
        with self.locks.hold(item.thread_id):
            self.table.claim(item.thread_id, self.host)
            yield self.saver

    def values(self, item: BatchItem) -> dict[str, Any]:
        """The item's latest checkpointed state ({} before its first checkpoint), delta channels rebuilt (the
        graph's channels are the same for every strategy but the agents' bookkeeping, which is not read here)."""
        from refineloop.graph_build import build_graph

        config: Any = {"configurable": {"thread_id": item.thread_id, "checkpoint_ns": ""}}
        return dict(build_graph("greedy", self.saver).get_state(config).values)

    def records(self, batch: str) -> dict[str, dict[str, Any]]:
        """The queue rows of a batch, by thread id (status, attempts, error...)."""
        return self.table.rows(batch)

    def finished(self, item: BatchItem, result: ItemResult) -> None:
        """Record an attempt's outcome in the queue."""
        self.table.finish(item.thread_id, result)

    def claim_batch(self, batch: str) -> None:
        """Hold the batch's advisory lock on this process's lock session until `close`."""
        if not self.locks.try_take(f"batch:{batch}"):
            raise RunBusyError(f"batch {batch} is being driven by another process right now")

    def close(self) -> None:
        """Free the locks and the pool."""
        self.locks.close()
        self.pool.close()
