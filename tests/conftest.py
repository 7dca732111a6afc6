"""Shared fixtures: scripted critics, model caches and CLI helpers, all local and offline."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from refineloop.backends.chat.invoke import call_kind, message_text
from refineloop.backends.demo.sketch import SketchImageModel
from refineloop.backends.model_cache import ModelCache
from refineloop.settings import RunSettings
from tests.tiny_models import build_tiny_sd, build_tiny_sd3

ROOT = Path(__file__).resolve().parent.parent

# The PostgreSQL and Ray session fixtures, registered once for the whole suite: imported into each test module
# that used them, they were one fixture per module, and the session started a PostgreSQL cluster for each.
pytest_plugins = ["tests.scale_fixtures"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under the test entry point (tests/run-all) every tier is installed, so a skip hides a broken set-up:
    report it as a failure that names the reason."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("REFINELOOP_NO_SKIPS") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under tests/run-all, which installs every tier: {reason}"


class ScriptedCritic(BaseChatModel):
    """A chat model that answers the judge from a script and records every call.

    `judge` holds the judge replies in order (a reply may be an exception instance to raise). The proposer
    answers `IDEA: idea N` and the summarizer echoes the description's first words. `calls` is shared by
    every copy (model_copy is shallow), so temperature copies record into the same list.

    The checklist judge's two prompts (refineloop.prompts) are answered too: the writer (`QUESTION:` in the
    system text, role "checklist-write") from `questions_reply`, and the asker (`Q1:`, role "checklist") from
    `checklist_replies`, whose entries may be AIMessages (to carry log probabilities); once those run out every
    question is answered no.
    """

    judge: list[Any]
    calls: list[dict[str, Any]]
    propose_replies: list[str] = []
    compare_replies: list[str] = []
    questions_reply: str = "QUESTION: Is the hotdog visibly hot? | WEIGHT: 2"
    checklist_replies: list[Any] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-critic"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        system = str(messages[0].content)
        has_image = any(
            isinstance(m.content, list) and any(b.get("type") == "image" for b in m.content if isinstance(b, dict))
            for m in messages
        )
        role = call_kind(run_manager)  # what refineloop asks, as every critic call says in its metadata
        call = {"role": role, "system": system, "temperature": self.temperature_value(), "image": has_image}
        call["messages"] = len(messages)
        call["user"] = message_text(messages[-1])
        self.calls.append(call)
        if role == "checklist":
            reply = self.checklist_replies.pop(0) if self.checklist_replies else "Q1: no"
            message = reply if isinstance(reply, AIMessage) else AIMessage(content=reply)
            return ChatResult(generations=[ChatGeneration(message=message)])
        if role == "checklist-write":
            text = self.questions_reply
        elif role == "compare":
            text = self.compare_replies.pop(0) if self.compare_replies else "WINNER: A"
        elif role == "judge":
            reply = self.judge.pop(0) if self.judge else "SCORE: 1\nCONTINUE: keep going"
            if isinstance(reply, BaseException):
                raise reply
            text = reply
        elif role == "propose":
            n = sum(c["role"] == "propose" for c in self.calls)
            text = self.propose_replies.pop(0) if self.propose_replies else f"IDEA: proposed idea number {n}"
        else:
            text = " ".join(str(messages[-1].content).split("Description:")[-1].split()[:12])
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def temperature_value(self) -> float | None:
        return getattr(self, "temperature", None)


class TemperatureCritic(ScriptedCritic):
    """ScriptedCritic with a temperature field, like real chat models."""

    temperature: float = 0.5


def judge_reply(score: int, verdict: str = "CONTINUE", idea: str | None = None) -> str:
    """A well-formed judge reply."""
    tail = f"DONE: {idea or 'finished'}" if verdict == "DONE" else f"CONTINUE: {idea or f'hotter than {score}'}"
    return f"SCORE: {score}\nCRITIQUE: scripted critique {score}\n{tail}"


@pytest.fixture
def scripted() -> Callable[..., tuple[ModelCache, ScriptedCritic]]:
    """Build a model cache holding the sketch painter and a scripted critic named `scripted`."""

    def make(replies: list[Any], **fields: Any) -> tuple[ModelCache, ScriptedCritic]:
        critic = TemperatureCritic(judge=list(replies), calls=[], **fields)
        cache = ModelCache()
        cache.register_chat("scripted", critic)
        cache.register_image("sketch", SketchImageModel(size=64))
        return cache, critic

    return make


@pytest.fixture
def run_settings(tmp_path: Path) -> Callable[..., RunSettings]:
    """Settings for a scripted run in a fresh folder."""

    def make(**overrides: Any) -> RunSettings:
        values: dict[str, Any] = {
            "eval_model": "scripted",
            "image_model": "sketch",
            "seed": 11,
            "output_dir": str(tmp_path / "run"),
            "max_iterations": 5,
            # A scripted critic answers in the order calls arrive, not by what they ask: one call at a time keeps
            # its script aligned (tests/test_concurrency.py runs fan-outs against critics that read the request).
            "critic_concurrency": 1,
        }
        values.update(overrides)
        return RunSettings(**values)

    return make


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion 1.x-style pipeline folder (CLIP only, 77 tokens, 64 px)."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipe")


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion 3-style pipeline folder (2 CLIP + T5 with 256 tokens, 64 px)."""
    return build_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3") / "pipe")


@pytest.fixture(scope="session")
def tiny_lora(tiny_sd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight LoRA on the tiny UNet's attention projections, saved the way diffusers saves one."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(1)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd_dir), safety_checker=None)
    # Random A and B (a trained LoRA's B is not zero either), large enough to move a 2-step image.
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    pipe.unet.add_adapter(config)
    folder = tmp_path_factory.mktemp("lora")
    StableDiffusionPipeline.save_lora_weights(
        str(folder), unet_lora_layers=get_peft_model_state_dict(pipe.unet), weight_name="tiny.safetensors"
    )
    return folder / "tiny.safetensors"


@pytest.fixture
def quiet() -> io.StringIO:
    """Where a run's progress goes in tests."""
    return io.StringIO()


def cli_env() -> dict[str, str]:
    """Environment for CLI subprocesses: this checkout first on the path, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def refineloop(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion."""
    return subprocess.run(
        [sys.executable, "-m", "refineloop", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def batch_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`refineloop batch ...` to completion."""
    return refineloop("batch", *args, cwd=cwd, timeout=timeout)


def start_batch_cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """`refineloop batch ...` in the background (output merged, read at the end)."""
    return subprocess.Popen(
        [sys.executable, "-m", "refineloop", "batch", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def start_cli_in(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """The CLI in the background in `cwd` (output merged, read at the end)."""
    return subprocess.Popen(
        [sys.executable, "-m", "refineloop", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def start_cli(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start the CLI in the background; every process still running at the end is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = start_cli_in(tmp_path, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll until `predicate` holds; fail the test after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


class OutputWatch:
    """The merged output of a background CLI process, read line by line as it comes, so a test can wait for a
    line (a condition) instead of sleeping and hoping the process got there."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None, "start the process with stdout=PIPE"
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, part: str, timeout: float = 60.0) -> None:
        """Wait until a line holding `part` has been printed; fail at once if the process ends without it."""

        def printed() -> bool:
            if any(part in line for line in self.lines):
                return True
            if self.proc.poll() is not None:
                self._reader.join(5)
                if not any(part in line for line in self.lines):
                    raise AssertionError(f"the process ended without printing {part!r}:\n{self.text()}")
                return True
            return False

        wait_for(printed, timeout)

    def finish(self, timeout: float = 60.0) -> str:
        """Wait for the process to end; everything it printed."""
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        return self.text()


def checkpointed(run_dir: Path) -> bool:
    """Whether a run has its first checkpoint (the setup step's): the run itself has begun."""
    from refineloop.apps.reading import read_values

    try:
        return bool(read_values(str(run_dir), run_dir.name).get("run_dir"))
    except Exception:  # not there yet, or being written
        return False


def images_in(run_dir: Path) -> list[str]:
    """Names of the NN.png images in a run folder, in order."""
    return sorted((p.name for p in run_dir.iterdir() if re.fullmatch(r"\d+\.png", p.name)), key=lambda n: int(n[:-4]))


# --- Agent modes: a scripted tool-calling model (appended for tests/test_agent.py and the evaluator-optimizer) ---

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from pydantic import Field  # noqa: E402


class ToolCallingFake(GenericFakeChatModel):
    """A scripted chat model that accepts tools: `bind_tools` returns itself, so scripted AIMessages may carry
    tool calls. Every call's messages are kept in `seen`; once the script runs out it answers `exhausted`."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)
    tools: list[Any] = Field(default_factory=list)
    exhausted: str = "the script has run out"

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> ToolCallingFake:
        """Keep the tools for inspection; the script already says which one is called."""
        self.tools = list(tools)
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append(list(messages))
        try:
            return super()._generate(messages, stop, run_manager, **kwargs)
        except StopIteration:
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.exhausted))])


def tool_call(name: str, reason: str = "") -> AIMessage:
    """A reply that calls one tool, the way a tool-calling model answers."""
    args = {"reason": reason} if reason else {}
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call-{name}"}])


@pytest.fixture
def agent_model() -> Callable[..., ToolCallingFake]:
    """Build a ToolCallingFake from a script of AIMessages (or plain strings)."""

    def make(script: list[Any], **fields: Any) -> ToolCallingFake:
        return ToolCallingFake(messages=iter(script), **fields)

    return make


# --- Studio: one `langgraph dev` server for the session (appended for tests/test_studio.py and test_review.py) ---

import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import urllib.request  # noqa: E402

STUDIO_STARTUP_SECONDS = 60


def free_port() -> int:
    """A loopback port nobody listens on right now (the default 2024 may be taken)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    """Whether the server answers GET /ok."""
    try:
        with urllib.request.urlopen(f"{url}/ok", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def studio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `langgraph dev` on a free port, wait for /ok, yield its URL, stop its process group.

    It runs from a temporary copy of the project, so its `.langgraph_api/` store and every run folder land under
    pytest's tmp dirs, never in the checkout; one server serves every test file (startup costs seconds).
    """
    home = tmp_path_factory.mktemp("studio")
    # Graph paths in langgraph.json resolve against the working directory, so the copy holds both.
    shutil.copy(ROOT / "langgraph.json", home / "langgraph.json")
    shutil.copytree(ROOT / "refineloop", home / "refineloop", ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_", "LANGCHAIN_"))}
    env.update(LANGGRAPH_CLI_NO_ANALYTICS="1", LANGGRAPH_NO_VERSION_CHECK="true")
    log = home / "server.log"
    langgraph = Path(sys.executable).with_name("langgraph")
    command = [str(langgraph), "dev", "--no-browser", "--no-reload", "--port", str(port)]
    with open(log, "wb") as sink:
        # A session of its own, so the server and anything it spawns stop together.
        proc = subprocess.Popen(
            [*command, "--config", str(home / "langgraph.json")],
            cwd=home,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.time() + STUDIO_STARTUP_SECONDS
        while not healthy(url):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"langgraph dev did not come up:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


# --- Images of two runs (appended for provenance, issue 14) ---


def same_image(a: Path, b: Path) -> bool:
    """Whether two runs made the same image from the same inputs: equal pixels and equal provenance, except the
    run id that names each run (so the files' bytes differ by design)."""
    from PIL import Image

    from refineloop.run_folder.provenance import read_provenance

    with Image.open(a) as first, Image.open(b) as second:
        if first.size != second.size or first.tobytes() != second.tobytes():
            return False
    records = [{k: v for k, v in read_provenance(p).items() if k != "run_id"} for p in (a, b)]
    return records[0] == records[1]
