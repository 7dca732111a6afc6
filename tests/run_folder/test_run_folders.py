"""Run folders under races, copies, moves, damage and signals, through the real CLI in subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from refineloop.apps.reading import read_values
from tests.conftest import cli_env, images_in, refineloop, start_cli_in, wait_for

pytestmark = pytest.mark.slow

# No heat words: the demo critic never says DONE, so a run makes exactly the images it is allowed.
STEADY = ["--goal", "a quiet blue teapot on a table", "--strategy", "climbing", "--seed", "7", "--patience", "9"]
SLOW = ["--image-model", "sketch:delay=0.3"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` by relative path, with a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def history(run: Path) -> list[dict[str, object]]:
    meta = json.loads((run / "run.json").read_text())
    return read_values(str(run), meta["thread_id"])["history"]


def pixels(path: Path) -> bytes:
    with Image.open(path) as picture:
        return picture.convert("RGB").tobytes()


def same_images(a: Path, b: Path) -> None:
    """Both folders hold the same NN.png pictures, pixel for pixel (their provenance names their own run), and
    best.png agrees."""
    assert images_in(a) == images_in(b)
    for name in [*images_in(a), "best.png"]:
        assert pixels(a / name) == pixels(b / name), name


def one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 5-image run: what every interrupted and resumed one must end as."""
    home = tmp_path_factory.mktemp("whole")
    done = refineloop("demo", *STEADY, "--max-iterations", "5", "--output-dir", "run", cwd=home)
    assert done.returncode == 0, done.stdout + done.stderr
    return home / "run"


def interrupted(start_cli, tmp_path: Path, sig: int = signal.SIGINT, name: str = "run") -> Path:
    """A 5-image run stopped by `sig` once its second image is on disk."""
    proc = start_cli("demo", *STEADY, *SLOW, "--max-iterations", "5", "--output-dir", name)
    run = tmp_path / name
    wait_for(lambda: (run / "02.png").exists())
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert f"resume with: refineloop resume {run}" in out and "Traceback" not in out
    return run


# --------------------------------------------------------------------------------------------- one folder, one run


def test_two_runs_racing_for_one_output_dir_never_share_it(tmp_path: Path, start_cli) -> None:
    first = start_cli("demo", *STEADY, *SLOW, "--max-iterations", "3", "--output-dir", "same")
    second = start_cli("demo", *STEADY, *SLOW, "--max-iterations", "3", "--output-dir", "same")
    outs = [proc.communicate(timeout=120)[0] for proc in (first, second)]
    codes = sorted(proc.returncode for proc in (first, second))
    assert codes == [0, 2], outs
    loser = outs[[first.returncode, second.returncode].index(2)]
    assert "in use by refineloop" in loser or "is not empty" in loser, loser
    assert "Traceback" not in "".join(outs)
    run = tmp_path / "same"
    assert [h["iteration"] for h in history(run)] == [1, 2, 3]
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    assert [t["iteration"] for t in trace if t["kind"] == "image"] == [1, 2, 3], "a second run wrote images here"


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path: Path, start_cli) -> None:
    procs = [start_cli("demo", *STEADY, "--max-iterations", "2") for _ in range(3)]
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 3
    for folder in folders:
        assert images_in(folder) == ["01.png", "02.png"]
        assert [h["iteration"] for h in history(folder)] == [1, 2]


def test_a_run_that_fails_before_its_first_image_leaves_nothing_behind(tmp_path: Path) -> None:
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    for target in ("named", ""):
        flags = ["--output-dir", target] if target else []
        failed = refineloop("run", "--image-model", str(broken), "--max-iterations", "2", *flags, cwd=tmp_path)
        assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
        assert not (tmp_path / "named").exists()
        assert not any((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True
    again = refineloop("demo", *STEADY, "--max-iterations", "1", "--output-dir", "named", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.parametrize("kind", ["file", "filled"])
def test_an_output_dir_that_cannot_hold_a_run_is_one_line(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    if kind == "file":
        target.write_text("mine")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    result = refineloop("demo", "--output-dir", str(target), cwd=tmp_path)
    one_line_error(result, "not a folder" if kind == "file" else "is not empty")
    assert (target.read_text() if kind == "file" else sorted(p.name for p in target.iterdir())) in (
        "mine",
        ["notes.txt"],
    )


# --------------------------------------------------------------------------------------------- relocatable


def test_resuming_a_copy_writes_only_into_the_copy(tmp_path: Path, start_cli, whole: Path) -> None:
    run = interrupted(start_cli, tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, symlinks=True)
    before = snapshot(run)
    resumed = refineloop("resume", str(copy), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert snapshot(run) == before, "resuming the copy changed the original"
    same_images(copy, whole)
    assert str(run) not in (copy / "summary.txt").read_text()
    assert all(str(run) not in json.dumps(entry) for entry in history(copy)[2:])


def test_a_moved_run_folder_resumes_into_itself(tmp_path: Path, start_cli, whole: Path) -> None:
    run = interrupted(start_cli, tmp_path)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    run.rename(moved)
    resumed = refineloop("resume", str(moved), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert not run.exists()
    same_images(moved, whole)
    forked = refineloop("fork", str(moved), "--from-iteration", "3", "--output-dir", "fork", cwd=tmp_path)
    assert forked.returncode == 0, forked.stdout + forked.stderr
    assert (tmp_path / "fork" / "03.png").read_bytes() == (moved / "03.png").read_bytes()
    assert not run.exists(), "the fork wrote into the folder the run was made in"


# --------------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_drain_like_ctrl_c_and_resume_exactly(
    tmp_path: Path, start_cli, whole: Path, sig: int
) -> None:
    run = interrupted(start_cli, tmp_path, sig)
    assert (run / "summary.txt").exists() and (run / "best.png").exists()
    resumed = refineloop("resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    same_images(run, whole)
    keys = ("iteration", "score", "decision")
    assert [{k: h[k] for k in keys} for h in history(run)] == [{k: h[k] for k in keys} for h in history(whole)]


def test_ctrl_c_while_the_model_loads_is_one_line_and_leaves_nothing(tmp_path: Path, tiny_sd_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "refineloop", "run", "--image-model", str(tiny_sd_dir), "--eval-model", "demo"]
        + ["--output-dir", "loading"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: (tmp_path / "loading" / ".lock").exists(), timeout=60)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert err.strip().splitlines() == ["refineloop: stopped before the first image: nothing was kept"], err
    assert not (tmp_path / "loading").exists()


# --------------------------------------------------------------------------------------------- damage


@pytest.fixture(scope="module")
def two_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-image run, made once for the module; tests take copies of it (`finished`)."""
    home = tmp_path_factory.mktemp("two-images")
    done = refineloop("demo", *STEADY, "--max-iterations", "2", "--output-dir", "run", cwd=home)
    assert done.returncode == 0, done.stdout + done.stderr
    return home / "run"


def finished(tmp_path: Path, name: str, template: Path) -> Path:
    """A finished run at runs/NAME: a copy of `template`, which a copied folder is a run of its own (tested above:
    it resumes, lists and forks as itself), without a CLI process per run."""
    target = tmp_path / "runs" / name
    shutil.copytree(template, target)
    return target


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_database_is_one_line_and_listed_as_damaged(tmp_path: Path, two_images: Path, damage: str) -> None:
    good, bad = finished(tmp_path, "a-good", two_images), finished(tmp_path, "b-bad", two_images)
    database = bad / "checkpoints.sqlite"
    data = database.read_bytes()
    database.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"not a database " * 300)
    one_line_error(refineloop("resume", str(bad), cwd=tmp_path), "checkpoints.sqlite is damaged")
    listing = refineloop("runs", cwd=tmp_path)
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert " damaged " in rows["b-bad"] and " done " in rows["a-good"], listing.stdout
    assert good.exists()


@pytest.mark.parametrize("meta", ['{"strategy": "climbing"}', "[1, 2]", '{"thread_id": "x", "strategy": "zigzag"}'])
def test_a_damaged_run_json_is_one_line(tmp_path: Path, two_images: Path, meta: str) -> None:
    run = finished(tmp_path, "r", two_images)
    (run / "run.json").write_text(meta)
    for command in (["resume", str(run)], ["fork", str(run), "--from-iteration", "1"]):
        one_line_error(refineloop(*command, cwd=tmp_path), "run.json is damaged")


def test_listing_runs_reads_without_writing_and_survives_a_closed_pipe(tmp_path: Path, two_images: Path) -> None:
    runs = [finished(tmp_path, f"r{n}", two_images) for n in range(3)]
    before = {run: snapshot(run) for run in runs}
    names = {run: sorted(p.name for p in run.iterdir()) for run in runs}
    listing = refineloop("runs", cwd=tmp_path)
    assert listing.returncode == 0 and all(run.name in listing.stdout for run in runs)
    assert {run: snapshot(run) for run in runs} == before
    assert {run: sorted(p.name for p in run.iterdir()) for run in runs} == names, "listing made -wal/-shm files"
    # A reader that goes away at once (`refineloop runs | head -0`) ends the listing quietly.
    piped = subprocess.run(
        f"{sys.executable} -m refineloop.cli.main runs | head -c 0",
        shell=True,
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.stderr == "", piped.stderr


def test_runs_lists_the_runs_inside_batch_folders(tmp_path: Path, two_images: Path) -> None:
    finished(tmp_path, "single", two_images)
    goals = tmp_path / "goals.txt"
    goals.write_text("a quiet blue teapot\na calm green lamp\n")
    batch = refineloop("batch", str(goals), "--max-iterations", "1", "--image-model", "sketch", cwd=tmp_path)
    assert batch.returncode == 0, batch.stdout + batch.stderr
    listing = refineloop("runs", cwd=tmp_path).stdout
    lines = listing.splitlines()
    header = next(n for n, line in enumerate(lines) if line.startswith("batch goals-batch/"))
    assert "(2 runs)" in lines[header]
    assert lines[header + 1].startswith("  001-a-quiet-blue-teapot") and " done " in lines[header + 1]
    assert lines[header + 2].startswith("  002-a-calm-green-lamp")
    assert any(line.startswith("single ") for line in lines)


@pytest.mark.parametrize("limit", [20_000, 150_000])
def test_a_full_disk_is_one_line_and_nothing_is_lost(tmp_path: Path, whole: Path, limit: int) -> None:
    """RLIMIT_FSIZE makes writes past a size fail as a full disk does (EFBIG), without a special mount: the run
    stops in one line, and either resumes to the same end or, stopped before its first checkpoint, left nothing
    that keeps the same command from running again."""
    import resource

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = [sys.executable, "-m", "refineloop", "demo", *STEADY, "--max-iterations", "5", "--output-dir", "r"]
    full = subprocess.run(
        args, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120, preexec_fn=small_files
    )
    assert full.returncode == 1, full.stdout + full.stderr
    assert "Traceback" not in full.stdout + full.stderr
    assert "free some space" in full.stdout, full.stdout
    run = tmp_path / "r"
    if (run / "run.json").exists():
        assert f"resume with: refineloop resume {run}" in full.stdout
        resumed = refineloop("resume", str(run), cwd=tmp_path)
    else:
        assert not run.exists(), sorted(p.name for p in run.iterdir())
        resumed = refineloop(*args[3:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    same_images(run, whole)


# --------------------------------------------------------------------------------------------- resume overrides


def test_resume_may_change_how_models_are_reached_but_nothing_else(tmp_path: Path, start_cli, whole: Path) -> None:
    run = interrupted(start_cli, tmp_path)
    refused = refineloop("resume", str(run), "--seed", "4", cwd=tmp_path)
    assert refused.returncode == 2 and "unrecognized arguments: --seed" in refused.stderr
    one_line_error(refineloop("resume", str(run), "--critic-timeout", "0", cwd=tmp_path), "--critic-timeout")
    resumed = refineloop(
        "resume",
        str(run),
        "--device",
        "cpu",
        "--critic-timeout",
        "30",
        "--ollama-url",
        "http://127.0.0.1:9",
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    same_images(run, whole)


def never_done(role: str, body: dict[str, object], n: int) -> object:
    """A critic that never says DONE, so a run makes every image it is allowed."""
    if role == "judge":
        return {"score": 5, "critique": "fine", "verdict": "CONTINUE", "next_idea": "a bluer teapot"}
    return "IDEA: a bluer teapot" if role == "vision" else "a bluer teapot"


def test_resume_reaches_a_critic_that_moved(tmp_path: Path) -> None:
    from tests.fake_ollama import FakeOllama

    flags = ["--eval-model", "ollama:llava:7b", "--image-model", "sketch:delay=0.3", "--max-iterations", "4"]
    models = {"llava:7b": ["completion", "vision"]}
    with FakeOllama(models=models, default=never_done) as first:
        proc = start_cli_in(tmp_path, "run", *flags, "--ollama-url", first.url, "--output-dir", "r")
        wait_for(lambda: (tmp_path / "r" / "02.png").exists())
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    with FakeOllama(models=models, default=never_done) as second:
        resumed = refineloop("resume", "r", "--ollama-url", second.url, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert second.chat_requests("judge"), "the resumed run did not use the critic at the new address"
    assert images_in(tmp_path / "r") == ["01.png", "02.png", "03.png", "04.png"]


def test_each_write_of_a_killed_run_is_whole(tmp_path: Path, start_cli) -> None:
    """SIGKILL at a random moment never leaves a half-written sidecar or a temporary file that a resume trips on."""
    proc = start_cli("demo", *STEADY, *SLOW, "--max-iterations", "4", "--output-dir", "k")
    run = tmp_path / "k"
    wait_for(lambda: (run / "02.json").exists())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = refineloop("resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for sidecar in run.glob("[0-9][0-9].json"):
        assert isinstance(json.loads(sidecar.read_text()), dict)
    with sqlite3.connect(run / "checkpoints.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sidecars_that_are_json_but_not_objects_are_skipped(tmp_path: Path, start_cli) -> None:
    run = interrupted(start_cli, tmp_path)
    (run / "01.json").write_text("[1, 2]")
    (run / "02.json").write_text('"a string"')
    resumed = refineloop("resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stdout + resumed.stderr, resumed.stderr
    assert (run / "report.html").exists() and (run / "summary.txt").exists() and (run / "collage.png").exists()
    forked = refineloop("fork", str(run), "--from-iteration", "2", "--output-dir", "f", cwd=tmp_path)
    assert forked.returncode == 0, forked.stdout + forked.stderr
