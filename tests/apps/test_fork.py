"""`refineloop fork RUN_DIR --from-iteration K`: a new run sharing the first K images; the original untouched."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from refineloop.apps.engine import EXIT_PAUSED
from refineloop.apps.fork import rewrite_paths, state_after_image
from refineloop.apps.reading import read_values
from refineloop.run_folder.folder import read_meta
from tests.conftest import cli_env, images_in, refineloop, wait_for

pytestmark = pytest.mark.slow

# A goal with no heat words keeps the demo critic from saying DONE, so a run makes exactly the images asked for.
STEADY = ["--goal", "a quiet blue teapot on a table", "--seed", "3"]


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def values_of(run: Path) -> dict[str, Any]:
    """The run's last checkpointed state."""
    return read_values(str(run), read_meta(str(run))["thread_id"])


def finished_run(root: Path) -> Path:
    """A finished five-image greedy run in `root`/runs/orig."""
    args = ["demo", *STEADY, "--strategy", "greedy", "--max-iterations", "5", "--output-dir", "runs/orig"]
    done = refineloop(*args, cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "runs" / "orig"


@pytest.fixture
def original(tmp_path: Path) -> Path:
    """A finished run of this test's own, for tests that fork it."""
    return finished_run(tmp_path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished run for the tests that only read it or are refused."""
    return finished_run(tmp_path_factory.mktemp("shared"))


def test_fork_with_another_strategy_shares_k_images_and_leaves_the_original_alone(tmp_path, original):
    before = fingerprint(original)
    forked = refineloop(
        "fork", str(original), "--from-iteration", "3", "--strategy", "annealing", "--max-iterations", "6", cwd=tmp_path
    )
    assert forked.returncode == 0, forked.stdout + forked.stderr
    assert fingerprint(original) == before, "the original folder changed"

    fork = tmp_path / "runs" / "orig-fork-3"
    assert f"forked {original} after image 3" in forked.stdout and "strategy: annealing" in forked.stdout
    assert "[ 4/6] score" in forked.stdout and "stopped: reached --max-iterations 6" in forked.stdout
    assert images_in(fork) == [f"{i:02d}.png" for i in range(1, 7)]
    for i in (1, 2, 3):
        assert (fork / f"{i:02d}.png").read_bytes() == (original / f"{i:02d}.png").read_bytes()
        record = json.loads((fork / f"{i:02d}.json").read_text())
        assert record["path"] == str(fork / f"{i:02d}.png"), "sidecar paths point into the fork"
    values = values_of(fork)
    assert values["status"] == "done" and values["run_dir"] == str(fork)
    assert [h["iteration"] for h in values["history"]] == [1, 2, 3, 4, 5, 6]
    assert values["history"][:3] == values_of(original)["history"][:3]
    assert values["settings"]["strategy"] == "annealing" and values["settings"]["seed"] == 3
    assert values["history"][3]["temperature"] is not None, "image 4 was accepted by annealing"
    assert Path(values["best"]["path"]).parent == fork
    meta = json.loads((fork / "run.json").read_text())
    assert meta["strategy"] == "annealing" and meta["forked_from"] == {
        "run_dir": str(original),
        "thread_id": "orig",
        "iteration": 3,
    }
    for name in ("best.png", "summary.txt", "collage.png", "checkpoints.sqlite"):
        assert (fork / name).is_file()

    listing = refineloop("runs", str(tmp_path / "runs"), cwd=tmp_path)
    rows = {line.split()[0]: line.split()[1:3] for line in listing.stdout.splitlines()[1:]}
    assert rows == {"orig": ["greedy", "done"], "orig-fork-3": ["annealing", "done"]}


def test_the_checkpoint_chosen_is_the_one_right_after_image_k_was_judged(shared):
    values = state_after_image(str(shared), read_meta(str(shared)), 2)
    assert values["iteration"] == 2 and values["candidate"]["iteration"] == 2
    assert [h["iteration"] for h in values["history"]] == [1, 2]
    assert values["decision"] == json.loads((shared / "02.json").read_text())["decision"]
    # Acceptance has run (the critic's idea is adopted), and nothing of image 3 exists yet.
    assert values["idea"] == values["candidate"]["next_idea"] and values["candidate"]["score"] is not None


def test_a_fork_is_resumable(tmp_path, original):
    # With --review and no input, the fork pauses before its first new image; resume answers there.
    fork = tmp_path / "elsewhere"
    paused = subprocess.run(
        [sys.executable, "-m", "refineloop", "fork", str(original), "--from-iteration", "2", "--review"]
        + ["--output-dir", str(fork)],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert paused.returncode == EXIT_PAUSED, paused.stdout + paused.stderr
    assert "--- review of image 2/5" in paused.stdout and images_in(fork) == ["01.png", "02.png"]
    resumed = subprocess.run(
        [sys.executable, "-m", "refineloop", "resume", str(fork)],
        cwd=tmp_path,
        env=cli_env(),
        input="a\na\ns\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert images_in(fork) == ["01.png", "02.png", "03.png", "04.png"]
    assert values_of(fork)["stop_reason"] == "stopped by the reviewer at image 4"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{orig}", "--from-iteration", "6"], "--from-iteration 6 is out of range: {orig} has images 1 to 5"),
        (["{orig}", "--from-iteration", "0"], "--from-iteration 0 is out of range"),
        (["{tmp}", "--from-iteration", "1"], "is not a refineloop run"),
        (["{orig}", "--from-iteration", "2", "--output-dir", "{orig}"], "{orig} already exists"),
        (["{orig}", "--from-iteration", "2", "--patience", "0"], "--patience must be at least 1"),
    ],
)
def test_errors_are_one_line_and_change_nothing(tmp_path, shared, args, message):
    root = shared.parent.parent
    before = fingerprint(root)
    names = {"orig": str(shared), "tmp": str(tmp_path)}
    result = refineloop("fork", *[a.format(**names) for a in args], cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message.format(**names) in result.stderr and result.stderr.count("\n") == 1
    assert fingerprint(root) == before and not any(tmp_path.iterdir())


def test_a_running_original_is_refused(tmp_path, start_cli):
    proc = start_cli("demo", *STEADY, "--max-iterations", "6", "--image-model", "sketch:delay=1", "--output-dir", "r")
    run = tmp_path / "r"
    wait_for(lambda: (run / "01.png").exists())
    result = refineloop("fork", str(run), "--from-iteration", "1", cwd=tmp_path)
    assert result.returncode == 2 and "is in use by refineloop" in result.stderr, result.stdout + result.stderr
    assert not (tmp_path / "r-fork-1").exists()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)


def test_rewrite_paths_touches_only_paths_in_the_old_folder():
    value = {"a": "/x/run/01.png", "b": ["/x/run", "/x/run2/01.png", "run/01.png"], "c": 3}
    assert rewrite_paths(value, "/x/run", "/y/f") == {
        "a": "/y/f/01.png",
        "b": ["/y/f", "/x/run2/01.png", "run/01.png"],
        "c": 3,
    }


def test_best_of_n_forks_only_where_a_round_ends(tmp_path):
    args = ["demo", *STEADY, "--strategy", "climbing", "--max-iterations", "3", "--candidates", "2", "--patience", "9"]
    done = refineloop(*args, "--output-dir", "bon", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "bon"
    assert len(images_in(run)) == 6
    refused = refineloop("fork", str(run), "--from-iteration", "3", cwd=tmp_path)
    assert refused.returncode == 2 and "rounds ending at images 2, 4, 6" in refused.stderr
    forked = refineloop("fork", str(run), "--from-iteration", "4", "--max-iterations", "4", cwd=tmp_path)
    assert forked.returncode == 0, forked.stdout + forked.stderr
    fork = tmp_path / "bon-fork-4"
    assert images_in(fork) == [f"{i:02d}.png" for i in range(1, 9)]
    assert all((fork / f"0{i}.png").read_bytes() == (run / f"0{i}.png").read_bytes() for i in range(1, 5))
    assert len(values_of(fork)["history"]) == 4
