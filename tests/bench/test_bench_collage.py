"""bench/collage.py at two run lengths: it runs, and the sheet it reports is the bounded one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "collage.py"


def test_the_collage_bench_prints_each_run_lengths_sheet():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--images", "4,121"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [("4", "384x384"), ("121", "2046x2046")]
