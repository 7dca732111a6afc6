"""One GPU for both models: an Ollama critic is loaded (with --critic-keep-alive) before the image model is
placed, and the placement line says what it holds. Real ChatOllama and ollama clients, fake server, the CLI."""

from __future__ import annotations

import json

import pytest

from refineloop.cli.main import main
from tests.conftest import images_in
from tests.fake_ollama import FakeOllama

pytestmark = pytest.mark.slow

MODEL = "llava:7b"


def args(url: str, *extra: str) -> list[str]:
    return ["run", "--eval-model", f"ollama:{MODEL}", "--ollama-url", url, "--image-model", "sketch:size=64", *extra]


def test_the_critic_is_loaded_first_and_the_placement_line_says_what_it_holds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with FakeOllama(models={MODEL: ["completion", "vision"]}, resident_bytes=(6_400_000_000, 6_400_000_000)) as fake:
        code = main(args(fake.url, "--critic-keep-alive", "1h", "--max-iterations", "2", "--output-dir", "r"))
        out = capsys.readouterr().out
        assert code == 0, out
        placement = out.splitlines()[0]
        assert placement.startswith("image model: sketch") and "holds 6.4 GB on the GPU, kept loaded 1h" in placement
        posts = [r for r in fake.requests if r["method"] == "POST" and r["path"] == "/api/chat"]
        # The first chat is the empty one that loads the critic, before any image was judged.
        assert posts[0]["body"]["messages"] == [] and posts[0]["body"]["keep_alive"] == "1h"
        assert any(r["path"] == "/api/ps" for r in fake.requests)
        judged = fake.chat_requests()
        assert judged and all(body["keep_alive"] == "1h" for body in judged), "every call keeps it loaded"
    assert images_in(tmp_path / "r")[0] == "01.png"


def test_a_critic_split_with_the_cpu_and_one_unloaded_after_each_call(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with FakeOllama(models={MODEL: ["completion", "vision"]}, resident_bytes=(9_000_000_000, 4_500_000_000)) as fake:
        assert main(args(fake.url, "--max-iterations", "1", "--output-dir", "a")) == 0
        line = capsys.readouterr().out.splitlines()[0]
        assert f"critic: ollama:{MODEL} (holds 9.0 GB, 4.5 GB of it on the GPU)" in line
        # Swap set-up: keep_alive 0 (seconds, as Ollama reads a number) unloads it after every answer.
        assert main(args(fake.url, "--critic-keep-alive", "0", "--max-iterations", "1", "--output-dir", "b")) == 0
        line = capsys.readouterr().out.splitlines()[0]
        assert "(not resident: unloaded after each call)" in line
        assert all(body["keep_alive"] == 0 for body in fake.chat_requests()[-2:])


def test_the_critic_loads_before_the_image_model_is_placed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{}")
    with FakeOllama(models={MODEL: ["completion", "vision"]}) as fake:
        # Without a GPU the head start opens the image model before the critic loads: nothing to place there.
        flags = ["--eval-model", f"ollama:{MODEL}", "--ollama-url", fake.url, "--no-head-start"]
        code = main(["run", *flags, "--image-model", str(broken)])
        loads = fake.chat_requests("load")
    assert code == 2 and str(broken) in capsys.readouterr().err
    assert len(loads) == 1, "the critic was in memory before the image model was even opened"


def test_a_bad_keep_alive_is_refused_and_resume_may_change_it(tmp_path, capsys):
    assert main(["demo", "--critic-keep-alive", "forever", "--output-dir", str(tmp_path / "x")]) == 2
    assert "--critic-keep-alive 'forever' is not a duration" in capsys.readouterr().err
    assert (
        main(["demo", "--critic-keep-alive", "10m", "--max-iterations", "1", "--output-dir", str(tmp_path / "d")]) == 0
    )
    assert "--critic-keep-alive only serves ollama:<model> models" in capsys.readouterr().out
    # Resume takes it (how the critic is reached, never what it makes); a finished run just says so.
    assert main(["resume", str(tmp_path / "d"), "--critic-keep-alive", "-1"]) == 0
    assert "already finished" in capsys.readouterr().out
    meta = json.loads((tmp_path / "d" / "run.json").read_text())
    assert meta["strategy"] == "climbing"
