"""The condense step per model and task: tags for CLIP-only pipelines, sentences for T5-encoded ones (a task may
override), and a task's `keep` words carried verbatim by the condense step and the proposer, within the budget.
Tiny diffusers pipelines and the real ChatOllama client against the fake server, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refineloop.backends.model_cache import MODELS
from refineloop.cli.main import main
from refineloop.settings import RunSettings
from tests.backends.test_ollama_run import judge_json, role_by_prompt
from tests.fake_ollama import FakeOllama

pytestmark = pytest.mark.slow

LONG_IDEA = "a hotdog " + " ".join(f"with blazing detail number {n}" for n in range(40))
TASK = """name = "styled"
goal = "make a single hotdog look as visually hot as possible"
subject = "a single hotdog"
start_prompt = "a hot hotdog"
negative_prompt = "blurry"
"""


def condense_run(tmp_path: Path, model_dir: Path, *extra: str, summaries: list[str] | None = None) -> FakeOllama:
    """Two images; the critic asks for a long next image, so the condense step runs before image 2."""
    fake = FakeOllama(models={"llava:7b": ["completion", "vision"]}, role_of=role_by_prompt).start()
    fake.script([judge_json(4) | {"next_idea": LONG_IDEA}, judge_json(5)], role="judge")
    fake.script(summaries or ["hotdog in roaring flames, glowing embers, heat haze"], role="text")
    args = ["run", "--image-model", str(model_dir), "--eval-model", "ollama:llava:7b", "--ollama-url", fake.url]
    args += ["--steps", "2", "--max-iterations", "2", "--seed", "6", "--strategy", "greedy", *extra]
    try:
        assert main([*args, "--output-dir", str(tmp_path / "r")]) == 0
    finally:
        fake.stop()
    return fake


def summarizer_system(fake: FakeOllama) -> str:
    return fake.chat_requests("text")[0]["messages"][0]["content"]


def test_clip_only_pipelines_get_tags_and_t5_ones_get_sentences(tmp_path, tiny_sd_dir, tiny_sd3_dir, capsys):
    fake = condense_run(tmp_path / "sd", tiny_sd_dir)
    assert "comma-separated phrases" in summarizer_system(fake) and "concrete sentences" not in summarizer_system(fake)
    summary = (tmp_path / "sd" / "r" / "summary.txt").read_text()
    assert "summarizer instructions (style: tags, read from the image model's text encoder" in summary

    fake = condense_run(tmp_path / "sd3", tiny_sd3_dir)
    assert "one or two clear, concrete sentences" in summarizer_system(fake)
    summary = (tmp_path / "sd3" / "r" / "summary.txt").read_text()
    assert "summarizer instructions (style: sentences, read from the image model's text encoder" in summary
    assert "one or two clear, concrete sentences" in summary


def test_a_task_overrides_the_models_style(tmp_path, tiny_sd3_dir, capsys):
    task = tmp_path / "tags.toml"
    task.write_text(TASK + 'prompt_style = "tags"\n')
    fake = condense_run(tmp_path, tiny_sd3_dir, "--task", str(task))
    assert "comma-separated phrases" in summarizer_system(fake)
    assert "style: tags, set by the task's prompt_style" in (tmp_path / "r" / "summary.txt").read_text()


def test_keep_words_survive_the_condense_step_and_the_budget(tmp_path, tiny_sd_dir, capsys):
    task = tmp_path / "keep.toml"
    task.write_text(TASK + 'keep = ["zq7 style", "by Ada"]\n')
    # The summarizer drops "by Ada" and puts "zq7 style" last in a reply far over the 77-token CLIP budget.
    reply = "hotdog " + " ".join(f"ember{n}" for n in range(80)) + ", zq7 style"
    fake = condense_run(tmp_path, tiny_sd_dir, "--task", str(task), summaries=[reply])
    assert '"zq7 style"; "by Ada"' in summarizer_system(fake), "the summarizer is told which words to keep"
    run = tmp_path / "r"
    first, second = (json.loads((run / f"0{i}.json").read_text())["prompt"] for i in (1, 2))
    assert "zq7 style" in first and "by Ada" in first, "the first prompt carries them too"
    assert "zq7 style" in second and "by Ada" in second
    model = MODELS.image_model(RunSettings(image_model=str(tiny_sd_dir)))
    assert model.count_tokens(second) <= 77, "the kept words count in the budget; other words were cut"
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    cut = [t["message"] for t in trace if t["kind"] == "warning" and "cut:" in t["message"]]
    assert cut and "zq7" not in cut[0] and "ember79" in cut[0]


def test_the_proposer_keeps_the_words_too(tmp_path, capsys):
    task = tmp_path / "keep.toml"
    task.write_text(TASK + 'keep = ["zq7 style"]\n')
    with FakeOllama(models={"llava:7b": ["completion", "vision"]}, role_of=role_by_prompt) as fake:
        # Image 2 scores lower, so climbing rejects it and asks the proposer, which forgets the words.
        fake.script([judge_json(6), judge_json(3), judge_json(7)], role="judge")
        fake.script(["IDEA: a hotdog on a volcano, lava everywhere"], role="vision")
        args = ["run", "--eval-model", "ollama:llava:7b", "--ollama-url", fake.url, "--task", str(task)]
        args += ["--image-model", "sketch:size=64", "--strategy", "climbing", "--max-iterations", "3", "--seed", "2"]
        assert main([*args, "--output-dir", str(tmp_path / "r")]) == 0
        proposer = fake.chat_requests("vision")[0]["messages"][0]["content"]
    assert 'exactly as written here: "zq7 style"' in proposer
    third = json.loads((tmp_path / "r" / "03.json").read_text())
    assert "volcano" in third["prompt"] and "zq7 style" in third["prompt"]


@pytest.mark.parametrize(
    ("line", "words"),
    [('prompt_style = "poetry"', "prompt_style is 'poetry'"), ('keep = "zq7"', "keep must be a list of texts")],
)
def test_bad_keep_or_style_in_a_task_is_one_line(tmp_path, capsys, line, words):
    task = tmp_path / "bad.toml"
    task.write_text(TASK + line + "\n")
    assert main(["demo", "--task", str(task), "--output-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
    assert not (tmp_path / "r").exists()
