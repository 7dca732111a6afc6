"""Benchmark the AutoV2 hash of a checkpoint-sized file: the first time (read and SHA-256 every byte) and the
second (the cached digest, trusted while size and modification time are unchanged).

Run from the repository root: `python bench/file_hash.py` (a 2 GB sparse file in /tmp, deleted after), or
`--random` for 2 GB of random bytes (written first, so the first hash reads from the page cache or disk as the
machine decides), `--size-gb` for another size. The hash cache goes to a temporary folder, not the user's.
Prints figures only; nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 64 * 2**20


def _make_file(path: Path, size: int, random: bool) -> None:
    with path.open("wb") as fh:
        if not random:
            fh.truncate(size)  # sparse: reading it costs no disk, so the first time is SHA-256 itself
            return
        left = size
        while left:
            step = min(CHUNK, left)
            fh.write(os.urandom(step))
            left -= step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--random", action="store_true", help="random bytes instead of a sparse file")
    args = parser.parse_args()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="refineloop-hash-bench-") as scratch:
        os.environ["XDG_CACHE_HOME"] = str(Path(scratch) / "cache")
        from refineloop.backends.image.file_hash import autov2_hash, cache_file

        weights = Path(scratch) / "checkpoint.safetensors"
        size = int(args.size_gb * 2**30)
        started = time.perf_counter()
        _make_file(weights, size, args.random)
        made = time.perf_counter() - started
        started = time.perf_counter()
        first = autov2_hash(weights)
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        second = autov2_hash(weights)
        second_s = time.perf_counter() - started
        kind = "random" if args.random else "sparse"
        print(f"file: {size / 2**30:.2f} GiB {kind} ({made:.1f} s to make), AutoV2 {first}")
        print(f"first hash:  {first_s:8.3f} s  ({size / 2**20 / first_s:.0f} MiB/s)")
        print(f"second hash: {second_s * 1000:8.3f} ms (cached in {cache_file().name}; same digest: {first == second})")


if __name__ == "__main__":
    main()
