"""`trace.jsonl`: one line per model call (what was sent, what came back, how long it took)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from refineloop.files.safe_io import append_line, read_limited

#: The most of a trace a reader takes in (a run of thousands of images writes a few MB).
TRACE_LIMIT = 256 << 20


def append_trace(run_dir: str, record: dict[str, Any]) -> None:
    """Append one record; a line is written whole so a crash never leaves half a record behind, and never
    through a symbolic link."""
    line = json.dumps({"time": round(time.time(), 3), **record}, ensure_ascii=False, default=str)
    append_line(Path(run_dir) / "trace.jsonl", line)


def read_trace(run_dir: str) -> list[dict[str, Any]]:
    """Every record of a run, skipping a torn last line."""
    path = Path(run_dir) / "trace.jsonl"
    try:
        text = read_limited(path, TRACE_LIMIT).decode("utf-8", "replace")
    except OSError:  # missing, not a regular file, or past any real run's size
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
