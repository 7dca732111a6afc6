"""`--image-model a1111:CHECKPOINT`: real runs through the CLI against a fake A1111-compatible server on 127.0.0.1
that follows the web UI's `/sdapi/v1` API (tests/fake_a1111.py)."""

from __future__ import annotations

import base64
import json
import signal
import time
from pathlib import Path

import pytest

from refineloop.backends.image.a1111.model import consecutive_runs
from refineloop.cli.main import main
from refineloop.run_folder.provenance import read_provenance
from tests.conftest import checkpointed, wait_for
from tests.fake_a1111 import fake_a1111
from tests.fake_ollama import FakeOllama


def run(url: str, out: Path, *flags: str, model: str = "a1111:dreamshaper_8") -> int:
    base = ["run", "--image-model", model, "--a1111-url", url, "--seed", "3", "--output-dir", str(out)]
    return main([*base, *flags])


def test_a_run_draws_each_image_at_its_own_seed_with_the_chosen_checkpoint(tmp_path):
    out = tmp_path / "run"
    with fake_a1111() as (fake, url):
        assert run(url, out, "--max-iterations", "2", "--candidates", "2", "--width", "64", "--height", "64") == 0
    assert [path for path, _ in fake.calls] == ["/sdapi/v1/txt2img"] * 4  # derived seeds never run on: one call each
    for number, (_, payload) in enumerate(fake.calls, start=1):
        record = read_provenance(out / f"{number:02d}.png")
        assert (payload["seed"], payload["batch_size"], payload["prompt"]) == (record["seed"], 1, record["prompt"])
        assert payload["override_settings"] == {"sd_model_checkpoint": "dreamshaper_8.safetensors [879db523c3]"}
        assert payload["override_settings_restore_afterwards"] is False and "sampler_name" not in payload
        assert record["server"] == {
            "server": "a1111",
            "checkpoint": "dreamshaper_8.safetensors [879db523c3]",
            "sampler_name": None,
            "scheduler": None,
        }
        assert record["model"] == "a1111:dreamshaper_8" and record["width"] == 64


def test_img2img_sends_the_best_image_and_the_strength(tmp_path):
    out = tmp_path / "run"
    with fake_a1111() as (fake, url):
        assert run(url, out, "--strategy", "img2img", "--max-iterations", "3", "--width", "64", "--height", "64") == 0
    paths = [path for path, _ in fake.calls]
    assert paths == ["/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/img2img"]
    for number, (_, payload) in enumerate(fake.calls[1:], start=2):
        record = read_provenance(out / f"{number:02d}.png")
        assert payload["denoising_strength"] == record["strength"]
        init = base64.b64decode(payload["init_images"][0])
        assert init[:8] == b"\x89PNG\r\n\x1a\n" and init == (out / record["init_image"]).read_bytes()


def test_credentials_come_from_the_named_variable_and_are_written_nowhere(tmp_path, monkeypatch, capsys):
    secret = "painter:hunter2-secret"
    with fake_a1111() as (fake, url):
        fake.auth = secret
        assert run(url, tmp_path / "bare", "--max-iterations", "1") == 2
        assert (
            "refused the credentials for /sdapi/v1/sd-models (HTTP 401): set --a1111-auth-env"
            in capsys.readouterr().err
        )
        monkeypatch.setenv("MY_A1111", secret)
        out = tmp_path / "run"
        assert run(url, out, "--max-iterations", "1", "--a1111-auth-env", "MY_A1111") == 0
    token = base64.b64encode(secret.encode())
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes() and token not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("down", "the A1111 server at http://127.0.0.1:9 is not answering"),
        ("wrong path", "has no /sdapi/v1/sd-models (HTTP 404): check --a1111-url"),
        ("payload", "refused the request to /sdapi/v1/txt2img (HTTP 422): "),
        ("crash", "failed POST /sdapi/v1/txt2img (HTTP 500): OutOfMemoryError: CUDA out of memory; see the server"),
        ("garbage", "answered POST /sdapi/v1/txt2img with something that is not JSON"),
        ("checkpoint", "has no checkpoint 'sdxl': it has dreamshaper_8.safetensors [879db523c3], v1-5"),
    ],
)
def test_server_problems_are_one_line(tmp_path, capsys, problem, expected):
    with fake_a1111() as (fake, url):
        fake.fail, fake.garbage = problem == "crash", problem == "garbage"
        address = {"down": "http://127.0.0.1:9", "wrong path": url + "/webui"}.get(problem, url)
        flags = ["--width", "4096", "--height", "64"] if problem == "payload" else []
        model = "a1111:sdxl" if problem == "checkpoint" else "a1111"
        code = run(address, tmp_path / "run", "--max-iterations", "1", *flags, model=model)
    text = capsys.readouterr()
    shown = [line for line in (text.out + text.err).splitlines() if expected in line]
    assert code in (1, 2) and len(shown) == 1 and "Traceback" not in text.out + text.err


def test_an_a1111_option_given_without_an_a1111_model_warns(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--max-iterations", "1", "--a1111-url", "http://127.0.0.1:1", "--output-dir", str(out)]) == 0
    assert (
        "warning: --a1111-url only serves a1111[:<checkpoint>] models, and none is used here" in capsys.readouterr().out
    )


def test_a_batch_is_one_call_only_where_seeds_run_on():
    assert consecutive_runs([7, 8, 9, 20, 21, 5]) == [[7, 8, 9], [20, 21], [5]]
    assert json.loads(json.dumps(consecutive_runs([]))) == []


def test_a_run_the_server_failed_resumes_sending_the_same_requests(tmp_path, capsys):
    flags = ("--max-iterations", "4", "--width", "64", "--height", "64")
    with fake_a1111() as (whole, url):
        assert run(url, tmp_path / "whole", *flags) == 0
    out = tmp_path / "cut"
    with fake_a1111() as (fake, url):
        fake.fail_at = 3
        assert run(url, out, *flags) == 1
        assert "(HTTP 500): OutOfMemoryError" in capsys.readouterr().out
    with fake_a1111() as (moved, new_url):
        assert main(["resume", str(out), "--a1111-url", new_url]) == 0
    assert [p for _, p in fake.calls[:2]] + [p for _, p in moved.calls] == [p for _, p in whole.calls]
    assert fake.calls[2][1] == moved.calls[0][1]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--a1111-url", "127.0.0.1:7860"], "--a1111-url '127.0.0.1:7860' is not an http(s) URL"),
        (["--comfyui-url", "localhost"], "--comfyui-url 'localhost' is not an http(s) URL"),
        (["--a1111-auth-env", "user:pw"], "--a1111-auth-env 'user:pw' is not a variable name"),
    ],
)
def test_server_settings_are_checked_before_any_folder(tmp_path, capsys, flags, expected):
    out = tmp_path / "run"
    assert main(["run", "--image-model", "a1111", *flags, "--output-dir", str(out)]) == 2
    assert expected in capsys.readouterr().err and not out.exists()


def test_an_unset_credentials_variable_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NOT_SET_A1111", raising=False)
    with fake_a1111() as (_, url):
        assert run(url, tmp_path / "run", "--a1111-auth-env", "NOT_SET_A1111") == 2
    assert "--a1111-auth-env names NOT_SET_A1111, which is not set: export NOT_SET_A1111=user:password" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_ctrl_c_interrupts_the_server_and_the_run_resumes(tmp_path, start_cli):
    out = tmp_path / "run"
    with fake_a1111() as (fake, url):
        fake.delay = 60.0
        proc = start_cli("run", "--image-model", "a1111", "--a1111-url", url, "--seed", "3", "--width", "64",
                         "--height", "64", "--max-iterations", "2", "--output-dir", str(out))  # fmt: skip
        wait_for(lambda: len(fake.calls) == 1 and checkpointed(out), timeout=60)  # the run has begun
        proc.send_signal(signal.SIGINT)  # the first drains: it would wait for the image being drawn
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # the second stops now, and tells the server
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130 and fake.interrupts == 1, output
        fake.delay = 0.0
        assert main(["resume", str(out)]) == 0
    # The interrupted image is asked again, exactly, then the run goes on.
    assert len(fake.calls) == 3 and fake.calls[0][1] == fake.calls[1][1]
    assert fake.calls[2][1]["seed"] != fake.calls[1][1]["seed"]


@pytest.mark.slow
def test_ctrl_c_before_the_run_begins_interrupts_the_first_image_drawn_ahead(tmp_path, start_cli):
    out = tmp_path / "run"
    # The first image is begun before the run starts; the critic's load (on another host) holds the start here.
    with fake_a1111() as (fake, url), FakeOllama(models={"vlm:1b": ["vision"]}, host="127.0.0.2") as critic:
        fake.delay, critic.load_delay = 60.0, 60.0
        critic_flags = ("--eval-model", "ollama:vlm:1b", "--ollama-url", critic.url)
        proc = start_cli("run", "--image-model", "a1111", "--a1111-url", url, *critic_flags, "--width", "64",
                         "--height", "64", "--output-dir", str(out))  # fmt: skip
        wait_for(lambda: len(fake.calls) == 1 and len(critic.chat_requests("load")) == 1, timeout=60)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and fake.interrupts == 1, output
    assert "stopped before the first image: nothing was kept" in output and "Traceback" not in output
    assert not out.exists()
