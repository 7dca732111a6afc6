"""The batch summary: one row per item read from the checkpoints and the store, as a table and as JSON, and the
exit code it makes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from refineloop.apps.batch.items import result_from_values, score_text
from refineloop.apps.batch.plan import BatchPlan
from refineloop.apps.batch.stores import Store
from refineloop.files.safe_io import write_json_atomic, write_text_atomic
from refineloop.visible_text import visible

SUMMARY_TEXT = "summary.txt"
SUMMARY_JSON = "summary.json"

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass
class SummaryRow:
    """One line of the batch summary."""

    index: int
    goal: str
    status: str
    """done, failed, interrupted (has a checkpoint, not finished), running (held elsewhere) or pending."""
    best_score: float | None
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
    goals = [visible(r.goal, one_line=True) for r in rows]  # a goal with a newline or bidi marks keeps its row
    goals = [goal if len(goal) <= 48 else goal[:45] + "..." for goal in goals]
    width = max([len("goal")] + [min(len(goal), 48) for goal in goals])
    audited = any(r.audit for r in rows)  # the column shows only when some run had an auditor
    audit_head = f" {'audit':<12}" if audited else ""
    lines = [f"{'#':>3}  {'goal':<{width}}  {'status':<11} {'best':>7} {'images':>6} {'time':>8}{audit_head}  folder"]
    for r, goal in zip(rows, goals, strict=True):
        best = score_text(r.best_score) if r.best_score is not None else "-"
        audit = f" {r.audit or '-':<12}" if audited else ""
        lines.append(
            f"{r.index:>3}  {goal:<{width}}  {r.status:<11} {best:>7} {r.images:>6} {r.seconds:>7.1f}s{audit}  "
            f"{visible(Path(r.run_dir).name, one_line=True) if r.run_dir else '-'}"
        )
        if r.error:
            lines.append(f"{'':>3}  error: {visible(r.error, limit=300, one_line=True)}")
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
    write_json_atomic(folder / SUMMARY_JSON, [dataclasses.asdict(r) for r in rows])
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
