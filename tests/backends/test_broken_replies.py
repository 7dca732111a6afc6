"""Every server refineloop talks to, answering one endpoint with a broken reply at each phase of a run.

A proxy (tests/spoiling_proxy.py) sits between the real clients and a fake server and spoils one endpoint's
answers: binary bytes, a body that is not UTF-8, a body or stream cut half-way, a web page. Whatever the phase
(the start-up probes, the critic's warm-up, a call in the middle of the run), the CLI must end with one line that
names the server's URL, never a traceback, and a run that had made images keeps them and resumes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from refineloop.cli.main import main
from tests.conftest import images_in
from tests.fake_a1111 import fake_a1111
from tests.fake_comfyui import api_workflow, fake_comfyui
from tests.fake_ollama import FakeOllama
from tests.fake_openai import VISION, FakeOpenAI
from tests.spoiling_proxy import KINDS, spoiling_proxy

pytestmark = pytest.mark.slow

KEY = "sk-test-0123456789abcdef"
JUDGE = {"score": 3, "critique": "warm", "verdict": "CONTINUE", "next_idea": "a hotdog on a glowing grill"}

#: (server, phase, endpoint, from which of its calls on the answers are spoilt, extra flags)
CASES = [
    ("ollama", "probe", "/api/tags", 1, ()),
    ("ollama", "probe", "/api/show", 1, ()),
    ("ollama", "warm-up", "/api/chat", 1, ("--critic-keep-alive", "10m")),
    ("ollama", "warm-up", "/api/ps", 1, ()),
    ("ollama", "mid-run", "/api/chat", 3, ()),
    ("openai", "probe", "/v1/models", 1, ()),
    ("openai", "probe", "/v1/chat/completions", 1, ()),
    ("openai", "probe-image", "/v1/chat/completions", 2, ()),
    ("openai", "mid-run", "/v1/chat/completions", 4, ()),
    ("openai", "mid-run-stream", "/v1/chat/completions", 4, ("--openai-stream",)),
    ("comfyui", "probe", "/system_stats", 1, ()),
    ("comfyui", "mid-run", "/prompt", 2, ()),
    ("comfyui", "mid-run", "/history", 2, ()),
    ("comfyui", "mid-run", "/view", 2, ()),
    ("comfyui", "mid-run", "/upload/image", 1, ("--strategy", "img2img")),  # image 2 starts from image 1
    ("a1111", "probe", "/sdapi/v1/sd-models", 1, ()),
    ("a1111", "mid-run", "/sdapi/v1/txt2img", 2, ()),
]


@contextmanager
def server(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """A healthy fake of `kind`: its URL and the CLI flags of a run that uses it."""
    common = ["--seed", "2", "--max-iterations", "3", "--strategy", "climbing", "--final-pick", "0"]
    if kind == "ollama":
        with FakeOllama(models={"llava:7b": ["completion", "vision"]}) as fake:
            yield fake.url, [*common, "--eval-model", "ollama:llava:7b", "--image-model", "sketch:size=64"]
    elif kind == "openai":
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        judge = [json.dumps({**JUDGE, "score": n}) for n in range(2, 9)]
        with FakeOpenAI({"vis": VISION}, {"judge": judge}) as fake:
            yield fake.url, [*common, "--eval-model", "openai:vis", "--image-model", "sketch:size=64"]
    elif kind == "comfyui":
        workflow = tmp_path / "workflow_api.json"
        workflow.write_text(json.dumps(api_workflow()))
        with fake_comfyui() as (_, url):
            yield url, [*common, "--image-model", f"comfyui:{workflow}"]
    else:
        with fake_a1111() as (_, url):
            yield url, [*common, "--image-model", "a1111", "--width", "64", "--height", "64"]


#: Ollama streams its chat answers as lines that httpx decodes leniently: a stray byte that is not UTF-8 becomes a
#: replacement character in the reply's text, which the run reads like any odd reply.
LENIENT = {("ollama", "mid-run", "encoding")}

#: Endpoints whose answer refineloop can do without: a broken model listing makes the probe ask the model directly.
OPTIONAL = {"/v1/models"}

URL_FLAG = {"ollama": "--ollama-url", "openai": "--openai-url", "comfyui": "--comfyui-url", "a1111": "--a1111-url"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("name", "phase", "path", "nth", "extra"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2].rsplit('/', 1)[-1]}" for c in CASES]
)
def test_a_broken_reply_is_one_line_naming_the_server(
    tmp_path, monkeypatch, capsys, name, phase, path, nth, extra, kind
):
    out = tmp_path / "run"
    with ExitStack() as stack:
        upstream, flags = stack.enter_context(server(name, tmp_path, monkeypatch))
        # A ComfyUI client polls /history/<id> until its prompt is done: the nth prompt's, not the nth poll.
        distinct = path in ("/history", "/view")
        proxy, url = stack.enter_context(spoiling_proxy(upstream, path, kind, nth, distinct=distinct))
        code = main(["run", *flags, *extra, URL_FLAG[name], url, "--output-dir", str(out)])
        assert proxy.spoilt, f"no answer of {path} was spoilt"
        text = capsys.readouterr()
        shown = text.out + text.err
        if path in OPTIONAL or (name, phase, kind) in LENIENT:
            assert code == 0 and "Traceback" not in shown, shown
            return
        errors = [line for line in shown.splitlines() if line.startswith(("error:", "refineloop: error:"))]
        assert "Traceback" not in shown and len(errors) == 1, shown
        assert code in (1, 2), errors
        assert url in errors[0], errors[0]
        if not phase.startswith("mid-run"):
            assert not out.exists(), "a run that never started left a folder"
        else:
            kept = images_in(out)
            assert kept and "refineloop resume" in shown, shown
            assert main(["resume", str(out), URL_FLAG[name], upstream]) == 0
            assert images_in(out)[: len(kept)] == kept


CUTS = [
    ("ollama", "lines", ()),
    ("openai", "lines", ("--openai-stream",)),
    ("ollama", "cut", ()),
    ("openai", "cut", ("--openai-stream",)),
    ("openai", "cut", ()),
]


@pytest.mark.parametrize(("name", "cut", "extra"), CUTS, ids=[f"{n}-{c}{'-stream' if e else ''}" for n, c, e in CUTS])
def test_an_answer_cut_off_part_way_is_tried_again_then_one_line(tmp_path, monkeypatch, capsys, name, cut, extra):
    """`lines`: every line the client reads is whole; only the stream's closing line (Ollama's `done`, OpenAI's
    last chunk with its `finish_reason`) never comes, so it must not pass for a short answer. `cut`: the answer
    stops mid-line or mid-JSON. Either is a transfer broken off: tried again like a dropped connection, then one
    line; the run resumes."""
    out = tmp_path / "run"
    path = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}[name]
    with ExitStack() as stack:
        upstream, flags = stack.enter_context(server(name, tmp_path, monkeypatch))
        proxy, url = stack.enter_context(spoiling_proxy(upstream, path, cut, {"ollama": 3, "openai": 4}[name]))
        code = main(["run", *flags, *extra, "--critic-retries", "1", URL_FLAG[name], url, "--output-dir", str(out)])
        text = capsys.readouterr()
        shown = text.out + text.err
        errors = [line for line in shown.splitlines() if line.startswith("error:")]
        assert code == 1 and "Traceback" not in shown and len(errors) == 1, shown
        assert url in errors[0] and "cut off" in errors[0] and "resume" in errors[0], errors[0]
        assert proxy.spoilt == 2  # the call and its one retry
        trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
        assert [entry["kind"] for entry in trace if entry["kind"] in ("retry", "chat-error")] == ["retry", "chat-error"]
        kept = images_in(out)
        assert kept and main(["resume", str(out), URL_FLAG[name], upstream]) == 0
        assert images_in(out)[: len(kept)] == kept


@pytest.mark.parametrize("name", ["ollama", "openai"])
def test_judge_check_meets_a_broken_reply_in_one_line(tmp_path, monkeypatch, capsys, name):
    """`judge-check` calls the critic outside a run: the same check names the server there too."""
    path = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}[name]
    with ExitStack() as stack:
        upstream, flags = stack.enter_context(server(name, tmp_path, monkeypatch))
        model = flags[flags.index("--eval-model") + 1]
        proxy, url = stack.enter_context(spoiling_proxy(upstream, path, "html", {"ollama": 3, "openai": 4}[name]))
        sizes = ["--images", "2", "--samples", "2", "--pairs", "1", "--image-model", "sketch:size=64"]
        where = [URL_FLAG[name], url, "--output-dir", str(tmp_path / "c")]
        code = main(["judge-check", "--eval-model", model, *sizes, *where])
    text = capsys.readouterr()
    errors = [line for line in text.err.splitlines() if line.startswith("refineloop: error:")]
    assert code == 2 and proxy.spoilt and "Traceback" not in text.out + text.err and len(errors) == 1, text.err
    assert url in errors[0] and "not" in errors[0], errors[0]
