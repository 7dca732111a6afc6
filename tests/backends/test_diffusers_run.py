"""`refineloop run` with a tiny diffusers folder and a fake Ollama: the path users take on a GPU."""

from __future__ import annotations

import json

import pytest

from tests.backends.test_ollama_run import judge_json, role_by_prompt
from tests.conftest import images_in, refineloop, same_image
from tests.fake_ollama import FakeOllama

pytestmark = pytest.mark.slow

COMMON = ("--steps", "2", "--max-iterations", "3", "--seed", "5", "--output-dir", "r")


@pytest.fixture
def fake() -> FakeOllama:
    with FakeOllama(models={"llava:7b": ["completion", "vision"]}, role_of=role_by_prompt) as server:
        yield server


@pytest.mark.parametrize("strategy", ["greedy", "climbing", "annealing", "img2img"])
def test_tiny_sd_folder_runs_every_strategy(tmp_path, tiny_sd_dir, fake, strategy):
    fake.script([judge_json(4), "garbage", "garbage", "garbage", judge_json(6), judge_json(5)], role="judge")
    result = refineloop(
        "run",
        "--strategy",
        strategy,
        "--image-model",
        str(tiny_sd_dir),
        "--eval-model",
        "ollama:llava:7b",
        "--ollama-url",
        fake.url,
        *COMMON,
        # The loop's judge calls only (cold, checked below); the final pick's warm looks: tests/test_final_pick.py.
        "--final-pick",
        "0",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cpu (float32)" in result.stdout, "the placement line says where the model went"
    run = tmp_path / "r"
    assert images_in(run) == ["01.png", "02.png", "03.png"]
    records = [json.loads((run / f"0{i}.json").read_text()) for i in (1, 2, 3)]
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    image_calls = [t for t in trace if t["kind"] == "image"]
    assert [t["seed"] for t in image_calls] == [r["seed"] for r in records], "every image's seed is in the trace"
    if strategy == "img2img":
        assert records[1]["init_image"].endswith("01.png") and records[1]["strength"] == 0.8
        assert records[2]["strength"] == 0.3
    assert all(body["options"]["temperature"] == 0 for body in fake.chat_requests("judge"))


def test_the_same_seed_remakes_the_same_image(tmp_path, tiny_sd_dir, fake):
    for folder in ("a", "b"):
        args = ["run", "--image-model", str(tiny_sd_dir), "--eval-model", "ollama:llava:7b", "--ollama-url", fake.url]
        args += ["--steps", "2", "--max-iterations", "1", "--seed", "9", "--output-dir", folder]
        assert refineloop(*args, cwd=tmp_path).returncode == 0
    assert same_image(tmp_path / "a" / "01.png", tmp_path / "b" / "01.png")


def test_sd3_prompt_budget_reaches_the_summarizer(tmp_path, tiny_sd3_dir, fake):
    long_idea = "a hotdog " + " ".join(f"with blazing detail number {n}" for n in range(60))
    fake.script([judge_json(4) | {"next_idea": long_idea}, judge_json(5)], role="judge")
    result = refineloop(
        "run",
        "--image-model",
        str(tiny_sd3_dir),
        "--eval-model",
        "ollama:llava:7b",
        "--ollama-url",
        fake.url,
        "--steps",
        "2",
        "--max-iterations",
        "2",
        "--output-dir",
        "r",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summarize = [b for b in fake.chat_requests("text")]
    assert summarize, "an idea over the T5 budget is condensed"
    assert "at most 1" in summarize[0]["messages"][0]["content"]  # words sized from the 256-token T5 budget


def test_a_broken_model_folder_is_one_line_and_makes_nothing(tmp_path, fake):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{}")
    result = refineloop("run", "--image-model", str(broken), "--output-dir", "r", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert str(broken) in result.stderr and not (tmp_path / "r").exists()


def test_an_uncached_hub_id_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = refineloop("run", "--image-model", "hf:nobody/no-such-model", "--output-dir", "r", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "nobody/no-such-model" in result.stderr and "Traceback" not in result.stderr


def test_a_draft_is_the_same_pipeline_with_fewer_steps_and_its_winner_the_image_a_plain_run_draws(
    tmp_path, tiny_sd_dir, fake
):
    # Two candidates, so the first round has drafts to choose between: both drafts, then the winner in full.
    fake.script([judge_json(4), judge_json(5), judge_json(5)], role="judge")
    args = ["run", "--image-model", str(tiny_sd_dir), "--eval-model", "ollama:llava:7b", "--ollama-url", fake.url]
    args += ["--steps", "3", "--max-iterations", "1", "--seed", "9", "--final-pick", "0", "--critic-concurrency", "1"]
    drafts = ("--candidates", "2", "--draft-steps", "1", "--draft-size", "32")
    drafted = refineloop(*args, *drafts, "--output-dir", "d", cwd=tmp_path)
    assert drafted.returncode == 0, drafted.stdout + drafted.stderr
    fake.script([judge_json(5)], role="judge")
    plain = [
        "--candidates",
        "1",
        "--max-images",
        "1",
        "--first-seed",
        str(json.loads((tmp_path / "d" / "01.json").read_text())["seed"]),
    ]
    assert refineloop(*args, *plain, "--output-dir", "plain", cwd=tmp_path).returncode == 0
    run = tmp_path / "d"
    assert images_in(run) == ["01.png"]
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    (drafts,) = [t for t in trace if t["kind"] == "drafts"]
    assert (drafts["steps"], drafts["width"], drafts["height"]) == (1, 32, 32)
    assert {p.name for p in (run / "drafts").glob("*.png")} == {"001-1.png", "001-2.png"}
    record = json.loads((run / "01.json").read_text())
    assert record["draft"] == {
        "path": str(run / "drafts" / "001-2.png"),
        "score": 5,
        "round": 1,
        "steps": 1,
        "width": 32,
        "height": 32,
    }
    assert record["seed"] == json.loads((run / "drafts" / "001-2.json").read_text())["seed"]
    assert same_image(run / "01.png", tmp_path / "plain" / "01.png"), "the full image is the draft's seed and prompt"
