"""The score each judged image's sidecar holds, read once per file and again only when the file changes.

The best under `--judge score` is looked up among every judged image when a re-scored best drops. Reading and
parsing every sidecar of a long run each time made an iteration at image 1000 cost many times one at image 10;
a scan that re-read only changed files still cost a directory listing and a stat of every sidecar (about 5 ms an
image at image 1000, with drops on two images in three). So a folder is scanned once per process (`sidecar_scores`)
and kept up to date from then on by the sidecars this process writes (`save_sidecar`, the one door they go
through), and `top_score` stats only the images it is about to name: one whose file changed behind the run's
back is read again (or dropped) before it can win. A sidecar is always replaced whole (a new file renamed into
place), so its inode, size and modification time tell whether the score kept for it is still the file's.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, TypeGuard

from refineloop.files.safe_io import FileStamp, file_stamp, stamp_of
from refineloop.run_folder.image_files import IMAGE_NAME, image_path, read_record, save_json, sidecar_path

#: Run folders whose scores are kept in this process (a batch runner drives many runs, one after another).
FOLDERS_KEPT = 8

_lock = threading.Lock()
_kept: OrderedDict[str, dict[int, tuple[FileStamp, object]]] = OrderedDict()


def sidecar_scores(run_dir: str) -> dict[int, object]:
    """The `score` field of every image's sidecar (None where it has none or cannot be read), by iteration; an
    image without a sidecar is left out, as `read_sidecars` leaves it out."""
    with os.scandir(run_dir) as entries:
        names = {entry.name: entry for entry in entries}
    with _lock:
        known = _kept.pop(run_dir, {})
        _kept[run_dir] = known
        while len(_kept) > FOLDERS_KEPT:
            _kept.popitem(last=False)
    scores: dict[int, object] = {}
    for name in names:
        if not (match := IMAGE_NAME.match(name)):
            continue
        iteration = int(match.group(1))
        entry = names.get(f"{iteration:02d}.json")
        if entry is None:
            continue
        try:
            info = entry.stat()
        except OSError:
            continue
        stamp = stamp_of(info)
        cached = known.get(iteration)
        if cached is None or cached[0] != stamp:
            record = read_record(Path(run_dir) / entry.name)
            if record is None:
                continue
            cached = known[iteration] = (stamp, record.get("score"))
        scores[iteration] = cached[1]
    return scores


def save_sidecar(record: dict[str, Any], run_dir: str, iteration: int) -> None:
    """Write image `iteration`'s sidecar (atomically) and keep its score, if this process has the folder's
    scores."""
    path = sidecar_path(run_dir, iteration)
    save_json(record, path)
    with _lock:
        known = _kept.get(run_dir)
    if known is None:
        return  # not looked at yet: the first look scans the folder
    try:
        stamp = file_stamp(path)
    except OSError:
        return
    with _lock:
        known[iteration] = (stamp, record.get("score"))


def top_score(run_dir: str, *, below: int, skip: int) -> tuple[int, float] | None:
    """The highest-scored judged image numbered below `below`, other than `skip`, the earliest on a tie, and its
    score; None when there is none. Only the images about to be named are checked against their files."""
    with _lock:
        known = _kept.get(run_dir)
    if known is None:
        sidecar_scores(run_dir)  # the folder's first look: every sidecar, read once
        with _lock:
            known = _kept.get(run_dir, {})
    while True:
        with _lock:
            pool = [(score, -n, n) for n, (_, score) in known.items() if n < below and n != skip and _is_score(score)]
        if not pool:
            return None
        score, _, iteration = max(pool)
        if _still_kept(run_dir, iteration, known):
            return iteration, score


def _is_score(value: object) -> TypeGuard[float]:
    """Whether a sidecar's `score` is a number (not a flag, a text or nothing)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _still_kept(run_dir: str, iteration: int, known: dict[int, tuple[FileStamp, object]]) -> bool:
    """Whether the score kept for `iteration` is still its sidecar's; if not, keep the file's (or forget it)."""
    path = sidecar_path(run_dir, iteration)
    try:
        stamp = file_stamp(path) if image_path(run_dir, iteration).exists() else None
    except OSError:
        stamp = None
    with _lock:
        if stamp is not None and known.get(iteration, (None,))[0] == stamp:
            return True
        known.pop(iteration, None)
    record = read_record(path) if stamp is not None else None
    if record is not None and stamp is not None:
        with _lock:
            known[iteration] = (stamp, record.get("score"))
    return False
