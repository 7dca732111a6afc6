"""Secrets never persist and untrusted text never reaches a terminal raw: a real server that echoes the key, the
password and the URL's credentials mid-run; goals, PNGs, run.json and batch goals with escapes, bidirectional
characters, newlines and huge values, through the CLI."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from refineloop.cli.main import main
from refineloop.redaction import redact, register_secret
from refineloop.visible_text import visible
from tests.conftest import cli_env, images_in
from tests.fake_openai import VISION, FakeOpenAI

KEY = "sk-test-0123456789abcdef"
PASSWORD = "s3cret-passw0rd"
ECHOED = "hunter2-echoed-by-server"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\u2066")


def every_file_text(folder: Path) -> str:
    """Every byte of every file under `folder` (images and SQLite included), as text."""
    return "".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


def judge(score: int) -> str:
    return json.dumps({"score": score, "critique": "warm", "verdict": "CONTINUE", "next_idea": "a hotdog"})


# --------------------------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "text",
    [
        f"postgres://bob:{PASSWORD}@db/x",
        f"https://{PASSWORD}@example.org/v1",
        f"GET /v1?api_key={PASSWORD}&x=1",
        f"Authorization: Bearer {PASSWORD}",
        f'{{"password": "{PASSWORD}"}}',
        "sk-proj-abcdefghijklmnopqrstuvwx",
    ],
)
def test_secrets_of_every_shape_are_masked(text: str) -> None:
    assert PASSWORD not in redact(text) and "abcdefghijklmnop" not in redact(text)
    assert "***" in redact(text)


def test_a_registered_secret_is_masked_and_ordinary_text_is_left_alone() -> None:
    register_secret("registered-value-42")
    assert redact("the server said registered-value-42 is wrong") == "the server said *** is wrong"
    for plain in ("a teapot with 77 tokens: fine", "postgres://bob@db/x", "the author: Jane"):
        assert redact(plain) == plain


@pytest.mark.parametrize(
    "text",
    [
        f"pa\u017f\u017fword={PASSWORD}",  # a long s, which a case-insensitive pattern reads as s
        f"TO\u212aEN: {PASSWORD}",  # the Kelvin sign, read as k
        f"author\u0131zation = {PASSWORD}",  # a dotless i
        f"x.API-Key='{PASSWORD}'",
        f"Basic  {PASSWORD}",
    ],
)
def test_secrets_spelled_with_letters_a_pattern_folds_are_masked(text: str) -> None:
    assert PASSWORD not in redact(text), redact(text)


#: The shape patterns as plainly written, run on every text: `redact` must mask exactly what they mask.
PLAIN_PAIR = re.compile(
    r"(?P<key>\b[\w.-]*(?:api[_-]?key|apikey|password|passwd|pwd|secret|token|authorization|credentials?)(?![\w]))"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"'&,;}]+)",
    re.IGNORECASE,
)
PLAIN_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)
PLAIN_KEYS = re.compile(r"\b(?:sk|pk|rk|ghp|gho|ghs|hf|xox[abp])[-_][A-Za-z0-9_-]{12,}")
PIECES = (
    "api_key", "API-KEY", "apikey", "password", "PASSWD", "pwd", "secret", "Token", "authorization", "Credentials",
    "Bearer ", "basic ", "sk-", "ghp_", "xoxb-", "abcdefghijkl", "0123456789AB", "a", "_", "-", ".", " ", "\n", "=",
    ":", '"', "'", "&", ",", ";", "}", "\u00e9", "\u0130", "\u0131", "\u017f", "\u212a", "pa\u017f\u017fword", "***",
)  # fmt: skip


def plainly_redacted(text: str) -> str:
    text = PLAIN_BEARER.sub(lambda m: f"{m.group(1)} ***", text)
    text = PLAIN_PAIR.sub(lambda m: m[0] if m["value"] == "***" else f"{m['key']}{m['sep']}***", text)
    return PLAIN_KEYS.sub("***", text)


def test_redaction_masks_what_the_plain_patterns_mask() -> None:
    # redact skips a pattern where its words are absent and takes a key's run whole: neither may change a result.
    rng = random.Random(5)
    for _ in range(20000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 14)))
        assert redact(text) == plainly_redacted(text), repr(text)


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_server_that_echoes_secrets_mid_run_leaves_none_anywhere(tmp_path: Path, stream: bool) -> None:
    """The server fails image 2 with a message quoting the key, the URL's password and another secret: the run
    stops in one line and keeps its images, and no secret is in any file (checkpoints and their pending
    writes, trace, sidecars, PNGs, report, summary, run.json, error.log) or line printed."""
    echo = f"bad key {KEY} for bob:{PASSWORD} password={ECHOED}"
    replies = {"judge": [judge(3), {"status": 400, "message": echo}]}
    with FakeOpenAI({"vis": VISION}, replies) as fake:
        url = fake.url.replace("http://", f"http://bob:{PASSWORD}@")
        env = {**cli_env(), "OPENAI_API_KEY": KEY}
        args = ["run", "--eval-model", "openai:vis", "--openai-url", url, "--image-model", "sketch:size=64"]
        args += ["--max-iterations", "3", "--output-dir", "r", "--goal", f"a teapot token={ECHOED}"]
        args += ["--openai-stream"] if stream else []
        done = subprocess.run(
            [sys.executable, "-m", "refineloop", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
    shown = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in shown, shown
    assert "refused" in shown and "resume with: refineloop resume" in shown
    assert images_in(tmp_path / "r") == ["01.png", "02.png"]
    assert (tmp_path / "r" / "error.log").is_file()
    stored = every_file_text(tmp_path / "r")
    for secret in (KEY, PASSWORD, ECHOED):
        assert secret not in shown, secret
        assert secret not in stored, secret


def test_a_url_password_is_masked_in_what_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["resume", str(tmp_path / "nowhere"), "--ollama-url", f"http://bob:{PASSWORD}@127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 2 and PASSWORD not in err


# --------------------------------------------------------------------------------------------- untrusted text


@pytest.mark.parametrize(
    "text",
    ["red\x1b[31m alert", "title\x1b]0;pwned\x07 set", "csi\x9b2J", "rtl \u202eevil\u202c text", "iso\u2066x\u2069"],
)
def test_control_escape_and_bidirectional_characters_never_pass(text: str) -> None:
    for one_line in (False, True):
        shown = visible(text, one_line=one_line)
        assert not any(ch in shown for ch in RAW), repr(shown)
    assert visible("a\nb", one_line=True) == "a\\nb"
    cut = visible("x" * 5000, limit=100)
    assert cut.startswith("x" * 100) and "4900 more characters" in cut


def test_a_hostile_png_is_shown_safely_as_text_and_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evil = tmp_path / "evil.png"
    info = PngInfo()
    record = {"prompt": "a \u202eevil\u202c cat\x9b2J\nsecond line " + "y" * 5000, "seed": 3, "model": "m\x1b[2J"}
    info.add_itxt("refineloop", json.dumps(record))
    Image.new("RGB", (8, 8)).save(evil, pnginfo=info)
    assert main(["show", str(evil)]) == 0
    out = capsys.readouterr().out
    assert not any(ch in out for ch in RAW) and "more characters not shown" in out
    prompt_lines = [line for line in out.splitlines() if line.startswith("prompt")]
    assert len(prompt_lines) == 1 and "second line" in prompt_lines[0]
    assert main(["show", str(evil), "--json"]) == 0
    printed = capsys.readouterr().out
    assert not any(ch in printed for ch in RAW)
    assert json.loads(printed)["prompt"].startswith("a \u202eevil"), "the JSON still reads back as the text"


@pytest.mark.slow
def test_goals_with_newlines_and_bidi_keep_the_batch_table_intact(tmp_path: Path) -> None:
    goals = tmp_path / "goals.jsonl"
    hostile = ["a teapot\nwith\ta second line", "a \u202eracecar\u202c lamp", "a \x1b[2Jblue cup"]
    goals.write_text("".join(json.dumps({"goal": g}) + "\n" for g in hostile))
    done = subprocess.run(
        [sys.executable, "-m", "refineloop", "batch", str(goals), "--max-iterations", "1", "--image-model", "sketch"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # the goal with an escape is refused, in its row
    summary = (tmp_path / "runs" / "goals-batch" / "summary.txt").read_text()
    for text in (done.stdout, summary):
        assert not any(ch in text for ch in RAW), repr(text)
        rows = [line for line in text.splitlines() if line[:3].strip().isdigit()]
        assert [" done " in row for row in rows] == [True, True, False], text
    assert all(
        line.startswith(("[", " ", "stopped", "batch", "summary", "to resume", "3 items")) or not line
        for line in done.stdout.splitlines()
    ), done.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "refineloop", "runs", "runs/goals-batch"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not any(ch in listing.stdout for ch in RAW)


def test_runs_shows_a_hostile_run_json_as_one_visible_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "runs" / "bad\x1b[31mname"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"thread_id": "t", "strategy": "zig\u202ezag\nnext" + "z" * 4000}))
    (run / "checkpoints.sqlite").write_bytes(b"")
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert not any(ch in out for ch in RAW), repr(out)
    rows = out.splitlines()[1:]
    assert len(rows) == 1 and "damaged" in rows[0] and len(rows[0]) < 600


@pytest.mark.slow
def test_the_environment_secret_never_reaches_a_run_folder(tmp_path: Path) -> None:
    env = {**cli_env(), "MY_SERVICE_TOKEN": "tok-abcdef-123456-secret"}
    done = subprocess.run(
        [sys.executable, "-m", "refineloop", "demo", "--max-iterations", "1", "--output-dir", "r"]
        + ["--goal", "a lamp named tok-abcdef-123456-secret"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "tok-abcdef-123456-secret" not in every_file_text(tmp_path / "r") + done.stdout + done.stderr
    assert os.environ.get("MY_SERVICE_TOKEN") is None
