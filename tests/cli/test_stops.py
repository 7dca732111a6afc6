"""A folder that holds a checkpoint is never deleted: second stop signals, signal pairs, a closed output pipe and
a failed start, sent to the real CLI in subprocesses, for run/demo, resume, fork and batch."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli_env, images_in, refineloop, wait_for

pytestmark = pytest.mark.slow

STEADY = ["--goal", "a quiet blue teapot on a table", "--strategy", "climbing", "--seed", "7", "--patience", "9"]
SLOW = ["--image-model", "sketch:delay=0.2"]


def start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "refineloop", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def signals(proc: subprocess.Popen[str], sigs: list[int], gap: float) -> tuple[str, str]:
    for sig in sigs:
        if proc.poll() is None:
            proc.send_signal(sig)
        time.sleep(gap)
    out, err = proc.communicate(timeout=90)
    return out, err


def resumable(run: Path, out: str, err: str, cwd: Path) -> None:
    """The run kept its images and checkpoints, said how to resume in a line, and resumes to its end."""
    assert "Traceback" not in out + err, out + err
    assert f"refineloop resume {run}" in out + err, out + err
    assert (run / "checkpoints.sqlite").is_file() and (run / "run.json").is_file()
    assert images_in(run), sorted(p.name for p in run.iterdir())
    resumed = refineloop("resume", str(run), cwd=cwd)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert images_in(run)[-1] == "04.png"


@pytest.mark.parametrize(
    ("sigs", "gap"),
    [
        ([signal.SIGINT, signal.SIGINT], 0.0),
        ([signal.SIGHUP, signal.SIGTERM], 0.01),
        ([signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGINT, signal.SIGINT], 0.02),
    ],
)
def test_stop_signals_in_quick_succession_keep_the_run(tmp_path: Path, sigs: list[int], gap: float) -> None:
    proc = start(tmp_path, "demo", *STEADY, *SLOW, "--max-iterations", "4", "--output-dir", "r")
    run = tmp_path / "r"
    wait_for(lambda: (run / "02.png").exists())
    out, err = signals(proc, sigs, gap)
    assert proc.returncode == 130, out + err
    resumable(run, out, err, tmp_path)


def test_a_closed_output_pipe_stops_the_run_and_keeps_it(tmp_path: Path) -> None:
    piped = subprocess.run(
        f"{sys.executable} -m refineloop demo {' '.join(repr(a) for a in STEADY)} --image-model sketch:delay=0.1 "
        "--max-iterations 4 --output-dir r | head -n 5",
        shell=True,
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    err = piped.stderr.strip().splitlines()
    assert len(err) == 1 and "the output was closed" in err[0] and "resume" in err[0], piped.stderr
    resumable(tmp_path / "r", piped.stdout, piped.stderr, tmp_path)


def test_a_failed_start_takes_back_only_what_it_made(tmp_path: Path, tiny_sd_dir: Path) -> None:
    """A file someone put in the folder while the model loaded stays, and so does the folder; the run's own
    lock, run.json and database go."""
    proc = start(tmp_path, "run", "--image-model", str(tiny_sd_dir), "--eval-model", "demo", "--output-dir", "f")
    folder = tmp_path / "f"
    wait_for(lambda: (folder / ".lock").exists(), timeout=60)
    (folder / "notes.txt").write_text("mine")
    time.sleep(0.2)
    out, err = signals(proc, [signal.SIGINT], 0)
    assert proc.returncode == 130 and "Traceback" not in out + err, out + err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_a_double_stop_in_a_fork_says_what_was_kept(tmp_path: Path) -> None:
    done = refineloop("demo", *STEADY, "--max-iterations", "2", "--output-dir", "src", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    proc = start(tmp_path, "fork", "src", "--from-iteration", "1", "--max-iterations", "4", *SLOW)
    fork = tmp_path / "src-fork-1"
    wait_for(lambda: (fork / "02.png").exists())
    out, err = signals(proc, [signal.SIGINT, signal.SIGINT, signal.SIGINT], 0.01)
    assert proc.returncode == 130
    resumable(fork, out, err, tmp_path)


def test_a_double_stop_while_resuming_keeps_the_run(tmp_path: Path) -> None:
    proc = start(tmp_path, "demo", *STEADY, *SLOW, "--max-iterations", "4", "--output-dir", "r")
    run = tmp_path / "r"
    wait_for(lambda: (run / "01.png").exists())
    signals(proc, [signal.SIGINT], 0)
    again = start(tmp_path, "resume", str(run))
    wait_for(lambda: (run / "03.png").exists())
    out, err = signals(again, [signal.SIGHUP, signal.SIGTERM, signal.SIGINT], 0.01)
    assert again.returncode == 130
    resumable(run, out, err, tmp_path)


def test_a_batch_whose_output_is_closed_keeps_its_items(tmp_path: Path) -> None:
    (tmp_path / "goals.txt").write_text("a quiet blue teapot\na calm green lamp\n")
    piped = subprocess.run(
        f"{sys.executable} -m refineloop batch goals.txt --max-iterations 3 --image-model sketch:delay=0.1 | head -n 3",
        shell=True,
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert "Traceback" not in piped.stderr
    lines = piped.stderr.strip().splitlines()
    assert len(lines) == 1 and "run the same command again" in lines[0], piped.stderr
    item = tmp_path / "runs" / "goals-batch" / "001-a-quiet-blue-teapot"
    assert images_in(item)
    again = refineloop("batch", "goals.txt", "--max-iterations", "3", "--image-model", "sketch", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count(" done ") == 2, again.stdout


def test_a_stop_before_anything_is_made_is_one_line(tmp_path: Path) -> None:
    """Stops during start-up (the imports behind the parser) as well: one line, never a traceback, nothing made."""
    for delay in (0.3, 0.6):
        proc = start(tmp_path, "demo", *STEADY, "--output-dir", "early")
        time.sleep(delay)
        out, err = signals(proc, [signal.SIGINT, signal.SIGTERM], 0.01)
        assert proc.returncode == 130, out + err
        assert len(err.strip().splitlines()) == 1 and "stopped before" in err, err
        assert not (tmp_path / "early").exists()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("limit", [0, 100, 1200])
def test_a_full_disk_at_every_phase_is_one_line_and_leaves_no_empty_folder(tmp_path: Path, limit: int) -> None:
    """A file-size limit makes the lock's first write fail (0), then the database's (100), then a later one
    (1200): one line each time; either nothing is left, not even the folders made to hold the run, or the run
    is kept and says how to resume."""
    import resource

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = [sys.executable, "-m", "refineloop", "demo", *STEADY, "--max-iterations", "2", "--output-dir", "deep/er/r"]
    full = subprocess.run(
        args, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120, preexec_fn=small_files
    )
    assert full.returncode in (1, 2) and "Traceback" not in full.stdout + full.stderr, full.stdout + full.stderr
    run = tmp_path / "deep" / "er" / "r"
    said = full.stderr if full.returncode == 2 else full.stdout
    assert "free some space" in said or "file limit" in said, said
    if not (run / "run.json").exists():
        assert full.returncode == 1 or len(full.stderr.strip().splitlines()) == 1, full.stderr
        assert not (tmp_path / "deep").exists(), sorted(str(p) for p in (tmp_path / "deep").rglob("*"))
    else:
        assert "free some space" in full.stdout and f"refineloop resume {run}" in full.stdout, full.stdout
        assert refineloop("resume", str(run), cwd=tmp_path).returncode == 0


def test_a_process_that_gave_up_on_streaming_calls_exits_with_its_own_status(tmp_path: Path) -> None:
    """A critic that streams one chunk of its reply and then goes quiet: the call times out and is abandoned; the
    process says so in one line and exits with its status at once, never an abort at interpreter shutdown."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler

    from tests.fake_http import QuietServer
    from tests.fake_openai import default_reply, role_of

    class Stalling(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._json({"object": "list", "data": [{"id": "vis", "object": "model", "owned_by": "x"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if role_of(body) == "probe" or not body.get("stream"):
                text = default_reply(role_of(body), body, 1)
                message = {"role": "assistant", "content": text}
                self._json({"id": "c", "object": "chat.completion", "created": 0, "model": "vis",
                            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})  # fmt: skip
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            delta = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": '{"sco'}}]}
            self.wfile.write(f"data: {json.dumps(delta)}\n\n".encode())
            self.wfile.flush()
            stop.wait(30)  # the rest never comes while the client waits

        def _json(self, data: object) -> None:
            raw = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    stop = threading.Event()
    server = QuietServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.time()
        done = subprocess.run(
            [sys.executable, "-m", "refineloop", "run", "--eval-model", "openai:vis", "--openai-stream"]
            + ["--openai-url", f"http://127.0.0.1:{server.server_port}/v1", "--image-model", "sketch:size=64"]
            + ["--critic-timeout", "1", "--critic-retries", "0", "--max-iterations", "2", "--output-dir", "r"],
            cwd=tmp_path,
            env={**cli_env(), "OPENAI_API_KEY": "sk-stall-0123456789"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        elapsed = time.time() - started
    finally:
        stop.set()
        server.shutdown()
    shown = done.stdout + done.stderr
    assert done.returncode in (1, 2), shown
    assert "Fatal Python error" not in shown and "Traceback" not in shown, shown
    assert elapsed < 25, f"the process waited {elapsed:.0f}s for a call it had given up on"
