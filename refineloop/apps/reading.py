"""Reading a run's checkpoints without writing a byte: the folder's SQLite opened read-only, or the Postgres its
run.json records. Whole values need the run's own graph (channels kept as deltas are rebuilt by it), which is
why reading lives here, above the graph, and not with the storage in run_folder/.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refineloop.apps.postgres import open_pool, open_saver
from refineloop.graph_build import build_graph
from refineloop.run_folder.checkpoints import connect_readonly, database_error, run_saver
from refineloop.run_folder.folder import META, read_meta

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple


@contextmanager
def reading_saver(run_dir: str, url: str = "") -> Iterator[BaseCheckpointSaver[str]]:
    """A checkpointer for reading a run without writing to it: the folder's SQLite opened read-only, or the
    Postgres at `url` (the run's recorded checkpointer)."""
    if url:
        pool = open_pool(url, max_size=1)
        try:
            yield open_saver(pool)
        finally:
            pool.close()
        return

    conn = connect_readonly(run_dir)
    try:
        yield run_saver(conn)
    except sqlite3.Error as exc:
        raise database_error(run_dir, exc) from None
    finally:
        conn.close()


def read_checkpoint(run_dir: str, thread_id: str, url: str = "") -> CheckpointTuple | None:
    """The latest checkpoint tuple of a run, read without writing and without compiling a graph. Channels kept
    as deltas (the per-image history) are not in its values: `read_values` rebuilds those."""
    with reading_saver(run_dir, url) as saver:
        return saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})


def read_values(run_dir: str, thread_id: str, url: str = "") -> dict[str, Any]:
    """The latest checkpointed state of a run, whole (the history rebuilt from its deltas), read without
    writing. The graph is the one run.json names (greedy's when there is none: the history is the same)."""
    strategy = "greedy"
    if (Path(run_dir) / META).is_file():
        strategy = read_meta(run_dir)["strategy"]
    with reading_saver(run_dir, url) as saver:
        graph = build_graph(strategy, saver)
        return dict(graph.get_state({"configurable": {"thread_id": thread_id}}).values)
