"""Checkpoints stay small: what grows with a run, or is larger than a number, is a delta channel saved in the step
that writes it; a run checkpointed before (every such channel whole in each checkpoint) still resumes."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from refineloop.apps.reading import read_checkpoint, read_values
from refineloop.cli.main import main
from refineloop.cli.run_commands import resume_run, start_run
from refineloop.judges.base import KEPT_SAMPLES
from refineloop.run_folder.folder import read_meta
from refineloop.run_folder.image_files import save_json, sidecar_path
from refineloop.run_folder.score_index import save_sidecar, sidecar_scores, top_score
from refineloop.state import FAILED_IDEAS_KEPT, SetValue, add_all_counts, last_write, recent_failures
from tests.conftest import judge_reply

OLD_RUN = Path(__file__).resolve().parents[1] / "data" / "old_shape_run"
#: The channels a checkpoint no longer carries whole at every step.
DELTAS = ("candidate", "current", "best", "idea", "prompt", "failed_ideas", "judge_stats", "history")


def checkpoint_bytes(run_dir: str) -> list[int]:
    """The size of each checkpoint row (its blob and metadata), oldest first."""
    with closing(sqlite3.connect(Path(run_dir) / "checkpoints.sqlite")) as conn:
        rows = conn.execute(
            "SELECT length(checkpoint) + length(metadata) FROM checkpoints ORDER BY checkpoint_id"
        ).fetchall()
    return [size for (size,) in rows]


def without_rowid(run_dir: str | Path) -> dict[str, bool]:
    """Whether each of the saver's tables keeps its rows in its primary key's tree (no copy of the key)."""
    with closing(sqlite3.connect(Path(run_dir) / "checkpoints.sqlite")) as conn:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name: "WITHOUT ROWID" in sql.upper() for name, sql in rows}


def write_bytes(run_dir: str) -> list[int]:
    """The size of each record of the best image written, oldest first."""
    with closing(sqlite3.connect(Path(run_dir) / "checkpoints.sqlite")) as conn:
        rows = conn.execute(
            "SELECT length(value) FROM writes WHERE channel = 'best' ORDER BY checkpoint_id, idx"
        ).fetchall()
    return [size or 0 for (size,) in rows]


def test_failed_ideas_append_clear_and_keep_the_newest_however_the_writes_are_batched():
    writes = [["a"], ["b", "c"], [], ["d"], *([f"x{n}"] for n in range(20))]
    whole = recent_failures(["old"], writes)
    assert whole == [f"x{n}" for n in range(20 - FAILED_IDEAS_KEPT, 20)]
    for cut in range(len(writes) + 1):
        assert recent_failures(recent_failures(["old"], writes[:cut]), writes[cut:]) == whole
    assert recent_failures(["old"], [["a"], []]) == []
    assert add_all_counts({"n": 1}, [{"n": 2}, {"m": 1}]) == {"n": 3, "m": 1}


def test_a_set_value_reads_what_an_old_checkpoint_stored_plainly_and_stays_absent_when_never_written():
    channel = SetValue(last_write, dict)
    assert channel.from_checkpoint({"iteration": 3}).get() == {"iteration": 3}
    assert channel.from_checkpoint(None).get() is None  # a LastValue that held None
    assert not channel.from_checkpoint(channel.checkpoint()).is_available()
    replayed = channel.from_checkpoint(channel.checkpoint())
    replayed.replay_writes([("task", "best", {"iteration": 1}), ("task", "best", None)])
    assert replayed.get() is None


def test_checkpoints_do_not_grow_with_the_run_and_the_state_reads_back_whole(scripted, run_settings, quiet):
    # Every image ties the best: under --judge-samples each round judges the best again, the longest records.
    cache, _ = scripted([judge_reply(5, idea=f"idea {n} " + "words " * 40) for n in range(200)])
    settings = run_settings(strategy="climbing", max_iterations=40, patience=100, judge_samples=2, final_pick=0)
    outcome = start_run(settings, models=cache, out=quiet)
    assert outcome.status == "done" and len(outcome.values["history"]) == 40
    sizes = checkpoint_bytes(outcome.run_dir)
    early, late = max(sizes[20:60]), max(sizes[-60:-10])
    assert late <= early + 64, (early, late)
    writes = write_bytes(outcome.run_dir)  # the best is judged again, and written, at every tie
    half = len(writes) // 2
    assert max(writes[-half // 2 :]) <= max(writes[:half]) + 16  # no record grows either
    with closing(sqlite3.connect(Path(outcome.run_dir) / "checkpoints.sqlite")) as conn:
        kinds = {kind for (kind,) in conn.execute("SELECT type FROM checkpoints")}
    assert kinds == {"msgpack+zlib"}  # packed (refineloop.run_folder.packed_serde)
    assert without_rowid(outcome.run_dir) == {"checkpoints": True, "writes": True}
    found = read_checkpoint(outcome.run_dir, read_meta(outcome.run_dir)["thread_id"])
    assert found is not None
    stored = found.checkpoint["channel_values"]
    assert not any(key in stored for key in DELTAS[:5]), sorted(stored)
    values = read_values(outcome.run_dir, read_meta(outcome.run_dir)["thread_id"])
    assert values["best"] == outcome.values["best"] and values["best"]["iteration"] == 1
    assert len(values["best"]["samples"]) == KEPT_SAMPLES  # re-scored at each tie, the newest looks kept
    assert values["failed_ideas"] == outcome.values["failed_ideas"] and len(values["failed_ideas"]) == 0
    assert values["idea"] == outcome.values["idea"] and values["candidate"]["iteration"] == 40


def test_refineloop_runs_lists_the_best_score_rebuilt_from_the_deltas(scripted, run_settings, quiet, capsys):
    cache, _ = scripted([judge_reply(6), judge_reply(8), judge_reply(7)])
    outcome = start_run(run_settings(strategy="climbing", max_iterations=3, final_pick=0), models=cache, out=quiet)
    assert main(["runs", str(Path(outcome.run_dir).parent)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if " climbing " in line)
    assert row.split()[1:5] == ["climbing", "done", "3", "8/10"], row


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """A copy of a climbing run that refineloop as of cd63be7 checkpointed and an interrupt stopped at image 3:
    image 1 (5) accepted, image 2 (4) rejected with its idea failed, image 3 drawn and not yet judged."""
    target = tmp_path / "old_shape_run"
    shutil.copytree(OLD_RUN, target)
    return target


def test_a_run_checkpointed_in_the_old_shape_resumes_where_it_stopped(old_run, scripted, quiet):
    found = read_checkpoint(str(old_run), "old_shape_run")
    assert found is not None and found.checkpoint["channel_values"]["best"]["iteration"] == 1  # the old shape
    assert without_rowid(old_run) == {"checkpoints": False, "writes": False}  # the old tables, kept as they are
    cache, critic = scripted([judge_reply(3, idea="idea from three"), judge_reply(7), judge_reply(6), judge_reply(6)])
    outcome = resume_run(str(old_run), models=cache, out=quiet)
    assert outcome.status == "done", outcome.error
    rounds = [(h["iteration"], h["score"], h["decision"], h["best_iteration"]) for h in outcome.values["history"]]
    assert rounds == [
        (1, 5, "accepted", 1),
        (2, 4, "rejected", 1),
        (3, 3, "rejected", 1),
        (4, 7, "accepted", 4),
        (5, 6, "rejected", 4),
        (6, 6, "rejected", 4),
    ]
    proposals = [c["system"] for c in critic.calls if c["role"] == "propose"]
    # After image 3 the proposer is shown the idea that failed before the interrupt and the new one.
    assert "idea from one" in proposals[0] and "proposed idea number" in proposals[0]
    assert outcome.values["best"]["iteration"] == 4 and outcome.values["failed_ideas"]
    assert (old_run / "best.png").read_bytes() == (old_run / "04.png").read_bytes()
    # The resumed checkpoints are in the new shape.
    tail = read_checkpoint(str(old_run), "old_shape_run")
    assert tail is not None and "best" not in tail.checkpoint["channel_values"]


def test_the_old_shape_fixture_is_what_the_old_code_wrote():
    """Guard against the fixture being regenerated by today's code: its last checkpoint holds the records whole."""
    with closing(sqlite3.connect(OLD_RUN / "checkpoints.sqlite")) as conn:
        typ, blob = conn.execute("SELECT type, checkpoint FROM checkpoints ORDER BY checkpoint_id DESC").fetchone()
    stored: dict[str, Any] = JsonPlusSerializer().loads_typed((typ, blob))["channel_values"]
    assert {"candidate", "current", "best", "idea", "prompt", "failed_ideas"} <= set(stored)
    assert stored["failed_ideas"] == ["idea from one"]


def test_the_score_index_sees_a_rewritten_sidecar_and_skips_a_damaged_one(tmp_path):
    run = str(tmp_path)
    for n in (1, 2, 3):
        (tmp_path / f"{n:02d}.png").write_bytes(b"png")
        save_json({"score": n + 4}, sidecar_path(run, n))
    assert sidecar_scores(run) == {1: 5, 2: 6, 3: 7}
    save_json({"score": 4.5, "rescores": [{"at": 3, "score": 4.5}]}, sidecar_path(run, 2))  # replaced whole
    (tmp_path / "03.json").write_text("{not json")
    (tmp_path / "04.json").write_text('{"score": 9}')  # no image beside it: not a judged image
    assert sidecar_scores(run) == {1: 5, 2: 4.5}


def test_the_top_score_follows_this_process_writes_and_checks_what_it_names(tmp_path):
    run = str(tmp_path)
    for n, score in ((1, 6), (2, 8), (3, 8), (4, 5)):
        (tmp_path / f"{n:02d}.png").write_bytes(b"png")
        save_json({"score": score}, sidecar_path(run, n))
    assert top_score(run, below=5, skip=0) == (2, 8)  # the first look scans; the earliest of a tie
    assert top_score(run, below=5, skip=2) == (3, 8) and top_score(run, below=2, skip=0) == (1, 6)
    save_sidecar({"score": 9.5}, run, 4)  # a re-score written by the run: seen without a second scan
    assert top_score(run, below=5, skip=0) == (4, 9.5)
    (tmp_path / "04.json").write_text('{"score": 1}')  # changed behind the run's back: read again before named
    (tmp_path / "02.png").unlink()  # no image: not a judged image
    assert top_score(run, below=5, skip=0) == (3, 8)
    (tmp_path / "03.json").write_text("{not json")
    assert top_score(run, below=5, skip=0) == (1, 6)
    assert top_score(run, below=5, skip=1) == (4, 1) and top_score(run, below=1, skip=0) is None


def test_every_sidecar_is_written_through_the_score_index():
    """A sidecar written past `save_sidecar` would leave the index a stale score (see score_index): no module
    but the two that define them both names sidecar paths and saves JSON."""
    package = Path(__file__).resolve().parents[2] / "refineloop"
    mixing = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if "save_json(" in (text := path.read_text()) and "sidecar_path(" in text
    ]
    assert mixing == ["run_folder/image_files.py", "run_folder/score_index.py"]
