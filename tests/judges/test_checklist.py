"""`--judge checklist`: weighted yes/no questions written once, asked of every image, P(yes) from log probabilities,
the unmet questions handed to the proposer, and a checklist a task file or a reviewer can replace."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from refineloop.cli.main import main
from refineloop.cli.run_commands import start_run
from refineloop.graph_build import build_graph
from tests.conftest import refineloop
from tests.fake_ollama import FakeOllama, message_text

QUESTIONS = """Here is the checklist.
QUESTION: Is there exactly one hotdog? | WEIGHT: 3
QUESTION: Are there visible flames? | WEIGHT: 2
QUESTION: Is the sausage glowing red? | WEIGHT: 1
QUESTION: Is there heat haze in the air? | WEIGHT: 1"""


def roles(critic, role: str) -> list[dict]:
    return [c for c in critic.calls if c["role"] == role]


def sidecar(run: Path, iteration: int) -> dict:
    return json.loads((run / f"{iteration:02d}.json").read_text())


def checklist_settings(run_settings, **more):
    """A checklist run whose only critic calls are the loop's (no final pick, no second look at a DONE)."""
    return run_settings(judge="checklist", final_pick=0, confirm_done=False, **more)


def test_the_critic_writes_the_checklist_once_and_every_image_answers_it(scripted, run_settings, quiet):
    answers = [
        "Q1: yes\nQ2: no\nQ3: no\nQ4: no",
        "Q1: yes\nQ2: yes\nQ3: no\nQ4: yes",
        "Q1: yes\nQ2: yes\nQ3: yes\nQ4: yes",
    ]
    cache, critic = scripted([], questions_reply=QUESTIONS, checklist_replies=answers)
    outcome = start_run(checklist_settings(run_settings, strategy="greedy", max_iterations=5), models=cache, out=quiet)
    run = Path(outcome.run_dir)
    assert len(roles(critic, "checklist-write")) == 1 and len(roles(critic, "checklist")) == 3
    assert not roles(critic, "judge"), "no 1-10 score is asked"
    asked = roles(critic, "checklist")[0]
    assert asked["image"] and asked["temperature"] == 0.0 and "Q2. Are there visible flames?" in asked["user"]
    assert [q["weight"] for q in outcome.values["checklist"]] == [3.0, 2.0, 1.0, 1.0]
    # The score is the weighted share of yes on 0-10; an image that meets every question is DONE.
    first, second, third = (sidecar(run, i) for i in (1, 2, 3))
    assert first["score"] == 4.29 and first["answers"] == [1.0, 0.0, 0.0, 0.0]
    assert first["unmet"] == [
        "Are there visible flames?",
        "Is the sausage glowing red?",
        "Is there heat haze in the air?",
    ]
    assert second["score"] == 8.57 and second["verdict"] == "CONTINUE"
    assert third["score"] == 10.0 and third["verdict"] == "DONE"
    assert outcome.values["stop_reason"] == "the critic said DONE at image 3"
    # The proposer is told what the image still fails, the weightiest first.
    proposer = roles(critic, "propose")[0]["system"]
    assert "still fails these points" in proposer and "- Are there visible flames?\n- Is the sausage" in proposer
    summary = (run / "summary.txt").read_text()
    assert (
        "checklist (every image is asked these" in summary and "1. Is there exactly one hotdog? (weight 3)" in summary
    )
    assert "meets 1 of 4 checklist questions; fails: Are there visible flames?" in summary
    assert 'id="checklist"' in (run / "report.html").read_text()


def test_a_task_files_checklist_replaces_the_critics(scripted, run_settings, quiet, tmp_path):
    task = tmp_path / "fire.toml"
    task.write_text(
        'name = "fire"\ngoal = "a burning hotdog"\nsubject = "a hotdog"\nstart_prompt = "a hotdog"\n'
        'checklist = ["Is it on fire?", { question = "Is it glowing?", weight = 2 }]\n'
    )
    cache, critic = scripted([], checklist_replies=["Q1: no\nQ2: yes"])
    settings = checklist_settings(run_settings, task=str(task), strategy="greedy", max_iterations=1)
    outcome = start_run(settings, models=cache, out=quiet)
    assert not roles(critic, "checklist-write")
    assert outcome.values["checklist"] == [
        {"question": "Is it on fire?", "weight": 1.0},
        {"question": "Is it glowing?", "weight": 2.0},
    ]
    assert outcome.values["best"]["score"] == 6.67


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ('"Is it hot?"', "checklist must be a list of questions"),
        ('[{ question = "Hot?", weight = 0 }]', "checklist entry 1 has weight 0"),
        ('[{ text = "Hot?" }]', "checklist entry 1 must hold question"),
        ('["   "]', "checklist entry 1 is blank"),
    ],
)
def test_a_bad_checklist_in_a_task_file_is_one_line(entry, says, tmp_path, capsys):
    task = tmp_path / "bad.toml"
    task.write_text(f'name = "b"\ngoal = "g"\nsubject = "s"\nstart_prompt = "p"\nchecklist = {entry}\n')
    assert main(["demo", "--task", str(task), "--output-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def _token(word: str, chance: float) -> dict:
    """One answer token as Ollama returns it: the chosen word, with yes and no among the alternatives."""
    options = [{"token": " yes", "logprob": math.log(chance)}, {"token": " no", "logprob": math.log(1 - chance)}]
    return {"token": f" {word}", "logprob": math.log(chance if word == "yes" else 1 - chance), "top_logprobs": options}


def _role(body: dict) -> str:
    text = message_text(body)
    return "text" if "QUESTION:" in text else "vision" if "Q1:" in text else "judge"


@pytest.mark.slow
def test_p_yes_from_ollamas_log_probabilities_scores_the_image(run_settings, quiet):
    writer = "\n".join(
        f"QUESTION: {q} | WEIGHT: {w}"
        for q, w in (("Is it on fire?", 2), ("Is the bun charred?", 1), ("Is there smoke?", 1), ("Is it glowing?", 1))
    )
    said = (("yes", 0.9), ("no", 0.2), ("yes", 0.7), ("no", 0.4))
    tokens = [t for n, (word, p) in enumerate(said, 1) for t in ({"token": f"Q{n}", "logprob": -0.01}, _token(word, p))]
    answer = {"reply": {"content": "\n".join(f"Q{n}: {w}" for n, (w, _) in enumerate(said, 1)), "logprobs": tokens}}
    with FakeOllama(replies={"text": [writer], "vision": [answer]}, role_of=_role) as fake:
        settings = checklist_settings(
            run_settings, eval_model="ollama:llava:7b", ollama_url=fake.url, strategy="greedy", max_iterations=1
        )
        outcome = start_run(settings, out=quiet)
        asked = fake.chat_requests("vision")
    assert outcome.status == "done", quiet.getvalue()
    record = sidecar(Path(outcome.run_dir), 1)
    # P(yes) replaces the yes/no: 10 * (2 * 0.9 + 0.2 + 0.7 + 0.4) / 5.
    assert record["answers"] == [0.9, 0.2, 0.7, 0.4] and record["score"] == 6.2
    assert record["unmet"] == ["Is the bun charred?", "Is it glowing?"], "the least met first among equal weights"
    (request,) = asked
    assert request["logprobs"] is True and request["top_logprobs"] == 5
    assert request["think"] is False and request["options"]["temperature"] == 0.0


def test_answers_without_log_probabilities_count_as_yes_and_no(scripted, run_settings, quiet):
    # Tokens that do not line up with the text's answers are not trusted: the text's yes and no stand.
    odd = AIMessage(content="Q1: yes\nQ2: no", response_metadata={"logprobs": [{"token": " yes", "logprob": -0.1}]})
    cache, _ = scripted([], questions_reply=QUESTIONS, checklist_replies=[odd])
    outcome = start_run(checklist_settings(run_settings, strategy="greedy", max_iterations=1), models=cache, out=quiet)
    assert sidecar(Path(outcome.run_dir), 1)["answers"] == [1.0, 0.0, 0.0, 0.0]


def test_a_reviewer_replaces_the_checklist(scripted, run_settings):
    cache, critic = scripted([], questions_reply=QUESTIONS, checklist_replies=["Q1: yes\nQ2: no", "Q1: yes\nQ2: no"])
    settings = checklist_settings(run_settings, strategy="greedy", max_iterations=2, review=True)
    graph = build_graph("greedy", InMemorySaver())
    config = {"configurable": {"thread_id": "t", "models": cache}}
    question = graph.invoke({"settings": settings.to_dict()}, config)["__interrupt__"][0].value
    assert [q["question"] for q in question["checklist"]][0] == "Is there exactly one hotdog?"
    assert {"action": "checklist", "questions": ["a yes/no question", "another | 2"]} in question["answers"]
    retry = graph.invoke(Command(resume={"action": "checklist", "questions": []}), config)["__interrupt__"][0].value
    assert "checklist needs 'questions'" in retry["problem"]
    new = ["Is it on fire? | 2", {"question": "Is it glowing?", "weight": 1}]
    again = graph.invoke(Command(resume={"action": "checklist", "questions": new}), config)["__interrupt__"][0].value
    assert again["checklist"] == [
        {"question": "Is it on fire?", "weight": 2.0},
        {"question": "Is it glowing?", "weight": 1.0},
    ]
    assert "problem" not in again
    graph.invoke(Command(resume={"action": "approve"}), config)
    values = graph.get_state(config).values
    assert values["status"] == "done" and values["checklist"] == again["checklist"]
    # Image 2 is asked the new questions.
    assert "Q1. Is it on fire?\nQ2. Is it glowing?" in roles(critic, "checklist")[1]["user"]
    review = sidecar(Path(values["run_dir"]), 1)["review"]
    assert review["action"] == "approve" and review["checklist"] == again["checklist"]


def test_the_terminal_offers_the_checklist_only_to_checklist_runs(scripted, run_settings, quiet):
    cache, critic = scripted([], questions_reply=QUESTIONS, checklist_replies=["Q1: yes\nQ2: no"] * 2)
    settings = checklist_settings(run_settings, strategy="greedy", max_iterations=2, review=True)
    answers = io.StringIO("c\nIs it on fire? | 2\nIs it glowing?\n\na\n")
    outcome = start_run(settings, models=cache, out=quiet, inp=answers)
    out = quiet.getvalue()
    assert "[a]pprove / [e]dit prompt / [c]hecklist / [s]top: " in out
    assert "checklist:   1. Is there exactly one hotdog? (weight 3)" in out
    assert outcome.values["checklist"][0] == {"question": "Is it on fire?", "weight": 2.0}
    assert "Q1. Is it on fire?" in roles(critic, "checklist")[1]["user"]


@pytest.mark.slow
def test_the_demo_judges_with_a_checklist_offline(tmp_path):
    result = refineloop("demo", "--judge", "checklist", "--seed", "3", "--output-dir", "r", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "r"
    assert "checklist (every image is asked these" in (run / "summary.txt").read_text()
    first = json.loads((run / "01.json").read_text())
    assert first["answers"] and all(0 < p < 1 for p in first["answers"]), (
        "the demo's P(yes) come from log probabilities"
    )
