"""Looking is read-only and never hangs, and every reader of an untrusted file checks it first: `runs`, `show`,
`resume`, `fork` and `batch` against FIFOs, folders and huge files where files belong, a killed run's log,
failed runs, hostile PNGs and a Postgres nobody asked to reach, through the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from refineloop.cli.main import main
from tests.conftest import cli_env, refineloop, wait_for

pytestmark = pytest.mark.slow

STEADY = ["--goal", "a quiet blue teapot", "--strategy", "climbing", "--seed", "7", "--patience", "9"]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "?"
        for p in sorted(folder.rglob("*"))
        if not p.is_fifo()
    }


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-image run to copy."""
    home = tmp_path_factory.mktemp("done")
    made = refineloop("demo", *STEADY, "--max-iterations", "2", "--output-dir", "run", cwd=home)
    assert made.returncode == 0, made.stderr
    return home / "run"


def copy_run(done: Path, where: Path) -> Path:
    where.mkdir(parents=True)
    for p in done.iterdir():
        (where / p.name).write_bytes(p.read_bytes())
    return where


def test_runs_survives_fifos_folders_and_huge_files_and_writes_nothing(tmp_path: Path, done: Path) -> None:
    root = tmp_path / "runs"
    good = copy_run(done, root / "a-good")
    fifo_meta = copy_run(done, root / "b-fifo-meta")
    (fifo_meta / "run.json").unlink()
    os.mkfifo(fifo_meta / "run.json")
    fifo_db = copy_run(done, root / "c-fifo-db")
    (fifo_db / "checkpoints.sqlite").unlink()
    os.mkfifo(fifo_db / "checkpoints.sqlite")
    fifo_lock = copy_run(done, root / "d-fifo-lock")
    (fifo_lock / ".lock").unlink(missing_ok=True)
    os.mkfifo(fifo_lock / ".lock")
    huge = copy_run(done, root / "e-huge-meta")
    with open(huge / "run.json", "ab") as fh:
        fh.truncate(64 << 20)  # sparse: 64 MB claimed, nothing written
    folder_db = copy_run(done, root / "f-folder-db")
    (folder_db / "checkpoints.sqlite").unlink()
    (folder_db / "checkpoints.sqlite").mkdir()
    before = snapshot(root)
    listing = subprocess.run(
        [sys.executable, "-m", "refineloop", "runs", str(root)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert " done " in rows["a-good"] and " done " in rows["d-fifo-lock"], listing.stdout
    for name in ("b-fifo-meta", "c-fifo-db", "e-huge-meta"):
        assert " damaged " in rows[name], listing.stdout
    assert snapshot(root) == before
    assert good.exists()


def test_a_killed_run_with_a_log_is_listed_without_making_files(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "refineloop", "demo", *STEADY, "--image-model", "sketch:delay=0.2"]
        + ["--max-iterations", "6", "--output-dir", "runs/k"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run = tmp_path / "runs" / "k"
    wait_for(lambda: (run / "03.png").exists())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (run / "checkpoints.sqlite-shm").unlink(missing_ok=True)  # as after a reboot: only the log is left
    assert (run / "checkpoints.sqlite-wal").exists()
    names, before = sorted(p.name for p in run.iterdir()), snapshot(run)
    listing = refineloop("runs", cwd=tmp_path)
    row = next(line for line in listing.stdout.splitlines() if line.startswith("k "))
    assert " interrupted " in row and int(row.split()[3]) >= 2, listing.stdout
    assert sorted(p.name for p in run.iterdir()) == names and snapshot(run) == before


def test_a_run_that_failed_is_listed_as_failed_with_its_reason(tmp_path: Path) -> None:
    """The critic's server answers image 2 with an error: the run is `failed`, and says why."""
    from tests.fake_openai import VISION, FakeOpenAI

    reply = json.dumps({"score": 3, "critique": "warm", "verdict": "CONTINUE", "next_idea": "a hotdog"})
    with FakeOpenAI({"vis": VISION}, {"judge": [reply, {"status": 400, "message": "model exploded"}]}) as fake:
        failed = refineloop(
            "run", "--eval-model", "openai:vis", "--openai-url", fake.url, "--image-model", "sketch:size=64",
            "--max-iterations", "3", "--output-dir", "runs/f", cwd=tmp_path,
        )  # fmt: skip
    assert failed.returncode == 1, failed.stdout + failed.stderr
    listing = refineloop("runs", cwd=tmp_path)
    row = next(line for line in listing.stdout.splitlines() if line.startswith("f "))
    assert " failed " in row and "model exploded" in row, listing.stdout


def test_runs_does_not_reach_a_postgres_it_was_not_asked_to(tmp_path: Path, done: Path) -> None:
    run = copy_run(done, tmp_path / "runs" / "pg")
    meta = json.loads((run / "run.json").read_text())
    # A non-routable address: a connection attempt would hang far past the timeout below.
    meta["checkpointer"] = "postgresql://bob@10.255.255.1:5432/db"
    (run / "run.json").write_text(json.dumps(meta))
    listing = subprocess.run(
        [sys.executable, "-m", "refineloop", "runs", str(tmp_path / "runs")],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=20,
    )
    row = next(line for line in listing.stdout.splitlines() if line.startswith("pg "))
    assert " elsewhere " in row and "--checkpointer" in row, listing.stdout


def test_resume_and_fork_of_a_fifo_run_json_are_one_line(tmp_path: Path, done: Path) -> None:
    run = copy_run(done, tmp_path / "r")
    (run / "run.json").unlink()
    os.mkfifo(run / "run.json")
    for args in (["resume", str(run)], ["fork", str(run), "--from-iteration", "1"]):
        result = subprocess.run(
            [sys.executable, "-m", "refineloop", *args], env=cli_env(), capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "run.json is damaged" in result.stderr


def test_a_goals_file_that_is_a_fifo_is_one_line(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "goals.txt")
    result = subprocess.run(
        [sys.executable, "-m", "refineloop", "batch", "goals.txt"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "not a regular file" in result.stderr, result.stderr


@pytest.mark.parametrize("damage", ["link", "truncated"])
def test_fork_checks_the_images_it_copies(tmp_path: Path, done: Path, damage: str) -> None:
    run = copy_run(done, tmp_path / "r")
    image = run / "02.png"
    if damage == "link":
        (tmp_path / "elsewhere.png").write_bytes(image.read_bytes())
        image.unlink()
        image.symlink_to(tmp_path / "elsewhere.png")
    else:
        image.write_bytes(image.read_bytes()[:200])
    result = refineloop("fork", str(run), "--from-iteration", "2", cwd=tmp_path)
    assert result.returncode == 2 and "02.png" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "r-fork-2").exists()


# --------------------------------------------------------------------------------------------- hostile PNGs


def png_with(chunks: list[tuple[bytes, bytes]], width: int = 8, height: int = 8) -> bytes:
    """A PNG built by hand: a header claiming `width` x `height`, the given chunks, a tiny IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = b"".join(chunk(k, d) for k, d in chunks)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + body
        + chunk(b"IDAT", zlib.compress(b"\0" * 8))
        + chunk(b"IEND", b"")
    )


def test_a_header_claiming_billions_of_pixels_is_read_without_decoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = json.dumps({"prompt": "a vast plain", "seed": 5})
    (tmp_path / "vast.png").write_bytes(png_with([(b"tEXt", b"refineloop\0" + record.encode())], 100_000, 100_000))
    assert main(["show", str(tmp_path / "vast.png")]) == 0
    assert "a vast plain" in capsys.readouterr().out


@pytest.mark.parametrize(
    "chunks",
    [
        [(b"zTXt", b"parameters\0\0" + zlib.compress(b"a" * (64 << 20)))],  # a text bomb
        [(b"tEXt", b"refineloop\0" + b"x" * (3 << 20))],  # one huge chunk
        [(b"iTXt", b"refineloop\0\0\0\0\0" + b"\xff\xfe bad utf-8")],
    ],
    ids=["bomb", "huge", "not-utf8"],
)
def test_hostile_text_chunks_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], chunks) -> None:
    (tmp_path / "bad.png").write_bytes(png_with(chunks))
    assert main(["show", str(tmp_path / "bad.png")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bad.png" in err, err


def test_fields_of_the_wrong_type_are_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = PngInfo()
    record = {"prompt": "a cat", "seed": "NaN", "steps": True, "width": "wide", "height": 10**40, "loras": [1, {}]}
    info.add_text("refineloop", json.dumps(record))
    Image.new("RGB", (8, 8)).save(tmp_path / "typed.png", pnginfo=info)
    assert main(["show", str(tmp_path / "typed.png")]) == 0
    out = capsys.readouterr().out
    assert "a cat" in out and "NaN" not in out and "wide" not in out
    assert main(["show", str(tmp_path / "typed.png"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"prompt": "a cat", "loras": []}


def test_show_of_a_fifo_is_one_line(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    result = subprocess.run(
        [sys.executable, "-m", "refineloop", "show", str(tmp_path / "pipe.png")],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "not a regular file" in result.stderr, result.stderr
