"""Whole runs against a fake Ollama server through the real ChatOllama client and the CLI."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from refineloop.backends.chat.ollama import shared_tls
from refineloop.cli.main import main
from tests.conftest import images_in, refineloop
from tests.fake_ollama import GARBAGE_REPLIES, FakeOllama

pytestmark = pytest.mark.slow


def role_by_prompt(body: Mapping[str, Any]) -> str:
    """Tell refineloop's three roles apart by the reply format each system prompt asks for."""
    system = next((m.get("content", "") for m in body.get("messages", []) if m.get("role") == "system"), "")
    return "judge" if "SCORE:" in system else "vision" if "IDEA:" in system else "text"


def judge_json(score: int, verdict: str = "CONTINUE") -> dict[str, Any]:
    return {"score": score, "critique": f"critique {score}", "verdict": verdict, "next_idea": f"hotter {score}"}


@pytest.fixture
def fake() -> FakeOllama:
    server = FakeOllama(
        models={"llava:7b": ["completion", "vision"], "llama3:8b": ["completion", "tools"], "old:1b": None},
        role_of=role_by_prompt,
    )
    with server:
        yield server


@pytest.mark.parametrize("strategy", ["greedy", "climbing", "annealing", "img2img"])
def test_every_strategy_completes_against_ollama_with_garbage_in_the_mix(tmp_path, fake, strategy):
    fake.script(
        [*GARBAGE_REPLIES[:3], judge_json(4), judge_json(6), "SCORE: 5\nCONTINUE: more", judge_json(8)], role="judge"
    )
    fake.script(["IDEA: a hotdog in roaring flames", "Sorry, I cannot help with that."], role="vision")
    fake.script(["flaming hotdog, embers, glow"], role="text")
    result = refineloop(
        "run",
        "--strategy",
        strategy,
        "--eval-model",
        "ollama:llava:7b",
        "--ollama-url",
        fake.url,
        "--image-model",
        "sketch:size=64",
        "--max-iterations",
        "4",
        "--seed",
        "1",
        # The loop's own judge calls only: the final pick's warm looks and duels are tested in test_final_pick.py.
        "--final-pick",
        "0",
        "--no-confirm-done",
        "--output-dir",
        "r",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "r"
    assert images_in(run) == ["01.png", "02.png", "03.png", "04.png"]
    first = json.loads((run / "01.json").read_text())
    assert first["score"] is None and first["verdict"] == "unknown", "three garbage replies: unknown, no crash"
    judges = fake.chat_requests("judge")
    assert all(body["options"]["temperature"] == 0 for body in judges)
    assert all(body.get("think") is False for body in judges)
    assert all(isinstance(body.get("format"), dict) and "score" in body["format"]["properties"] for body in judges)
    assert all(body["messages"][1]["images"] for body in judges), "the image travels with every judge call"
    proposals = fake.chat_requests("vision")
    if strategy == "annealing":
        temps = [body["options"]["temperature"] for body in proposals]
        assert temps == sorted(temps, reverse=True) and temps[0] > temps[-1]
    assert "Traceback" not in result.stdout + result.stderr


def test_a_model_without_vision_is_refused_before_any_image(tmp_path, fake):
    result = refineloop(
        "run", "--eval-model", "ollama:llama3:8b", "--ollama-url", fake.url, "--output-dir", "r", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "'llama3:8b' cannot see images" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_a_model_with_unknown_capabilities_warns_and_runs(tmp_path, fake):
    result = refineloop(
        "run",
        "--eval-model",
        "ollama:old:1b",
        "--ollama-url",
        fake.url,
        "--max-iterations",
        "1",
        "--output-dir",
        "r",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "could not confirm" in result.stderr


def test_unreachable_ollama_names_the_url_and_makes_nothing(tmp_path, fake):
    url = fake.url
    fake.stop()
    result = refineloop(
        "run", "--eval-model", "ollama:llava:7b", "--ollama-url", url, "--output-dir", "r", cwd=tmp_path
    )
    assert result.returncode == 2
    assert f"cannot reach Ollama at {url}" in result.stderr and "ollama serve" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_ollama_dying_mid_run_keeps_the_run_for_resume(tmp_path, fake):
    fake.script(
        [
            judge_json(4),
            {"error": "model runner has unexpectedly stopped", "status": 500},
            judge_json(5),
            judge_json(6),
        ],
        role="judge",
    )
    result = refineloop(
        "run",
        "--eval-model",
        "ollama:llava:7b",
        "--ollama-url",
        fake.url,
        "--image-model",
        "sketch:size=64",
        "--max-iterations",
        "3",
        "--critic-retries",
        "0",  # a 500 is retried by default; with no retries it ends the run, which is what this test is about
        "--output-dir",
        "r",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "HTTP 500: model runner has unexpectedly stopped" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "resume with: refineloop resume" in result.stdout
    run = tmp_path / "r"
    assert (run / "01.png").exists() and (run / "summary.txt").exists()
    again = refineloop("resume", str(run), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert images_in(run) == ["01.png", "02.png", "03.png"]
    assert Path(run / "best.png").exists()


def test_a_run_builds_one_tls_context_for_all_its_ollama_clients(tmp_path, fake, monkeypatch):
    # Each httpx client builds its own TLS context unless handed one, reading the certificate bundle each time;
    # the probe, the warm-up and ChatOllama's two clients share the process's one.
    built = []
    real = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(kwargs.get("cafile") or kwargs.get("capath"))
        return real(*args, **kwargs)

    import ollama  # noqa: F401  (its import makes a default client of its own, before the count begins)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    shared_tls.cache_clear()
    monkeypatch.chdir(tmp_path)
    fake.script([judge_json(5), judge_json(6)], role="judge")
    argv = ["run", "--eval-model", "ollama:llava:7b", "--ollama-url", fake.url, "--image-model", "sketch:size=64"]
    assert main([*argv, "--max-iterations", "2", "--final-pick", "0", "--output-dir", "out"]) == 0
    assert images_in(tmp_path / "out") == ["01.png", "02.png"]
    assert len(built) == 1, built
    assert shared_tls().verify_mode == ssl.CERT_REQUIRED, "the shared context still verifies an https server"
