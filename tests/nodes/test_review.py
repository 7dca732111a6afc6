"""`--review`: a person approves, edits the next prompt, or stops the run, in the terminal and through Studio."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from langgraph_sdk import get_sync_client

from refineloop.apps.engine import EXIT_PAUSED
from refineloop.apps.reading import read_values
from refineloop.graph_build import build_graph
from refineloop.nodes.review import parse_answer
from tests.conftest import cli_env, images_in, judge_reply, refineloop, wait_for

# A goal with no heat words keeps the demo critic from saying DONE, so only the reviewer ends the run early.
STEADY = ["--goal", "a quiet blue teapot on a table", "--seed", "3", "--max-iterations", "6", "--review"]
EDITED = "a teapot wrapped in blue lightning"


def answer(cwd: Path, args: list[str], lines: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI with `lines` written to its standard input (then closed), as a person at a pipe would."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "refineloop", *args],
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(lines, timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def values_of(run: Path) -> dict[str, Any]:
    """The run's last checkpointed state."""
    return read_values(str(run), json.loads((run / "run.json").read_text())["thread_id"])


def sidecar(run: Path, iteration: int) -> dict[str, Any]:
    """Image `iteration`'s record."""
    return json.loads((run / f"{iteration:02d}.json").read_text())


@pytest.mark.slow
def test_terminal_approve_edit_and_stop(tmp_path):
    # An unknown answer is asked again; edit after image 1, approve after image 2, stop after image 3.
    done = answer(tmp_path, ["demo", *STEADY, "--strategy", "greedy", "--output-dir", "r"], f"x\ne\n{EDITED}\na\ns\n")
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "r"
    out = done.stdout
    assert out.count("--- review of image") == 3 and "'x' is not a choice" in out
    assert f"image:       {run / '01.png'}" in out and "critique:" in out and "next prompt:" in out
    assert "stopped: stopped by the reviewer at image 3" in out and "Traceback" not in done.stderr
    assert images_in(run) == ["01.png", "02.png", "03.png"]
    assert EDITED in sidecar(run, 2)["prompt"]
    assert EDITED not in sidecar(run, 3)["prompt"], "an approve goes on with the critic's own idea"
    assert [sidecar(run, i)["review"]["action"] for i in (1, 2, 3)] == ["edit", "approve", "stop"]
    values = values_of(run)
    assert values["status"] == "done" and values["stop_reason"] == "stopped by the reviewer at image 3"
    for name in ("best.png", "summary.txt", "collage.png"):
        assert (run / name).is_file()
    assert "stopped by the reviewer at image 3" in (run / "summary.txt").read_text()
    trace = [json.loads(line) for line in (run / "trace.jsonl").read_text().splitlines()]
    reviews = [t for t in trace if t["kind"] == "review"]
    assert [(t["iteration"], t["action"]) for t in reviews] == [(1, "edit"), (2, "approve"), (3, "stop")]
    images = [t for t in trace if t["kind"] == "image"]
    assert EDITED in images[1]["prompt"]


@pytest.mark.slow
def test_end_of_input_pauses_and_resume_asks_again(tmp_path):
    args = ["demo", *STEADY, "--strategy", "climbing", "--output-dir", "r"]
    paused = subprocess.run(
        [sys.executable, "-m", "refineloop", *args],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    run = tmp_path / "r"
    assert paused.returncode == EXIT_PAUSED, paused.stdout + paused.stderr
    assert "no answer on standard input" in paused.stdout and f"refineloop resume {run}" in paused.stdout
    assert images_in(run) == ["01.png"] and (run / "summary.txt").is_file()
    assert values_of(run)["status"] == "running"
    listing = refineloop("runs", str(tmp_path), cwd=tmp_path)
    assert " review " in listing.stdout, listing.stdout

    resumed = answer(tmp_path, ["resume", str(run)], "a\ns\n")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "--- review of image 1/6" in resumed.stdout, "the unanswered question is asked again"
    assert "stopped: stopped by the reviewer at image 2" in resumed.stdout
    assert images_in(run) == ["01.png", "02.png"]
    assert values_of(run)["stop_reason"] == "stopped by the reviewer at image 2"


@pytest.mark.slow
def test_ctrl_c_at_the_question_stops_at_once_and_resume_asks_again(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "refineloop", "demo", *STEADY, "--strategy", "greedy", "--output-dir", "r"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = tmp_path / "r"
    try:
        wait_for(lambda: (run / "01.json").exists())
        time.sleep(0.5)  # the question follows within milliseconds; nothing is ever written to stdin
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "Traceback" not in out and f"resume with: refineloop resume {run}" in out
    resumed = answer(tmp_path, ["resume", str(run)], "s\n")
    assert "--- review of image 1/6" in resumed.stdout
    assert values_of(run)["stop_reason"] == "stopped by the reviewer at image 1"


def test_edit_survives_a_rejection_and_bad_answers_ask_again(scripted, run_settings):
    # Climbing rejects image 2 (3 < 5), so the proposer writes the next idea; the reviewer's edit must win.
    cache, _ = scripted([judge_reply(5), judge_reply(3), judge_reply(4)])
    settings = run_settings(strategy="climbing", review=True, max_iterations=3)
    graph = build_graph("climbing", InMemorySaver())
    config = {"configurable": {"thread_id": "t", "models": cache}}

    first = graph.invoke({"settings": settings.to_dict()}, config)
    question = first["__interrupt__"][0].value
    assert question["iteration"] == 1 and question["score"] == 5 and question["verdict"] == "CONTINUE"
    assert question["image"].endswith("01.png") and question["critique"] == "scripted critique 5"
    assert question["next_from"] == "critic" and question["next_prompt"]
    json.dumps(question)  # builtins only: the API and Studio show it as is

    second = graph.invoke(Command(resume={"action": "approve"}), config)
    question = second["__interrupt__"][0].value
    assert question["iteration"] == 2 and question["decision"] == "rejected" and question["next_from"] == "proposer"

    again = graph.invoke(Command(resume={"action": "edit", "prompt": "  "}), config)
    retry = again["__interrupt__"][0].value
    assert retry["iteration"] == 2 and "non-empty" in retry["problem"]
    graph.invoke(Command(resume={"action": "edit", "prompt": EDITED}), config)
    values = graph.get_state(config).values
    assert EDITED in values["candidate"]["prompt"] and values["candidate"]["iteration"] == 3
    assert values["status"] == "done" and values["stop_reason"] == "reached --max-iterations 3"


def test_review_off_never_pauses(scripted, run_settings):
    cache, _ = scripted([judge_reply(5), judge_reply(6)])
    graph = build_graph("greedy", InMemorySaver())
    config = {"configurable": {"thread_id": "t", "models": cache}}
    result = graph.invoke({"settings": run_settings(max_iterations=2).to_dict()}, config)
    assert "__interrupt__" not in result and result["status"] == "done"
    steps = [s.next for s in graph.get_state_history(config)]
    assert ("review",) not in steps


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"action": "approve"}, ("approve", "", "")),
        ("a", ("approve", "", "")),
        ("STOP", ("stop", "", "")),
        ({"action": "stop", "reason": "good enough"}, ("stop", "good enough", "")),
        ({"action": "edit", "prompt": ' "more steam" '}, ("edit", "more steam", "")),
        ({"action": "edit", "idea": "more steam"}, ("edit", "more steam", "")),
    ],
)
def test_answers_that_parse(given, expected):
    assert parse_answer(given) == expected


@pytest.mark.parametrize("given", [None, 3, {"action": "maybe"}, {"action": "edit"}, "x"])
def test_answers_that_ask_again(given):
    action, _, problem = parse_answer(given)
    assert action == "" and problem


@pytest.mark.slow
def test_studio_interrupt_resumes_with_command(studio_server, tmp_path):
    client = get_sync_client(url=studio_server)
    thread = client.threads.create()["thread_id"]
    out = tmp_path / "studio-review"
    context = {
        "max_iterations": 4,
        "seed": 1,
        "output_dir": str(out),
        "image_model": "sketch",
        "eval_model": "demo",
        "goal": "a quiet blue teapot on a table",
        "review": True,
    }
    client.runs.wait(thread, "refine-greedy", input={}, context=context)
    state = client.threads.get_state(thread)
    assert state["next"] == ["review"] and state["values"]["status"] == "running"
    question = state["interrupts"][0]["value"]
    assert question["iteration"] == 1 and question["image"] == str(out / "01.png")
    assert {"score", "verdict", "critique", "next_prompt"} <= set(question)

    client.runs.wait(thread, "refine-greedy", command={"resume": {"action": "edit", "prompt": EDITED}})
    state = client.threads.get_state(thread)
    assert state["interrupts"][0]["value"]["iteration"] == 2
    assert EDITED in sidecar(out, 2)["prompt"]

    client.runs.wait(thread, "refine-greedy", command={"resume": {"action": "stop", "reason": "seen enough"}})
    values = client.threads.get_state(thread)["values"]
    assert values["status"] == "done" and values["stop_reason"] == "stopped by the reviewer at image 2: seen enough"
    assert images_in(out) == ["01.png", "02.png"] and (out / "best.png").is_file()


@pytest.mark.slow
def test_studio_draws_the_review_branches(studio_server):
    client = get_sync_client(url=studio_server)
    for strategy in ("greedy", "climbing", "annealing", "img2img"):
        assistant = client.assistants.search(graph_id=f"refine-{strategy}")[0]
        edges = client.assistants.get_graph(assistant["assistant_id"])["edges"]
        targets = {(e["source"], e["target"]) for e in edges}
        assert {("summarize", "review"), ("summarize", "generate"), ("review", "generate"), ("review", "stop")} <= (
            targets
        ), strategy
