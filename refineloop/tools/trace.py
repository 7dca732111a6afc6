"""`trace.jsonl`: one line per model call (what was sent, what came back, how long it took)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def append_trace(run_dir: str, record: dict[str, Any]) -> None:
    """Append one record; a line is written whole so a crash never leaves half a record behind."""
    line = json.dumps({"time": round(time.time(), 3), **record}, ensure_ascii=False, default=str)
    with open(Path(run_dir) / "trace.jsonl", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def read_trace(run_dir: str) -> list[dict[str, Any]]:
    """Every record of a run, skipping a torn last line."""
    path = Path(run_dir) / "trace.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
