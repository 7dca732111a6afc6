"""The CLI's head start: the first image begun before LangGraph loads, taken by the generate node only when it is
the image the run asks for, and the same image, to the byte, as a run without it."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from refineloop.apps.head_start import first_request_known, leaves_a_core_free, shares_memory_with_the_critic
from refineloop.backends.image import head_start
from refineloop.backends.model_cache import MODELS
from refineloop.cli.main import main
from refineloop.cli.run_commands import resume_run, start_run
from refineloop.round_request import first_prompt, round_request
from refineloop.run_folder.provenance import read_provenance
from refineloop.run_start import resolve_run
from refineloop.settings import RunSettings
from tests.conftest import checkpointed, images_in, refineloop, wait_for
from tests.fake_ollama import FakeOllama

GOAL = "a quiet blue teapot on a table"


def flags(model: Path, run_dir: Path, *more: str) -> list[str]:
    return [
        "--image-model", str(model), "--eval-model", "demo", "--goal", GOAL, "--seed", "5", "--steps", "2",
        "--max-iterations", "2", "--output-dir", str(run_dir), "--head-start", *more,
    ]  # fmt: skip


def images_traced(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "trace.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record.get("kind") == "image"]


def plain_run(model: Path, run_dir: Path, **more: Any) -> None:
    more.setdefault("max_iterations", 2)
    """The same run through the CLI's runner, which begins no head start (as the Python API and batch do)."""
    settings = RunSettings(image_model=str(model), eval_model="demo", goal=GOAL, seed=5, steps=2, **more)
    settings.output_dir = str(run_dir)
    start_run(settings, out=io.StringIO())


@pytest.mark.parametrize("flag", ["--no-head-start", None])
def test_without_a_head_start_no_image_is_drawn_ahead(tmp_path, tiny_sd3_dir, flag):
    # Unasked, a diffusers model drawing on every core of this GPU-less machine gets none: the start-up would
    # slow its draw by more than it hides.
    argv = [a for a in flags(tiny_sd3_dir, tmp_path / "run") if a != "--head-start"] + ([flag] if flag else [])
    assert main(["run", *argv]) == 0
    assert [r.get("head_start") for r in images_traced(tmp_path / "run")] == [None, None]


def test_the_first_image_drawn_ahead_is_used_and_is_the_same_to_the_byte(tmp_path, tiny_sd3_dir, capsys):
    assert main(["run", *flags(tiny_sd3_dir, tmp_path / "ahead" / "run")]) == 0
    plain_run(tiny_sd3_dir, tmp_path / "plain" / "run")

    ahead, plain = images_traced(tmp_path / "ahead" / "run"), images_traced(tmp_path / "plain" / "run")
    assert [r.get("head_start") for r in ahead] == ["used", None]  # the second round is the node's own
    assert [r.get("head_start") for r in plain] == [None, None]
    for name in ("01.png", "02.png"):  # the run folder's name is the run id the PNGs carry: the same in both
        assert (tmp_path / "ahead" / "run" / name).read_bytes() == (tmp_path / "plain" / "run" / name).read_bytes()
    assert not head_start.pending()


def test_candidates_are_drawn_ahead_together_and_match_a_plain_run(tmp_path, tiny_sd3_dir, capsys):
    more = ("--candidates", "2", "--max-iterations", "1")
    assert main(["run", *flags(tiny_sd3_dir, tmp_path / "ahead" / "run", *more)]) == 0
    plain_run(tiny_sd3_dir, tmp_path / "plain" / "run", candidates=2, max_iterations=1)

    (record,) = images_traced(tmp_path / "ahead" / "run")
    assert record["head_start"] == "used" and record["images"] == [1, 2]
    for name in ("01.png", "02.png"):
        assert (tmp_path / "ahead" / "run" / name).read_bytes() == (tmp_path / "plain" / "run" / name).read_bytes()


def test_a_walk_draws_its_first_draft_ahead_and_its_best_in_full_at_the_stop(tmp_path, tiny_sd3_dir, capsys):
    more = ("--draft-walk", "--draft-steps", "1", "--final-pick", "0")
    assert main(["run", *flags(tiny_sd3_dir, tmp_path / "ahead" / "run", *more)]) == 0
    plain_run(tiny_sd3_dir, tmp_path / "plain" / "run", draft_walk=True, draft_steps=1, final_pick=0)

    ahead = images_traced(tmp_path / "ahead" / "run")
    assert [r.get("head_start") for r in ahead] == ["used", None, None]  # two drafts, then the best in full
    for name in ("01.png", "02.png", "03.png"):
        assert (tmp_path / "ahead" / "run" / name).read_bytes() == (tmp_path / "plain" / "run" / name).read_bytes()
    steps = [read_provenance(tmp_path / "ahead" / "run" / f"0{n}.png")["steps"] for n in (1, 2, 3)]
    assert steps == [1, 1, 2]


@pytest.mark.parametrize("wrong", ["seed", "failing"])
def test_a_head_start_for_another_request_is_discarded_and_the_node_draws_its_own(
    tmp_path, tiny_sd3_dir, wrong, capsys
):
    run_dir = tmp_path / "ahead" / "run"
    settings = RunSettings(image_model=str(tiny_sd3_dir), eval_model="demo", goal=GOAL, seed=5, steps=2)
    settings.output_dir = str(run_dir)
    run = resolve_run(dataclasses.replace(settings))
    model = MODELS.image_model(run.settings)
    planned = round_request(
        run.settings, run.task, model.traits, run_dir=str(run_dir), iteration=0, prompt=first_prompt(run.task),
        best_path=None,
    )  # fmt: skip
    # Another seed, or a request the pipeline refuses (a size its patches cannot tile): neither may reach the run.
    change = {"seeds": (99,)} if wrong == "seed" else {"width": 37}
    head_start.begin(model, dataclasses.replace(planned.request, **change), str(run_dir))

    plain_run(tiny_sd3_dir, run_dir, max_iterations=1)
    plain_run(tiny_sd3_dir, tmp_path / "plain" / "run", max_iterations=1)
    assert [r.get("head_start") for r in images_traced(run_dir)] == ["discarded"]
    assert (run_dir / "01.png").read_bytes() == (tmp_path / "plain" / "run" / "01.png").read_bytes()
    assert not head_start.pending()


@pytest.mark.parametrize(
    ("knobs", "known"),
    [({"strategy": "climbing"}, True), ({"strategy": "img2img"}, True), ({"strategy": "agent"}, False),
     ({"strategy": "evaluator-optimizer"}, False), ({"init_image": "picture.png"}, False),
     ({"draft_steps": 2, "candidates": 2}, False),  # the first round asks for drafts
     ({"draft_steps": 2}, True),  # a lone first candidate has no best to beat: drawn in full at once
     ({"draft_steps": 2, "candidates": 2, "draft_walk": True}, True)],  # a walk's drafts are its images
)  # fmt: skip
def test_only_runs_of_the_shared_loop_without_a_picture_know_their_first_request_early(
    knobs: dict[str, object], known: bool
) -> None:
    assert first_request_known(RunSettings(**knobs)) is known  # type: ignore[arg-type]


def test_no_head_start_on_resume_fork_or_init_image(tmp_path, tiny_sd3_dir, capsys):
    run_dir = tmp_path / "run"
    steady = {"judge": [{"score": 3, "done": False}] * 12}
    with FakeOllama(models={"fake-vlm:1b": ["vision"]}, replies=steady, fail_first=100) as fake:
        base = ["--eval-model", "ollama:fake-vlm:1b", "--ollama-url", fake.url, "--critic-retries", "0"]
        argv = [*flags(tiny_sd3_dir, run_dir), *base]
        assert main(["run", *argv]) != 0  # the critic fails after image 1 is drawn: the run is kept
        assert [r.get("head_start") for r in images_traced(run_dir)] == ["used"]
        fake.fail_first = 0
        assert resume_run(str(run_dir), out=io.StringIO()).status == "done"
        assert [r.get("head_start") for r in images_traced(run_dir)] == ["used", None]

        assert main(["fork", str(run_dir), "--from-iteration", "1", "--output-dir", str(tmp_path / "fork")]) == 0
    assert [r.get("head_start") for r in images_traced(tmp_path / "fork") if r["iteration"] > 1] == [None]

    picture = tmp_path / "picture.png"
    picture.write_bytes((run_dir / "01.png").read_bytes())
    assert main(["run", *flags(tiny_sd3_dir, tmp_path / "init"), "--init-image", str(picture)]) == 0
    assert all("head_start" not in r for r in images_traced(tmp_path / "init"))
    assert not head_start.pending()


@pytest.mark.slow
def test_ctrl_c_while_the_first_image_is_drawn_ahead_finishes_it_and_the_run_resumes(tmp_path, start_cli):
    proc = start_cli("demo", "--goal", GOAL, "--seed", "3", "--max-iterations", "2", "--image-model",
                     "sketch:delay=5", "--output-dir", "r")  # the sketch has a head start unasked  # fmt: skip
    run = tmp_path / "r"
    wait_for(lambda: checkpointed(run), timeout=30)  # the graph is at its first step while image 1 is still drawn ahead
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in out, out
    assert "resume with:" in out
    assert images_in(run)[0] == "01.png" and images_traced(run)[0]["head_start"] == "used"
    again = refineloop("resume", str(run), cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert images_in(run) == ["01.png", "02.png"]


@pytest.mark.parametrize(
    ("image_model", "url", "shares"),
    [("{tiny}", "", True), ("{tiny}", "http://localhost:11434", True), ("{tiny}", "http://10.0.0.5:11434", False),
     ("a1111", "", False), ("sketch", "", False)],
)  # fmt: skip
def test_a_local_ollama_critic_is_loaded_before_a_diffusers_model_is_placed(
    image_model: str, url: str, shares: bool, tiny_sd3_dir: Path
) -> None:
    settings = RunSettings(image_model=image_model.format(tiny=tiny_sd3_dir), eval_model="ollama:v", ollama_url=url)
    assert shares_memory_with_the_critic(settings) is shares
    assert shares_memory_with_the_critic(dataclasses.replace(settings, eval_model="demo")) is False


def test_beside_a_local_ollama_critic_the_critic_loads_once_then_the_first_image_is_drawn_ahead(
    tmp_path, tiny_sd3_dir, capsys
):
    with FakeOllama(models={"fake-vlm:1b": ["vision"]}, resident_bytes=(3_000_000_000, 3_000_000_000)) as fake:
        critic = ["--eval-model", "ollama:fake-vlm:1b", "--ollama-url", fake.url, "--max-iterations", "1"]
        assert main(["run", *flags(tiny_sd3_dir, tmp_path / "run"), *critic]) == 0
        loads = fake.chat_requests("load")
    assert len(loads) == 1  # loaded once (first where a GPU is placed on, else while the first image draws)
    assert "holds 3.0 GB on the GPU" in capsys.readouterr().out.splitlines()[0]
    assert [r.get("head_start") for r in images_traced(tmp_path / "run")] == ["used"]


@pytest.mark.parametrize("capabilities", [["completion"], ["completion", "vision"]])
def test_with_a_gpu_the_critic_loaded_first_is_checked_before_it_takes_memory(
    tmp_path, tiny_sd3_dir, capsys, monkeypatch, capabilities
):
    # A GPU is what makes the head start load a local critic before the image model; this machine has none.
    monkeypatch.setattr("refineloop.apps.head_start._has_a_gpu", lambda: True)
    with FakeOllama(models={"fake-vlm:1b": capabilities}) as fake:
        critic = ["--eval-model", "ollama:fake-vlm:1b", "--ollama-url", fake.url, "--max-iterations", "1"]
        code = main(["run", *flags(tiny_sd3_dir, tmp_path / "run"), *critic])
        loads = fake.chat_requests("load")
    err = capsys.readouterr().err
    if "vision" in capabilities:
        assert code == 0 and len(loads) == 1, "loaded once, before the image model"
    else:
        assert code != 0 and "cannot see images" in err and err.count("\n") == 1, err
        assert loads == [], "a model the run refuses is never loaded into the server's memory"
        assert not (tmp_path / "run").exists(), "nothing is left of a run refused before it began"


def test_a_draw_on_every_cpu_core_leaves_none_to_the_start_up(tiny_sd3_dir: Path) -> None:
    model = MODELS.image_model(RunSettings(image_model=str(tiny_sd3_dir), device="cpu"))
    sketch = MODELS.image_model(RunSettings(image_model="sketch"))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(os.cpu_count() or 1)
        assert not leaves_a_core_free(model) and leaves_a_core_free(sketch)
        torch.set_num_threads(1)
        assert leaves_a_core_free(model) is ((os.cpu_count() or 1) > 1)
    finally:
        torch.set_num_threads(threads)
