"""A misbehaving critic is bounded: per-call timeout, transport retries with backoff, Ctrl-C that does not wait
out a hung call, and no control character from a reply anywhere. Real ChatOllama client, fake server, real CLI."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from refineloop.backends.chat.invoke import clean_reply, is_transport_error
from refineloop.backends.chat.text_safety import clean_model_text
from refineloop.errors import SettingsError
from refineloop.settings import RunSettings
from tests.conftest import images_in, refineloop, same_image, wait_for
from tests.fake_ollama import FakeOllama

#: Control characters that must never be written or printed (tab and newline are fine).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def role_by_prompt(body: Mapping[str, Any]) -> str:
    """judge, vision (the proposer, which sees the image) or text (the summarizer), by the format asked for."""
    system = next((m.get("content", "") for m in body.get("messages", []) if m.get("role") == "system"), "")
    return "judge" if "SCORE:" in system else "vision" if "IDEA:" in system else "text"


def judge_json(score: int, **fields: str) -> dict[str, Any]:
    reply = {"score": score, "critique": f"critique {score}", "verdict": "CONTINUE", "next_idea": f"hotter {score}"}
    return {**reply, **fields}


def strings_in(value: Any) -> list[str]:
    """Every string inside a decoded JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return []


@pytest.fixture
def fake() -> FakeOllama:
    with FakeOllama(role_of=role_by_prompt) as server:
        yield server


def run_flags(fake: FakeOllama, strategy: str = "greedy", iterations: int = 2, output: str = "r") -> list[str]:
    return [
        "--strategy",
        strategy,
        "--eval-model",
        "ollama:llava:7b",
        "--ollama-url",
        fake.url,
        "--image-model",
        "sketch:size=64",
        "--max-iterations",
        str(iterations),
        "--seed",
        "5",
        "--output-dir",
        output,
    ]


def trace_of(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]


# --- settings and the pieces, without a server ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"), [("critic_timeout", 0), ("critic_timeout", -1), ("critic_timeout", float("inf"))]
)
def test_bad_critic_limits_are_refused(field, value):
    with pytest.raises(SettingsError, match=field.replace("_", "-")):
        RunSettings(**{field: value}).validate()


def test_critic_limits_have_sane_defaults_and_bounds():
    settings = RunSettings().validate()
    assert 0 < settings.critic_timeout < 300 and settings.critic_retries == 2
    RunSettings(critic_retries=0).validate()
    RunSettings(critic_retries=10).validate()
    for bad in (-1, 11):
        with pytest.raises(SettingsError, match="critic-retries"):
            RunSettings(critic_retries=bad).validate()
    with pytest.raises(SettingsError, match="critic-timeout"):
        RunSettings(critic_timeout=float("nan")).validate()


def test_bad_critic_flags_answer_in_one_line(tmp_path):
    for flags in (["--critic-timeout", "0"], ["--critic-timeout", "nan"], ["--critic-retries", "11"]):
        result = refineloop("demo", *flags, "--output-dir", "r", cwd=tmp_path)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()


def test_only_transport_failures_count_as_transport_errors():
    import httpx
    import ollama

    assert is_transport_error(httpx.ReadTimeout("timed out"))
    assert is_transport_error(httpx.RemoteProtocolError("peer closed connection"))
    assert is_transport_error(ConnectionRefusedError())
    assert is_transport_error(ollama.ResponseError("overloaded", 503))
    assert is_transport_error(RuntimeError("wrapped")) is False
    wrapped = RuntimeError("a wrapper")
    wrapped.__cause__ = ollama.ResponseError("boom", 500)
    assert is_transport_error(wrapped)
    assert not is_transport_error(ollama.ResponseError("model not found", 404))
    assert not is_transport_error(ollama.ResponseError("does not support thinking", 400))
    assert not is_transport_error(ollama.ResponseError("an error line mid-stream"))  # no HTTP status
    assert not is_transport_error(ValueError("bad score"))


@pytest.mark.parametrize(
    "text",
    [
        "a \x1b[31mred\x1b[0m hotdog",
        "\x1b]0;owned\x07a hotdog",
        "a\x00 hot\x7fdog\x85\x9b2J",
        "\x1b]8;;http://x\x1b\\a hotdog\x1b]8;;\x1b\\",
        "\x1b[?1049h\x1b[2J\x1b[Ha hotdog\x1bc",
    ],
)
def test_clean_model_text_strips_controls_and_whole_escape_sequences(text):
    cleaned = clean_model_text(text)
    assert not CONTROL.search(cleaned)
    assert "hot" in cleaned and "[31m" not in cleaned and "owned" not in cleaned and "http" not in cleaned
    assert clean_model_text("tabs\tand\nnewlines stay, é and 🌶 too") == "tabs\tand\nnewlines stay, é and 🌶 too"


def test_clean_reply_cleans_messages_and_structured_results():
    from refineloop.backends.chat.replies import JudgeReply

    parsed = JudgeReply(score=7, critique="\x1b[1mbold\x1b[0m", verdict="CONTINUE", next_idea="x\x00y")
    raw = AIMessage(content=json.dumps({"critique": "\x1b[1mbold"}))
    cleaned = clean_reply({"raw": raw, "parsed": parsed, "parsing_error": None})
    assert cleaned["parsed"].critique == "bold" and cleaned["parsed"].next_idea == "xy"
    assert "u001b" not in cleaned["raw"].content and json.loads(cleaned["raw"].content) == {"critique": "bold"}
    blocks = clean_reply(AIMessage(content=[{"type": "text", "text": "\x1b[31mred"}]))
    assert blocks.content == [{"type": "text", "text": "red"}]


# --- whole runs ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_hung_critic_is_given_up_on_within_the_timeout_and_the_run_resumes(tmp_path, fake):
    fake.hang(60, role="judge", times=3)
    started = time.monotonic()
    result = refineloop(
        "run", *run_flags(fake), "--critic-timeout", "1", "--critic-retries", "2", cwd=tmp_path, timeout=60
    )
    elapsed = time.monotonic() - started
    out = result.stdout + result.stderr
    assert elapsed < 30, f"took {elapsed:.0f} s: the critic timeout did not hold"
    assert result.returncode == 1, out
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "within 1 s" in errors[0] and "--critic-timeout" in errors[0], out
    assert "Traceback" not in out and "resume with: refineloop resume" in out
    run = tmp_path / "r"
    retries = [r for r in trace_of(run) if r["kind"] == "retry"]
    assert [(r["role"], r["attempt"], r["wait"]) for r in retries] == [("judge#1", 1, 0.5), ("judge#1", 2, 1.0)]
    assert all("Timeout" in r["error"] for r in retries)
    assert len(fake.chat_requests("judge")) == 3
    # The server is answering again: the kept run goes on from where it stopped.
    fake.script([judge_json(4), judge_json(5)], role="judge")
    again = refineloop("resume", str(run), cwd=tmp_path, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert images_in(run) == ["01.png", "02.png"]


@pytest.mark.slow
def test_transport_failures_of_every_role_are_retried_with_backoff_and_traced(tmp_path, fake):
    fake.fail_first = 2  # the first judge call meets two HTTP 500s
    fake.script([judge_json(5), {"drop": True}, judge_json(3), judge_json(6)], role="judge")
    # The proposer (after image 2 is rejected) meets a 503, then a reply cut off mid-stream.
    fake.fail(1, status=503, role="vision")
    fake.script([{"reply": {"content": "IDEA: a hotdog in roaring flames", "drop_after": 1}}], role="vision")
    fake.script(["IDEA: a hotdog in roaring flames"], role="vision")
    result = refineloop("run", *run_flags(fake, "climbing", 3), cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "r"
    assert images_in(run) == ["01.png", "02.png", "03.png"]
    retries = [r for r in trace_of(run) if r["kind"] == "retry"]
    roles = [(r["role"], r["attempt"]) for r in retries]
    assert roles == [("judge#1", 1), ("judge#1", 2), ("judge#1", 1), ("propose", 1), ("propose", 2)]
    assert [r["wait"] for r in retries] == [0.5, 1.0, 0.5, 0.5, 1.0]
    errors = " | ".join(r["error"] for r in retries)
    assert "500" in errors and "503" in errors and "RemoteProtocolError" in errors
    scores = [json.loads((run / f"0{i}.json").read_text())["score"] for i in (1, 2, 3)]
    assert scores == [5, 3, 6]


@pytest.mark.slow
def test_a_client_error_is_not_retried(tmp_path, fake):
    fake.fail(1, status=400, role="judge", message="invalid format schema")
    result = refineloop("run", *run_flags(fake), cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert "HTTP 400: invalid format schema" in result.stdout and "Traceback" not in result.stdout
    run = tmp_path / "r"
    assert not [r for r in trace_of(run) if r["kind"] == "retry"]
    assert len(fake.chat_requests("judge")) == 1


@pytest.mark.slow
def test_retries_zero_fails_on_the_first_transport_error(tmp_path, fake):
    fake.fail_first = 1
    result = refineloop("run", *run_flags(fake), "--critic-retries", "0", cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and "HTTP 500" in result.stdout
    assert len(fake.chat_requests("judge")) == 1


@pytest.mark.slow
def test_ctrl_c_during_a_hung_critic_call_stops_at_once_and_resumes_exactly(tmp_path, start_cli):
    judged = [judge_json(4), judge_json(6), judge_json(5)]
    with FakeOllama(role_of=role_by_prompt, replies={"judge": judged}) as steady:
        whole = refineloop("run", *run_flags(steady, iterations=3, output="whole"), cwd=tmp_path, timeout=90)
    assert whole.returncode == 0, whole.stdout + whole.stderr

    with FakeOllama(role_of=role_by_prompt) as stuck:
        stuck.script([judged[0], {"hang": 120}, *judged[1:]], role="judge")
        proc = start_cli("run", *run_flags(stuck, iterations=3, output="cut"))
        wait_for(lambda: len(stuck.chat_requests("judge")) >= 2, timeout=60)
        time.sleep(0.5)  # well inside the hung call (the timeout is the default 120 s)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
        assert time.monotonic() - sent < 15
        assert proc.returncode == 130, out
        assert "resume with: refineloop resume" in out and "Traceback" not in out
        cut = tmp_path / "cut"
        assert images_in(cut) == ["01.png", "02.png"], "image 2 was drawn; its judging was cut short"
        assert any(r["kind"] == "aborted" and r["role"] == "judge#1" for r in trace_of(cut))
        again = refineloop("resume", str(cut), cwd=tmp_path, timeout=90)
        assert again.returncode == 0, again.stdout + again.stderr

    whole_dir = tmp_path / "whole"
    assert images_in(cut) == images_in(whole_dir) == ["01.png", "02.png", "03.png"]
    for name in ("01.png", "02.png", "03.png", "best.png"):
        assert same_image(cut / name, whole_dir / name), name
    for i in (1, 2, 3):
        a, b = (json.loads((d / f"0{i}.json").read_text()) for d in (cut, whole_dir))
        folder_free = ("path", "init_image")
        assert {k: v for k, v in a.items() if k not in folder_free} == {
            k: v for k, v in b.items() if k not in folder_free
        }


@pytest.mark.slow
def test_control_characters_in_replies_reach_no_file_and_no_terminal(tmp_path, fake):
    nasty = "\x1b[31mred\x1b[0m \x1b]0;owned\x07glow\x00 \x9b2J\x7f"
    fake.script(
        [
            f"SCORE: 5\nCRITIQUE: {nasty} smoke\nCONTINUE: a hotdog with {nasty} flames",
            judge_json(3, critique=f"dull {nasty}", next_idea=f"embers {nasty}"),
            judge_json(7, critique=nasty),
        ],
        role="judge",
    )
    fake.script([f"IDEA: a hotdog in {nasty} smoke"], role="vision")
    fake.script([f"{nasty} flaming hotdog"] * 5, role="text")
    result = refineloop("run", *run_flags(fake, "climbing", 3), cwd=tmp_path, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "r"
    assert not CONTROL.search(result.stdout + result.stderr)
    for name in ("summary.txt", "report.html", "trace.jsonl", "01.json", "02.json", "03.json"):
        text = (run / name).read_text()
        assert not CONTROL.search(text), name
        for spelled in ("\\u001b", "\\u0000", "\\u0007", "\\u009b", "\\u007f", "[31m", "owned"):
            assert spelled not in text, (name, spelled)
    for record in trace_of(run):
        assert not any(CONTROL.search(text) for text in strings_in(record)), record
    first = json.loads((run / "01.json").read_text())
    assert first["score"] == 5 and "red glow" in first["critique"] and "flames" in first["next_idea"]
