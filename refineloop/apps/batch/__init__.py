"""Batches: many goals, one run folder each, a summary at the end; resumable after any interruption.

A goals file (`goals_file`) holds the items (`items`). The batch folder keeps `batch.json` (`plan`: the items,
their thread ids and run folders, fixed at the first start), one run folder per item (`001-<goal>`), and
`summary.txt` / `summary.json` (`summary`). Running the same command again resumes: finished items are left
untouched, the interrupted one continues from its last image, the rest start.

Checkpoints and the queue live in a *store* (`stores`): SQLite in each run folder here, or Postgres. The function
that executes one item (`attempt.run_item`) is the same for the local engine (`local_engine`) and for Ray
runner actors.
"""

from refineloop.apps.batch.attempt import run_item
from refineloop.apps.batch.goals_file import ITEM_FORBIDDEN, MAX_GOALS_BYTES, MAX_ITEMS, parse_goals
from refineloop.apps.batch.items import BatchItem, ItemResult, result_from_values
from refineloop.apps.batch.local_engine import run_local
from refineloop.apps.batch.plan import MANIFEST, BatchPlan, default_batch_dir, plan_batch
from refineloop.apps.batch.stores import ITEM_RECORD, FolderStore, Store, open_store, store_kind
from refineloop.apps.batch.summary import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    SUMMARY_JSON,
    SUMMARY_TEXT,
    SummaryRow,
    exit_code,
    format_summary,
    summarize,
    write_summary,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "ITEM_FORBIDDEN",
    "ITEM_RECORD",
    "MANIFEST",
    "MAX_GOALS_BYTES",
    "MAX_ITEMS",
    "SUMMARY_JSON",
    "SUMMARY_TEXT",
    "BatchItem",
    "BatchPlan",
    "FolderStore",
    "ItemResult",
    "Store",
    "SummaryRow",
    "default_batch_dir",
    "exit_code",
    "format_summary",
    "open_store",
    "parse_goals",
    "plan_batch",
    "result_from_values",
    "run_item",
    "run_local",
    "store_kind",
    "summarize",
    "write_summary",
]
