"""Writes tests/data/old_shape_run/: a climbing run interrupted at image 3, checkpointed by refineloop as of
commit cd63be7, when every channel but the history, settings and task was stored whole in each checkpoint.

    git worktree add /tmp/old cd63be7 && cd /tmp/old && PYTHONPATH=$PWD python <this file> OUT_DIR

tests/test_checkpoint_size.py resumes a copy of it with today's code (kept so the old shape stays tested).
"""

from __future__ import annotations

import io
import sqlite3
import sys
from pathlib import Path

from refineloop.backends.demo.sketch import SketchImageModel
from refineloop.backends.model_cache import ModelCache
from refineloop.cli.run_commands import start_run
from refineloop.settings import RunSettings
from tests.conftest import TemperatureCritic, judge_reply


def main(out: str) -> None:
    replies = [judge_reply(5, idea="idea from one"), judge_reply(4, idea="idea from two"), KeyboardInterrupt()]
    critic = TemperatureCritic(judge=replies, calls=[])
    cache = ModelCache()
    cache.register_chat("scripted", critic)
    cache.register_image("sketch", SketchImageModel(size=64))
    settings = RunSettings(
        eval_model="scripted", image_model="sketch", seed=11, output_dir=out, max_iterations=6, patience=5,
        strategy="climbing", final_pick=0, critic_concurrency=1, sideways=False,
    )  # fmt: skip
    outcome = start_run(settings, models=cache, out=io.StringIO())
    assert outcome.status == "interrupted", outcome.status
    # Smaller pages for a smaller file in the repository; the rows stay as they were written.
    conn = sqlite3.connect(Path(out) / "checkpoints.sqlite")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA page_size=1024")
    conn.execute("VACUUM")
    conn.close()


if __name__ == "__main__":
    main(sys.argv[1])
