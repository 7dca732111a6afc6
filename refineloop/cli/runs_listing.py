"""`refineloop runs`: every run folder under a root, and the runs inside its batch folders, one line each.

Looking writes nothing and never hangs: run.json and the lock are read non-blocking with size caps, SQLite is
opened read-only (immutable, or from a private copy when a killed run left a log), a FIFO or a device where a
file belongs is damage, and a folder that cannot be read, for whatever reason, is one `damaged` line while the
others are listed. A Postgres that a run.json names is not reached unless the user names it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refineloop.visible_text import visible

HEADER = f"{'run':<40} {'strategy':<10} {'status':<12} {'images':>6} {'best':>5}  reason"


def list_runs(root: str, *, checkpointer: str = "") -> int:
    """Print the listing of `root`; 0, or 2 when `root` itself cannot be read."""
    from refineloop.apps.batch.plan import MANIFEST
    from refineloop.run_folder.folder import is_run_folder

    base = Path(root)
    try:
        entries = _folders(base) if base.is_dir() else []
    except OSError as exc:
        print(f"refineloop: error: cannot read {cell(root, 200)} ({exc.strerror or exc}): check its permissions")
        return 2
    runs = [p for p in entries if is_run_folder(p)]
    batches = [p for p in entries if _is_file(p / MANIFEST) and not is_run_folder(p)]
    if not runs and not batches:
        print(f"no runs in {cell(root, 200)}/ yet: start one with `refineloop demo`")
        return 0
    print(HEADER)
    for folder in runs:
        print(run_row(folder, folder.name, checkpointer))
    for batch in batches:
        try:
            items = [p for p in _folders(batch) if is_run_folder(p)]
        except OSError as exc:
            print(f"batch {cell(batch.name)}/ (cannot be read: {exc.strerror or exc})")
            continue
        print(f"batch {cell(batch.name)}/ ({len(items)} runs)")
        for folder in items:
            print(run_row(folder, "  " + folder.name, checkpointer))
    return 0


def _folders(base: Path) -> list[Path]:
    """The folders directly in `base` (not links), sorted."""
    found = []
    for entry in base.iterdir():
        try:
            if entry.is_dir() and not entry.is_symlink():
                found.append(entry)
        except OSError:
            continue
    return sorted(found)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def run_row(folder: Path, label: str, checkpointer: str = "") -> str:
    """One line of the listing, read without writing; a folder that cannot be read is `damaged`, with why."""
    from refineloop.apps.reading import read_checkpoint, read_values
    from refineloop.run_folder.folder import read_meta

    try:
        meta = read_meta(str(folder))
        url = str(meta.get("checkpointer") or "")
        if url and url != checkpointer:
            where = f"checkpoints in {url}: `refineloop runs --checkpointer URL` reads them"
            return _line(label, meta["strategy"], "elsewhere", "-", "-", where)
        found = read_checkpoint(str(folder), meta["thread_id"], url)
        # The image records are delta channels, which the checkpoint alone does not hold: the graph rebuilds them.
        values = read_values(str(folder), meta["thread_id"], url) if found else {}
        best = values.get("best") or {}
        score = f"{best['score']:g}/10" if isinstance(best.get("score"), (int, float)) else "-"
        status, reason = run_status(str(folder), values, found)
        iteration = values.get("iteration", 0)
        return _line(label, meta["strategy"], status, iteration if isinstance(iteration, int) else "?", score, reason)
    except Exception as exc:  # one damaged folder is one line, whatever is wrong with it
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _line(label, "?", "damaged", "-", "-", reason)


def _line(label: str, strategy: str, status: str, images: object, score: str, reason: str) -> str:
    return (
        f"{cell(label):<40} {cell(strategy, 10):<10} {status:<12} {cell(images, 6):>6} {score:>5}  {cell(reason, 300)}"
    )


def run_status(run_dir: str, values: dict[str, Any], found: Any) -> tuple[str, str]:
    """(status, reason): running (a process holds it), done, failed (its last step raised: the error is the
    reason), review (paused at a question), interrupted, or new."""
    from refineloop.run_folder.lock import is_locked

    if is_locked(run_dir):
        return "running", ""
    reason = str(values.get("stop_reason") or "")
    status = str(values.get("status", "new"))
    if status != "running":
        return status, reason
    writes = (found.pending_writes or []) if found is not None else []
    # LangGraph records a failing node's error (its text redacted by the node's wrapper) as a pending write.
    errors = [value for _, channel, value in writes if channel == "__error__"]
    if errors:
        return "failed", str(errors[-1])
    waiting = any(channel == "__interrupt__" for _, channel, _ in writes)
    return ("review" if waiting else "interrupted"), reason


def cell(value: object, limit: int = 60) -> str:
    """A table cell from a file: one line, visible characters, cut with a note when long."""
    return visible(value, limit=limit, one_line=True)
