"""Progress inside long steps, as a user sees it: the CLI in a real pseudo-terminal (one line updating in place
with carriage returns) and into a pipe (plain lines only), with a slow demo critic and the tiny SD pipeline."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env, refineloop

pytestmark = pytest.mark.slow

SLOW = ["--eval-model", "demo:delay=0.3", "--max-iterations", "2", "--seed", "3"]


def on_terminal(*args: str, cwd: Path, timeout: float = 120) -> str:
    """The CLI's output as a terminal receives it (stdout and stderr on one pseudo-terminal)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "refineloop", *args], cwd=cwd, env=cli_env(), stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the other end closed: the process is done
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=timeout) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode()


def test_a_slow_critics_phases_update_one_line_on_a_terminal(tmp_path: Path) -> None:
    args = ["demo", *SLOW, "--judge", "checklist", "--audit-model", "demo:delay=0.3", "--output-dir", "r"]
    shown = on_terminal(*args, cwd=tmp_path)
    # Each call of the final pick redraws the same line: wipe, then the count, pace and time left.
    calls = re.findall(r"\r\x1b\[K  final pick among 2 images: critic call (\d) of 6", shown)
    assert calls == ["0", "1", "2", "3", "4", "5", "6"], shown
    assert re.search(r"critic call 2 of 6, \d+\.\d\d s/call, \d+\.\d s left", shown)
    assert "\r\x1b[K  writing the checklist: critic call 1 of 1" in shown
    assert "\r\x1b[K  audit: critic call 2 of 2" in shown
    # The line is wiped before the next plain line, so `stopped:` starts clean, on a line of its own.
    assert re.search(r"audit: critic call 2 of 2, \d+\.\d\d s/call\r\x1b\[Kstopped: ", shown)


def test_into_a_pipe_the_same_run_writes_plain_lines(tmp_path: Path) -> None:
    done = refineloop("demo", *SLOW, "--output-dir", "r", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout and "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    # A phase says nothing for its first second, then how far it got, then how long it took.
    assert any(re.fullmatch(r"  final pick among 2 images: [1-6] of 6 critic calls, \d+\.\d s", line) for line in lines)
    end = next(
        i
        for i, line in enumerate(lines)
        if re.fullmatch(r"  final pick among 2 images: 6 critic calls in \d+\.\d s", line)
    )
    assert lines[end + 1].startswith("stopped: ")


def test_denoising_steps_are_counted_for_each_image_drawn(tiny_sd_dir: Path, tiny_lora: Path, tmp_path: Path) -> None:
    args = ["run", "--image-model", str(tiny_sd_dir), "--steps", "4", "--candidates", "2", "--max-iterations", "1"]
    # The tiny LoRA has no text-encoder keys, which diffusers warns about (with an issues link) on every load.
    args += ["--lora", str(tiny_lora), "--head-start"]  # asked for: unasked, a draw on every CPU core has none
    shown = on_terminal(*args, "--output-dir", "r", cwd=tmp_path)
    steps = re.findall(r"\r\x1b\[K  drawing images 1-2: step (\d) of 4", shown)
    assert steps == ["1", "2", "3", "4"], shown
    assert re.search(r"step 2 of 4, \d+\.\d\d s/step, \d+\.\d s left", shown)
    assert "Loading pipeline components" not in shown and "%|" not in shown, "no library progress bars"
    assert "No LoRA keys" not in shown and "github.com" not in shown, "library warnings go to the trace"
    records = [json.loads(line) for line in (tmp_path / "r" / "trace.jsonl").read_text().splitlines()]
    # Those steps were the head start's, kept until the generate node took the images over.
    assert [r.get("head_start") for r in records if r.get("kind") == "image"] == ["used"]


def test_judge_check_counts_its_calls_against_the_total_it_will_make(tmp_path: Path) -> None:
    args = ["judge-check", "--eval-model", "demo:delay=0.05", "--images", "3", "--samples", "2", "--pairs", "2"]
    shown = on_terminal(*args, "--output-dir", "chk", cwd=tmp_path)
    # 3 images x (2 cold + 2 warm), 2 duels x 2 orders, 1 checklist probe: 17, known before the first call.
    counts = re.findall(r"\r\x1b\[K  judge check: critic call (\d+) of (\d+)", shown)
    assert counts and {total for _, total in counts} == {"17"}, shown
    assert counts[-1][0] == "17"
    report = json.loads(next((tmp_path / "chk").rglob("judge-check.json")).read_text())
    assert report["critic_calls"] == 17
