"""`--image-model comfyui:WORKFLOW.json`: real runs through the CLI against a fake ComfyUI on 127.0.0.1 that follows
ComfyUI's HTTP and websocket API (tests/fake_comfyui.py)."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from refineloop.cli.main import main
from refineloop.run_folder.provenance import read_provenance
from tests.conftest import checkpointed, wait_for
from tests.fake_comfyui import FakeComfyUI, api_workflow, fake_comfyui
from tests.fake_ollama import FakeOllama


@pytest.fixture
def workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / "workflow_api.json"
    path.write_text(json.dumps(api_workflow()))
    return path


def run(workflow: Path, url: str, out: Path, *flags: str) -> int:
    base = ["run", "--image-model", f"comfyui:{workflow}", "--comfyui-url", url, "--seed", "5"]
    return main([*base, "--output-dir", str(out), *flags])


def pixels(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        return image.tobytes()


def sent(fake: FakeComfyUI) -> list[tuple[str, int, Any]]:
    """What each queued prompt asked for: its positive text, its seed and its denoise."""
    return [(w["6"]["inputs"]["text"], w["3"]["inputs"]["seed"], w["3"]["inputs"]["denoise"]) for w in fake.prompts]


def test_a_run_fills_the_users_workflow_and_records_it(workflow_file, tmp_path, capsys):
    out = tmp_path / "run"
    with fake_comfyui() as (fake, url):
        fake.delay, fake.history_lag = 0.2, 0.05  # long enough for a round's second prompt to be queued under load
        assert run(workflow_file, url, out, "--max-iterations", "2", "--candidates", "2", "--steps", "6") == 0
    assert fake.most_queued == 2  # a round's candidates wait in the server's queue together
    assert len(fake.prompts) == 4 and "comfyui:workflow_api.json on the ComfyUI server" in capsys.readouterr().out
    for number, workflow in enumerate(fake.prompts, start=1):
        record = read_provenance(out / f"{number:02d}.png")
        assert workflow["6"]["inputs"]["text"] == record["prompt"] and workflow["3"]["inputs"]["seed"] == record["seed"]
        assert workflow["7"]["inputs"]["text"] == record["negative_prompt"] != ""
        assert workflow["3"]["inputs"]["steps"] == record["steps"] == 6 and record["guidance"] == 8  # the workflow's
        server = record["server"]
        assert server["workflow"] == "workflow_api.json"
        assert server["workflow_sha256"] == __import__("hashlib").sha256(workflow_file.read_bytes()).hexdigest()
        assert server["filled"]["3.seed"] == record["seed"] and server["filled"]["6.text"] == record["prompt"]
    assert len({seed for _, seed, _ in sent(fake)}) == 4


def test_img2img_uploads_the_best_image_and_sets_the_denoise(workflow_file, tmp_path):
    out = tmp_path / "run"
    with fake_comfyui() as (fake, url):
        assert run(workflow_file, url, out, "--strategy", "img2img", "--max-iterations", "3") == 0
    assert fake.uploads and all(name.startswith("refineloop-") for name in fake.uploads)
    first, *later = fake.prompts
    assert "refineloop_load" not in first and all(
        w["refineloop_load"]["inputs"]["image"] in fake.uploads for w in later
    )
    for number, workflow in enumerate(later, start=2):
        record = read_provenance(out / f"{number:02d}.png")
        assert workflow["3"]["inputs"]["denoise"] == record["strength"] == record["server"]["filled"]["3.denoise"]


def test_an_execution_error_is_one_line_naming_the_node(workflow_file, tmp_path, capsys):
    out = tmp_path / "run"
    with fake_comfyui() as (fake, url):
        fake.fail_word = "hotdog"
        assert run(workflow_file, url, out, "--max-iterations", "2") == 1
    text = capsys.readouterr()
    line = next(x for x in text.out.splitlines() if x.startswith("error:"))
    assert line.startswith("error: ComfyUI failed at node 3 (KSampler): RuntimeError: Expected all tensors")
    assert "Traceback" not in text.out + text.err


def test_a_dropped_websocket_falls_back_to_polling_the_history(workflow_file, tmp_path):
    out = tmp_path / "run"
    with fake_comfyui() as (fake, url):
        fake.drop_sockets, fake.delay = True, 0.1
        assert run(workflow_file, url, out, "--max-iterations", "2", "--candidates", "2") == 0
    assert fake.history_calls >= 4 and len(list(out.glob("0?.png"))) == 4


GARBLED = {
    "not JSON": [(0x1, b"<html>502</html>")],
    "JSON of another shape": [(0x1, b'[1, "executing"]'), (0x1, b'{"type": "executing", "data": 7}')],
    "text that is not UTF-8": [(0x1, b"caf\xe9")],
}


@pytest.mark.parametrize("garbage", GARBLED.values(), ids=GARBLED.keys())
def test_a_garbled_websocket_falls_back_to_polling_the_history(workflow_file, tmp_path, garbage):
    out = tmp_path / "run"
    with fake_comfyui() as (fake, url):
        fake.socket_garbage, fake.delay = garbage, 0.1
        assert run(workflow_file, url, out, "--max-iterations", "2") == 0
    assert fake.history_calls >= 2 and [p.name for p in sorted(out.glob("0?.png"))] == ["01.png", "02.png"]


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("down", "ComfyUI at http://127.0.0.1:9 is not answering"),
        ("wrong path", "has no /system_stats (HTTP 404): check --comfyui-url"),
        ("garbage", "answered POST /prompt with something that is not JSON"),
        ("unknown node", "ComfyUI refused the workflow: node 4 (CheckpointLoaderSimpleX): Node class not found"),
    ],
)
def test_an_unreachable_or_confused_server_is_one_line(workflow_file, tmp_path, capsys, problem, expected):
    out = tmp_path / "run"
    if problem == "unknown node":
        workflow = api_workflow()
        workflow["4"]["class_type"] = "CheckpointLoaderSimpleX"
        workflow_file.write_text(json.dumps(workflow))
    with fake_comfyui() as (fake, url):
        fake.garbage = problem == "garbage"
        address = {"down": "http://127.0.0.1:9", "wrong path": url + "/comfy"}.get(problem, url)
        code = run(workflow_file, address, out, "--max-iterations", "1")
    text = capsys.readouterr()
    assert code in (1, 2) and expected in text.out + text.err and "Traceback" not in text.out + text.err


@pytest.mark.parametrize(
    ("how", "said"),
    [("restart", "lost prompt"), ("down", "is not answering")],
)
def test_a_server_restarted_mid_run_fails_in_one_line_and_resume_sends_the_same_prompts(
    workflow_file, tmp_path, capsys, how, said
):
    with fake_comfyui() as (whole, url):
        assert run(workflow_file, url, tmp_path / "whole", "--max-iterations", "4") == 0
    out = tmp_path / "cut"
    with fake_comfyui() as (fake, url):
        fake.restart_at, fake.down_at = (3, 0) if how == "restart" else (0, 3)
        assert run(workflow_file, url, out, "--max-iterations", "4") == 1
        errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and said in errors[0] and url in errors[0] and len(fake.prompts) == 3
    with fake_comfyui() as (moved, new_url):  # back up somewhere else: resume reaches it at its new address
        assert main(["resume", str(out), "--comfyui-url", new_url]) == 0
    assert sent(fake)[:2] + sent(moved) == sent(whole) and sent(fake)[2] == sent(moved)[0]
    for number in range(1, 5):  # the same pixels (the records differ only in the run's name)
        assert pixels(out / f"{number:02d}.png") == pixels(tmp_path / "whole" / f"{number:02d}.png")


@pytest.mark.slow
def test_ctrl_c_interrupts_the_server_and_the_run_resumes(workflow_file, tmp_path, start_cli):
    out = tmp_path / "run"
    with fake_comfyui() as (fake, url):
        fake.delay = 60.0
        proc = start_cli("run", "--image-model", f"comfyui:{workflow_file}", "--comfyui-url", url, "--seed", "5",
                         "--max-iterations", "2", "--candidates", "2", "--output-dir", str(out))  # fmt: skip
        wait_for(lambda: len(fake.prompts) == 2 and checkpointed(out), timeout=60)  # the run has begun
        proc.send_signal(signal.SIGINT)  # the first drains: the image being drawn would be finished
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # the second stops now
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, output
        assert fake.interrupts == [{"prompt_id": fake.ids[0]}] and fake.deletes, output
        fake.delay = 0.0
        assert main(["resume", str(out)]) == 0
    assert len(fake.prompts) == 6 and [p["3"]["inputs"]["seed"] for p in fake.prompts[2:4]] == [
        p["3"]["inputs"]["seed"] for p in fake.prompts[:2]
    ]
    assert sys.platform != "win32"


@pytest.mark.slow
def test_ctrl_c_before_the_run_begins_takes_the_prompts_drawn_ahead_off_the_server(workflow_file, tmp_path, start_cli):
    out = tmp_path / "run"
    # The first round is begun before the run starts; the critic's load (on another host) holds the start here.
    with fake_comfyui() as (fake, url), FakeOllama(models={"vlm:1b": ["vision"]}, host="127.0.0.2") as critic:
        fake.delay, critic.load_delay = 60.0, 60.0
        critic_flags = ("--eval-model", "ollama:vlm:1b", "--ollama-url", critic.url)
        proc = start_cli("run", "--image-model", f"comfyui:{workflow_file}", "--comfyui-url", url, "--candidates",
                         "2", *critic_flags, "--output-dir", str(out))  # fmt: skip
        wait_for(lambda: len(fake.prompts) == 2 and len(critic.chat_requests("load")) == 1, timeout=60)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and fake.interrupts == [{"prompt_id": fake.ids[0]}], output
    assert fake.deletes == [fake.ids[:2]] and "stopped before the first image: nothing was kept" in output
    assert not out.exists()


def test_a_walk_queues_every_round_as_a_draft_and_only_the_crowned_one_in_full(workflow_file, tmp_path):
    out = tmp_path / "run"
    with fake_comfyui() as (fake, url):
        flags = ("--max-iterations", "3", "--steps", "8", "--draft-steps", "2", "--draft-walk", "--final-pick", "0")
        assert run(workflow_file, url, out, *flags) == 0
    steps = [w["3"]["inputs"]["steps"] for w in fake.prompts]
    assert steps == [2, 2, 2, 8], "three drafts, then the crowned one in full"
    full = read_provenance(out / "04.png")
    crowned = json.loads((out / "04.json").read_text())["draft"]["iteration"]
    assert full["steps"] == 8 and full["seed"] == read_provenance(out / f"0{crowned}.png")["seed"]
    assert read_provenance(out / "01.png")["steps"] == 2


def test_drafts_are_queued_with_fewer_steps_and_the_winner_again_in_full(workflow_file, tmp_path):
    out = tmp_path / "run"
    with fake_comfyui() as (fake, url):
        flags = (
            "--max-iterations",
            "1",
            "--candidates",
            "2",
            "--steps",
            "8",
            "--draft-steps",
            "2",
            "--final-pick",
            "0",
        )
        assert run(workflow_file, url, out, *flags) == 0
    steps = [w["3"]["inputs"]["steps"] for w in fake.prompts]
    assert steps == [2, 2, 8], "two drafts, then the winner in full"
    draft_seeds = [seed for _, seed, _ in sent(fake)[:2]]
    record = read_provenance(out / "01.png")
    assert record["steps"] == 8 and record["seed"] in draft_seeds and record["seed"] == sent(fake)[2][1]
    assert sorted(p.name for p in (out / "drafts").glob("*.png")) == ["001-1.png", "001-2.png"]
    assert not (out / "02.png").exists()
