"""The score each judged image's sidecar holds, read once per file and again only when the file changes.

The best under `--judge score` is looked up among every judged image when a re-scored best drops; reading and
parsing every sidecar of a long run each time made an iteration at image 1000 cost many times one at image 10.
A sidecar is always replaced whole (a new file renamed into place), so its inode, size and modification time
tell whether the score kept for it is still the file's.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from refineloop.run_folder.image_files import IMAGE_NAME, read_record

#: Run folders whose scores are kept in this process (a batch runner drives many runs, one after another).
FOLDERS_KEPT = 8

_lock = threading.Lock()
_kept: OrderedDict[str, dict[int, tuple[tuple[int, int, int], object]]] = OrderedDict()


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
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        cached = known.get(iteration)
        if cached is None or cached[0] != stamp:
            record = read_record(Path(run_dir) / entry.name)
            if record is None:
                continue
            cached = known[iteration] = (stamp, record.get("score"))
        scores[iteration] = cached[1]
    return scores
