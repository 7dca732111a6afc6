"""Critic calls that do not depend on each other run at once, bounded by --critic-concurrency, and the run
decides exactly as it would one call at a time (a fake Ollama whose answers depend only on what it is asked)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from refineloop.apps.reading import read_values
from tests.conftest import refineloop
from tests.fake_ollama import FakeOllama

pytestmark = pytest.mark.slow


class SlowFairCritic:
    """Answers after a short pause, with a score drawn from the image it was sent: the same request always gets
    the same answer, whatever else is in flight. Counts how many requests it serves at once."""

    def __init__(self, pause: float = 0.2) -> None:
        self.pause = pause
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0

    def __call__(self, role: str, body: dict[str, Any], n: int) -> Any:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(self.pause)
            images = [img for m in body.get("messages", []) for img in m.get("images") or []]
            digest = hashlib.sha256("".join(images).encode()).digest()
            if role == "judge":
                score = 2 + digest[0] % 7  # 2..8: never DONE territory
                return {
                    "score": score,
                    "critique": f"looks like a {score}",
                    "verdict": "CONTINUE",
                    "next_idea": "hotter",
                }
            if role == "compare":
                return "WINNER: " + ("A" if digest[1] % 2 else "B")
            return "IDEA: a hotter hotdog" if role == "vision" else "a hotter hotdog"
        finally:
            with self.lock:
                self.in_flight -= 1


def role_of(body: dict[str, Any]) -> str:
    system = next((m.get("content", "") for m in body.get("messages", []) if m.get("role") == "system"), "")
    if "WINNER" in system:
        return "compare"
    if "score" in json.dumps(body.get("format") or {}):
        return "judge"
    return "vision" if "IDEA:" in system else "text"


def run_with(tmp_path: Path, name: str, concurrency: int, *extra: str) -> tuple[Path, SlowFairCritic, FakeOllama]:
    critic = SlowFairCritic()
    server = FakeOllama(models={"llava:7b": ["completion", "vision"]}, default=critic, role_of=role_of)
    with server:
        result = refineloop(
            "run",
            "--eval-model",
            "ollama:llava:7b",
            "--ollama-url",
            server.url,
            "--image-model",
            "sketch:size=64",
            "--seed",
            "5",
            "--critic-concurrency",
            str(concurrency),
            *extra,
            "--output-dir",
            name,
            cwd=tmp_path,
            timeout=300,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp_path / name, critic, server


def decisions(run: Path) -> list[tuple[Any, ...]]:
    meta = json.loads((run / "run.json").read_text())
    history = read_values(str(run), meta["thread_id"])["history"]
    return [(h["iteration"], h["score"], h["decision"], h["best_iteration"]) for h in history]


def test_candidates_and_samples_run_at_once_and_decide_as_one_at_a_time(tmp_path: Path) -> None:
    flags = ["--strategy", "climbing", "--candidates", "3", "--judge-samples", "2", "--max-iterations", "2"]
    flags += ["--final-pick", "0"]
    together, fast, _ = run_with(tmp_path, "together", 4, *flags)
    alone, slow, _ = run_with(tmp_path, "alone", 1, *flags)
    assert slow.most == 1
    assert 2 <= fast.most <= 4, fast.most
    assert decisions(together) == decisions(alone)
    for n in range(1, 7):
        a = json.loads((together / f"{n:02d}.json").read_text())
        b = json.loads((alone / f"{n:02d}.json").read_text())
        assert (a["score"], a.get("samples")) == (b["score"], b.get("samples")), n


def test_both_orders_of_a_duel_run_at_once(tmp_path: Path) -> None:
    flags = ["--strategy", "climbing", "--judge", "pairwise", "--max-iterations", "4", "--final-pick", "0"]
    together, fast, server = run_with(tmp_path, "together", 2, *flags)
    alone, _, _ = run_with(tmp_path, "alone", 1, *flags)
    assert fast.most == 2
    assert decisions(together) == decisions(alone)


def test_the_critic_budget_stays_exact_with_calls_at_once(tmp_path: Path) -> None:
    flags = ["--strategy", "climbing", "--candidates", "4", "--judge-samples", "2", "--max-iterations", "3"]
    flags += ["--max-critic-calls", "11", "--final-pick", "0"]
    run, _, server = run_with(tmp_path, "budget", 4, *flags)
    calls = [b for b in server.chat_requests() if b.get("messages")]
    assert len(calls) <= 11, len(calls)
    assert "critic calls" in (run / "summary.txt").read_text() or "budget" in (run / "summary.txt").read_text()
