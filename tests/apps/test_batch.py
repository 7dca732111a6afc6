"""Batches on one machine: goals files, the local engine, its summary, resume after a kill or Ctrl-C, errors.

Everything here runs offline on the sketch painter and the demo critic (or scripted models in-process); the
Postgres and Ray paths are in tests/test_scale.py.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from refineloop.apps.batch import (
    BatchItem,
    FolderStore,
    parse_goals,
    plan_batch,
    run_local,
)
from refineloop.apps.reading import read_values
from refineloop.backends.demo.sketch import SketchImageModel
from refineloop.backends.image.protocol import ImageRequest
from refineloop.errors import SettingsError
from refineloop.settings import RunSettings
from tests.conftest import batch_cli, cli_env, images_in, judge_reply, same_image, start_batch_cli, wait_for

# --------------------------------------------------------------------------------------------- helpers


def item_dirs(batch_dir: Path) -> list[Path]:
    """The item run folders of a batch, in order."""
    return sorted(p for p in batch_dir.iterdir() if p.is_dir())


def state_of(run_dir: Path) -> dict[str, Any]:
    """A run folder's latest checkpointed state."""
    meta = json.loads((run_dir / "run.json").read_text())
    return read_values(str(run_dir), meta["thread_id"])


def decisions(run_dir: Path) -> list[tuple[Any, ...]]:
    """What a run decided at each image: the part of its history a resumed run must reproduce."""
    return [
        (h["iteration"], h["score"], h["verdict"], h["decision"], h["best_iteration"])
        for h in state_of(run_dir)["history"]
    ]


# --------------------------------------------------------------------------------------------- goals files


def test_text_goals_one_per_line_skipping_blanks_and_comments(tmp_path: Path) -> None:
    goals = tmp_path / "goals.txt"
    goals.write_text("# tonight's batch\na teapot glowing red\n\n  a kettle on fire  \n")
    items = parse_goals(goals)
    assert [(i.index, i.goal, i.source) for i in items] == [
        (1, "a teapot glowing red", "goals.txt:2"),
        (2, "a kettle on fire", "goals.txt:4"),
    ]


def test_jsonl_items_carry_their_own_task_seed_and_flags(tmp_path: Path) -> None:
    (tmp_path / "lamp.toml").write_text("name = 'lamp'\n")
    goals = tmp_path / "goals.jsonl"
    goals.write_text(
        '{"goal": "a lamp", "seed": 4, "strategy": "annealing", "max-iterations": 3, "guidance": 5}\n'
        '"a plain string goal"\n'
        '{"task": "lamp.toml"}\n'
    )
    first, second, third = parse_goals(goals)
    assert (first.goal, first.seed) == ("a lamp", 4)
    assert first.flags == {"strategy": "annealing", "max_iterations": 3, "guidance": 5.0}
    assert second.goal == "a plain string goal"
    assert third.task == str(tmp_path / "lamp.toml"), "a task file is found next to the goals file"
    settings = first.settings(RunSettings(max_iterations=9, strategy="greedy", seed=1))
    assert (settings.strategy, settings.max_iterations, settings.seed, settings.goal) == ("annealing", 3, 4, "a lamp")


def test_toml_items_with_defaults(tmp_path: Path) -> None:
    goals = tmp_path / "goals.toml"
    goals.write_text(
        '[defaults]\nstrategy = "climbing"\nmax_iterations = 2\n\n'
        '[[items]]\ngoal = "a pie steaming"\n\n'
        '[[items]]\ngoal = "a stove glowing"\nseed = 9\nstrategy = "greedy"\n'
    )
    first, second = parse_goals(goals)
    assert first.flags == {"strategy": "climbing", "max_iterations": 2}
    assert (second.seed, second.flags["strategy"], second.source) == (9, "greedy", "goals.toml item 2")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("g.jsonl", '{"goal": "x", "max_iterations": "four"}\n', "g.jsonl:1: --max-iterations takes a whole number"),
        ("g.jsonl", '{"goal": "x", "colour": "red"}\n', "g.jsonl:1: unknown setting 'colour'"),
        ("g.jsonl", '{"goal": "x", "output_dir": "/tmp"}\n', "cannot be set per item"),
        ("g.jsonl", '{"goal": "x", "review": true}\n', "cannot be set per item"),
        ("g.jsonl", '{"goal": "x",\n', "g.jsonl:1: not valid JSON"),
        ("g.jsonl", '{"seed": 3}\n', "an item needs a goal or a task"),
        ("g.txt", "\n# only a comment\n", "has no goals"),
        ("g.toml", "[[items]]\ngoal = 'x'\n[extra]\n", "unknown table(s) extra"),
        ("g.toml", "[[items]\n", "not valid TOML"),
    ],
)
def test_bad_goals_files_fail_in_one_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SettingsError) as info:
        parse_goals(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_an_item_with_a_bad_setting_is_refused_alone_before_any_item_starts(tmp_path: Path) -> None:
    goals = tmp_path / "goals.jsonl"
    goals.write_text('"fine"\n{"goal": "bad", "strategy": "sideways"}\n')
    plan = plan_batch(str(goals), RunSettings(), str(tmp_path / "b"))
    assert [i.goal for i in plan.items] == ["fine"]
    (refused,) = plan.rejected
    assert refused.problem.startswith("goals.jsonl:2: unknown strategy 'sideways'") and not refused.run_dir
    only_bad = tmp_path / "bad.jsonl"
    only_bad.write_text('{"goal": "bad", "strategy": "sideways"}\n')
    with pytest.raises(SettingsError, match=r"bad.jsonl:1: unknown strategy 'sideways'"):
        plan_batch(str(only_bad), RunSettings(), str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_the_manifest_refuses_an_edited_goal_and_takes_an_appended_one(tmp_path: Path) -> None:
    goals = tmp_path / "goals.txt"
    goals.write_text("one\ntwo\n")
    first = plan_batch(str(goals), RunSettings(), str(tmp_path / "b"))
    goals.write_text("one\ntwo\nthree\n")
    again = plan_batch(str(goals), RunSettings(), str(tmp_path / "b"))
    assert [i.thread_id for i in again.items[:2]] == [i.thread_id for i in first.items]
    assert again.batch_id == first.batch_id and len(again.items) == 3
    goals.write_text("one\nTWO\nthree\n")
    with pytest.raises(SettingsError, match="goals.txt:2 changed since the batch"):
        plan_batch(str(goals), RunSettings(), str(tmp_path / "b"))
    goals.write_text("one\ntwo\nthree\n")
    with pytest.raises(SettingsError, match="started with sqlite checkpoints"):
        plan_batch(str(goals), RunSettings(), str(tmp_path / "b"), store_kind="postgres")


# --------------------------------------------------------------------------------------------- local engine


def test_local_batch_makes_a_run_folder_per_item_and_a_summary(tmp_path: Path) -> None:
    goals = tmp_path / "goals.jsonl"
    goals.write_text('"a teapot glowing red"\n{"goal": "a kettle on fire", "seed": 3, "strategy": "climbing"}\n')
    result = batch_cli(str(goals), "--max-iterations", "3", "--output-dir", str(tmp_path / "b"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "[item 1/2] a teapot glowing red: starting" in out
    assert "[ 3/3] score" in out, "per-image progress is shown"
    assert "2 items: 2 done; 6 images" in out
    folders = item_dirs(tmp_path / "b")
    assert [f.name for f in folders] == ["001-a-teapot-glowing-red", "002-a-kettle-on-fire"]
    for folder in folders:
        assert images_in(folder) == ["01.png", "02.png", "03.png"]
        assert (folder / "best.png").exists() and (folder / "checkpoints.sqlite").exists()
    assert state_of(folders[1])["settings"]["strategy"] == "climbing"
    assert state_of(folders[1])["settings"]["seed"] == 3
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert [(r["goal"], r["status"], r["images"]) for r in summary] == [
        ("a teapot glowing red", "done", 3),
        ("a kettle on fire", "done", 3),
    ]
    assert (tmp_path / "b" / "summary.txt").read_text() in out
    # The item folders are ordinary run folders: `refineloop runs` lists them.
    listed = subprocess.run(
        [sys.executable, "-m", "refineloop", "runs", str(tmp_path / "b")],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "001-a-teapot-glowing-red" in listed.stdout and "done" in listed.stdout


def test_killed_batch_resumes_where_it_stopped(tmp_path: Path) -> None:
    goals = tmp_path / "goals.jsonl"
    goals.write_text("".join(json.dumps({"goal": f"a stove number {n}", "seed": n}) + "\n" for n in (1, 2, 3)))
    flags = ["--image-model", "sketch:delay=0.15", "--strategy", "annealing", "--max-iterations", "4"]
    whole = batch_cli(str(goals), *flags, "--output-dir", str(tmp_path / "whole"), cwd=tmp_path)
    assert whole.returncode == 0, whole.stdout + whole.stderr

    proc = start_batch_cli(str(goals), *flags, "--output-dir", str(tmp_path / "cut"), cwd=tmp_path)
    wait_for(lambda: any((tmp_path / "cut").glob("002-*/02.png")), timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = item_dirs(tmp_path / "cut")[0]
    untouched = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}

    again = batch_cli(str(goals), *flags, "--output-dir", str(tmp_path / "cut"), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[item 1/3] a stove number 1: finished earlier, left as it is" in again.stdout
    assert "[item 2/3] a stove number 2: resuming after image" in again.stdout
    assert "[item 3/3] a stove number 3: starting" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == untouched
    for whole_dir, cut_dir in zip(item_dirs(tmp_path / "whole"), item_dirs(tmp_path / "cut"), strict=True):
        assert decisions(cut_dir) == decisions(whole_dir)
        assert images_in(cut_dir) == images_in(whole_dir)
        for name in images_in(whole_dir):
            assert same_image(cut_dir / name, whole_dir / name)
    record = json.loads((item_dirs(tmp_path / "cut")[1] / "batch-item.json").read_text())
    assert (record["status"], record["attempts"]) == ("done", 2)


def test_first_ctrl_c_finishes_the_image_and_stops_the_batch(tmp_path: Path) -> None:
    goals = tmp_path / "goals.txt"
    goals.write_text("a pan sizzling\na grill flaming\n")
    flags = ["--image-model", "sketch:delay=0.3", "--max-iterations", "4", "--output-dir", str(tmp_path / "b")]
    proc = start_batch_cli(str(goals), *flags, cwd=tmp_path)
    wait_for(lambda: any((tmp_path / "b").glob("001-*/01.png")), timeout=60)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "finishing the current step" in out
    assert "interrupted" in out and "pending" in out
    assert "to resume, run the same command again" in out
    assert not any((tmp_path / "b").glob("002-*/01.png")), "the batch went on to the next item"
    again = batch_cli(str(goals), *flags, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 items: 2 done; 8 images" in again.stdout


class FailsOnSecondImage(SketchImageModel):
    """The sketch painter, except that image 2 of the run named `doomed` raises like a crashed pipeline."""

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        if "doomed" in request.prompt and self.calls_for(request) == 2:
            raise RuntimeError("CUDA error: device-side assert triggered\nmore lines")
        return super().generate(request)

    def calls_for(self, request: ImageRequest) -> int:
        self.seen = getattr(self, "seen", 0) + 1
        return self.seen


def test_a_failed_item_is_reported_and_the_batch_goes_on(tmp_path: Path, scripted: Any, quiet: io.StringIO) -> None:
    cache, _ = scripted([judge_reply(3)] * 20)
    cache.register_image("flaky", FailsOnSecondImage(size=64))
    goals = tmp_path / "goals.txt"
    goals.write_text("a doomed toaster\na fine toaster\n")
    plan = plan_batch(
        str(goals), RunSettings(image_model="flaky", eval_model="scripted", max_iterations=3), str(tmp_path / "b")
    )
    store = FolderStore(plan.batch_dir)
    rows = run_local(plan, store, models=cache, out=quiet)
    assert [r.status for r in rows] == ["failed", "done"]
    assert rows[0].error.startswith("RuntimeError: CUDA error: device-side assert triggered (details in ")
    assert (Path(rows[0].run_dir) / "error.log").exists()
    assert rows[1].images == 3
    text = (tmp_path / "b" / "summary.txt").read_text()
    assert "error: RuntimeError: CUDA error" in text and "1 done, 1 failed" in text


def test_an_item_held_by_another_process_is_skipped_not_run_twice(tmp_path: Path, quiet: io.StringIO) -> None:
    from refineloop.run_folder.lock import locked

    goals = tmp_path / "goals.txt"
    goals.write_text("a candle\n")
    plan = plan_batch(str(goals), RunSettings(max_iterations=1), str(tmp_path / "b"))
    Path(plan.items[0].run_dir).mkdir(parents=True)
    with locked(plan.items[0].run_dir):  # flock is per open file: a second open in this process is refused too
        rows = run_local(plan, FolderStore(plan.batch_dir), out=quiet)
    assert rows[0].status == "pending"
    assert "skipped: " in quiet.getvalue() and "in use by refineloop" in quiet.getvalue()


# --------------------------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--goal", "x"], "reads its goals from GOALS_FILE"),
        (["--engine", "ray", "--address", "h:1"], "SQLite checkpoints cannot be shared between hosts"),
        (["--address", "h:1"], "--address joins a Ray cluster: add --engine ray"),
        (["--checkpointer", "mysql://x"], "--checkpointer takes a postgres://"),
        (["--max-iterations", "-1"], "--max-iterations must be 0"),
    ],
)
def test_command_line_mistakes_are_one_line(tmp_path: Path, flags: list[str], message: str) -> None:
    goals = tmp_path / "goals.txt"
    goals.write_text("a lamp\n")
    result = batch_cli(str(goals), *flags, "--output-dir", str(tmp_path / "b"), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_missing_goals_file_is_one_line(tmp_path: Path) -> None:
    result = batch_cli(str(tmp_path / "nope.txt"), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "goals file" in result.stderr and "does not exist" in result.stderr


def test_batch_item_round_trips_through_a_dict() -> None:
    item = BatchItem(index=3, goal="g", seed=2, flags={"steps": 4}, thread_id="t", run_dir="/r")
    assert BatchItem.from_dict(json.loads(json.dumps(item.to_dict()))) == item


def test_failed_model_load_fails_the_item_in_one_line(tmp_path: Path, quiet: io.StringIO) -> None:
    goals = tmp_path / "goals.txt"
    goals.write_text("a lamp\n")
    plan = plan_batch(str(goals), RunSettings(image_model="nonsense-model"), str(tmp_path / "b"))
    rows = run_local(plan, FolderStore(plan.batch_dir), out=quiet)
    assert rows[0].status == "failed"
    assert "unknown image model 'nonsense-model'" in rows[0].error


# --------------------------------------------------------------------------------------------- fractional scores


def planned_item(tmp_path: Path, store_kind: str = "sqlite") -> tuple[Any, Any]:
    """A one-goal batch plan and its item."""
    goals = tmp_path / "goals.txt"
    goals.write_text("a lamp\n")
    plan = plan_batch(str(goals), RunSettings(), str(tmp_path / "b"), store_kind)
    return plan, plan.items[0]


def test_a_fractional_best_score_survives_the_folder_store_and_the_summary(tmp_path: Path) -> None:
    from refineloop.apps.batch import format_summary, summarize, write_summary
    from refineloop.graph_build import build_graph

    plan, item = planned_item(tmp_path)
    store = FolderStore(plan.batch_dir)
    store.register(plan.batch_id, plan.items)
    with store.hold(item) as saver:
        # A finished run whose best is the mean of three looks.
        best = {"score": 22 / 3, "iteration": 2, "path": str(Path(item.run_dir) / "02.png")}
        config: Any = {"configurable": {"thread_id": item.thread_id}}
        build_graph("greedy", saver).update_state(
            config, {"best": best, "iteration": 3, "status": "done"}, as_node="stop"
        )
    rows = summarize(plan, store)
    assert rows[0].best_score == pytest.approx(22 / 3)
    assert "7.33/10" in format_summary(rows) and "7.333" not in format_summary(rows)
    write_summary(plan, rows)
    saved = json.loads((Path(plan.batch_dir) / "summary.json").read_text())
    assert saved[0]["best_score"] == pytest.approx(22 / 3)


@pytest.mark.slow
def test_a_fractional_best_score_survives_the_postgres_store(pg_url: str, tmp_path: Path) -> None:
    from refineloop.apps.batch import ItemResult
    from refineloop.apps.postgres import PostgresStore, prepare

    plan, item = planned_item(tmp_path, "postgres")
    prepare(pg_url)
    store = PostgresStore(pg_url, pool_size=1)
    try:
        store.register(plan.batch_id, plan.items)
        store.finished(item, ItemResult(item.thread_id, "done", best_score=7.33, images=3))
        assert store.records(plan.batch_id)[item.thread_id]["best_score"] == pytest.approx(7.33)
    finally:
        store.close()


@pytest.mark.slow
def test_an_old_runs_table_with_integer_scores_is_widened_and_keeps_its_rows(pg_url: str, tmp_path: Path) -> None:
    import psycopg

    from refineloop.apps.batch import ItemResult
    from refineloop.apps.postgres import RUNS_TABLE, PostgresStore, prepare

    plan, item = planned_item(tmp_path, "postgres")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # The table as batches made it before scores were floats.
        conn.execute(
            f"CREATE TABLE {RUNS_TABLE} (thread_id text PRIMARY KEY, batch text NOT NULL, item integer NOT NULL, "
            "goal text NOT NULL, spec jsonb NOT NULL, run_dir text NOT NULL, status text NOT NULL DEFAULT 'pending', "
            "attempts integer NOT NULL DEFAULT 0, best_score integer, images integer NOT NULL DEFAULT 0, "
            "seconds double precision NOT NULL DEFAULT 0, error text NOT NULL DEFAULT '', "
            "host text NOT NULL DEFAULT '', updated_at timestamptz NOT NULL DEFAULT now(), UNIQUE (batch, item))"
        )
        conn.execute(
            f"INSERT INTO {RUNS_TABLE} (thread_id, batch, item, goal, spec, run_dir, status, best_score) "
            "VALUES ('old-001', 'old', 1, 'a kettle', '{}', '/nowhere', 'done', 8)"
        )
    prepare(pg_url)
    store = PostgresStore(pg_url, pool_size=1)
    try:
        assert store.records("old")["old-001"]["best_score"] == 8
        store.register(plan.batch_id, plan.items)
        store.finished(item, ItemResult(item.thread_id, "done", best_score=6.5))
        assert store.records(plan.batch_id)[item.thread_id]["best_score"] == 6.5
    finally:
        store.close()
    prepare(pg_url)  # a second start finds the column already widened
