"""`refineloop show IMAGE`: what a PNG says about itself, and the command that draws it again.

An image refineloop wrote names its model and LoRAs without their paths; when it still sits in its own run
folder, that run's settings supply the paths, so the remake command works as printed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from refineloop.errors import RefineError
from refineloop.run_folder.provenance import describe, read_provenance


def show(image: str, *, as_json: bool) -> int:
    """Print an image's provenance (as JSON with `as_json`)."""
    record = read_provenance(image)
    if as_json:
        print(json.dumps(record, indent=1, ensure_ascii=False))
    else:
        print(describe(record, image, local_settings(image, record)))
    return 0


def local_settings(path: str, record: dict[str, Any]) -> dict[str, Any] | None:
    """The settings of the run an image sits in (its own run folder, the same run id), read without writing;
    None for an image anywhere else, or a folder that cannot be read."""
    from refineloop.apps.reading import read_values
    from refineloop.run_folder.folder import is_run_folder, read_meta

    folder = Path(path).expanduser().resolve().parent
    if not is_run_folder(folder) or not record.get("run_id"):
        return None
    try:
        meta = read_meta(str(folder))
        if meta.get("thread_id") != record.get("run_id") or meta.get("checkpointer"):
            return None  # another run's image, or checkpoints in a database this command does not reach
        values = read_values(str(folder), meta["thread_id"], meta.get("checkpointer", ""))
    except (RefineError, OSError, ValueError, KeyError, TypeError, sqlite3.Error):
        return None
    settings = values.get("settings")
    return dict(settings) if isinstance(settings, dict) else None
