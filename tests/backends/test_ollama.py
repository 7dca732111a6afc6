"""refineloop.backends.chat.ollama through the real ChatOllama client, against the scripted fake server."""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_ollama import ChatOllama
from PIL import Image
from pydantic import BaseModel, Field

from refineloop.backends.chat.invoke import judge_copy, with_temperature
from refineloop.backends.chat.ollama import (
    OllamaInfo,
    explain_connection_error,
    load_ollama,
    ollama_capabilities,
    probe_ollama,
    resolve_base_url,
    structured_judge,
    supports_json_schema,
)
from refineloop.errors import ModelError
from tests.fake_ollama import GARBAGE_REPLIES, FakeOllama, Reply, detect_role, fill_schema

MODELS = {
    "llava:7b": ["completion", "vision"],
    "llama3:8b": ["completion", "tools"],
    "old-vision:latest": None,  # a server too old to list capabilities
    "qwen3:4b": ["completion", "tools", "thinking"],
}
JUDGE_SYSTEM = "You judge images. Give a score from 1 to 10 and say what to improve."


class Verdict(BaseModel):
    """A judge's structured answer, as the loop might define it."""

    score: int = Field(ge=1, le=10)
    done: bool
    critique: str


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(models=MODELS) as server:
        yield server


@pytest.fixture(scope="module")
def png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 10)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def judge_messages(png_b64: str) -> list:
    return [
        SystemMessage(JUDGE_SYSTEM),
        HumanMessage(
            content=[
                {"type": "text", "text": "Prompt: a campfire at night. Judge this image."},
                {"type": "image", "base64": png_b64, "mime_type": "image/png"},
            ]
        ),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text
    return text


# -- loading ---------------------------------------------------------------------------------------------


def test_load_vision_model(fake: FakeOllama) -> None:
    llm = load_ollama("llava:7b", base_url=fake.url, timeout=42)
    assert isinstance(llm, ChatOllama)
    assert llm.base_url == fake.url
    assert llm.temperature == 0
    timeout = llm.client_kwargs["timeout"]
    assert timeout.read == 42 and timeout.connect <= 5
    assert ollama_capabilities(llm) == ("completion", "vision")
    assert [r["path"] for r in fake.requests] == ["/api/tags", "/api/show"]
    assert fake.requests[1]["body"] == {"model": "llava:7b"}


def test_probe_reports_capabilities(fake: FakeOllama) -> None:
    info = probe_ollama("qwen3:4b", base_url=fake.url, require_vision=False)
    caps = ("completion", "tools", "thinking")
    assert info == OllamaInfo(base_url=fake.url, model="qwen3:4b", capabilities=caps)
    assert info.vision is False


def test_refuses_model_without_vision(fake: FakeOllama) -> None:
    with pytest.raises(ModelError) as caught:
        load_ollama("llama3:8b", base_url=fake.url)
    text = assert_one_line(caught.value)
    assert "'llama3:8b' cannot see images" in text
    assert "completion, tools" in text and "llava" in text


def test_text_role_skips_the_vision_check(fake: FakeOllama) -> None:
    llm = load_ollama("llama3:8b", base_url=fake.url, require_vision=False)
    assert ollama_capabilities(llm) == ("completion", "tools")


def test_warns_and_goes_on_without_capabilities(fake: FakeOllama) -> None:
    with pytest.warns(UserWarning, match="could not confirm that 'old-vision' takes images"):
        llm = load_ollama("old-vision", base_url=fake.url)  # untagged means :latest, as in Ollama
    assert ollama_capabilities(llm) is None


def test_unreachable_url_fails_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ModelError) as caught:
        load_ollama("llava:7b", base_url=url)
    assert time.monotonic() - started < 5
    text = assert_one_line(caught.value)
    assert f"cannot reach Ollama at {url}" in text and "ollama serve" in text


def test_unknown_model_says_how_to_pull(fake: FakeOllama) -> None:
    with pytest.raises(ModelError) as caught:
        load_ollama("gemma3:4b", base_url=fake.url)
    text = assert_one_line(caught.value)
    assert "`ollama pull gemma3:4b`" in text and fake.url in text and "llava:7b" in text


def test_not_an_ollama_server() -> None:
    # A server that answers 404 everywhere stands in for some other service on the port.
    with FakeOllama(models={}) as other:
        bad = f"{other.url}/nothing-here"
        with pytest.raises(ModelError, match="not an Ollama server"):
            probe_ollama("llava:7b", base_url=bad)


def test_ollama_host_is_honoured(fake: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> None:
    host_port = fake.url.removeprefix("http://")
    monkeypatch.setenv("OLLAMA_HOST", host_port)  # no scheme, as people often set it
    llm = load_ollama("llava:7b")
    assert llm.base_url == fake.url
    llm.invoke("hello")
    assert len(fake.chat_requests()) == 1


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost:1234", "http://localhost:1234"),
        ("10.0.0.5", "http://10.0.0.5:11434"),
        ("http://box:8080/", "http://box:8080"),
        ("https://ollama.example.com", "https://ollama.example.com"),
        ("[::1]:7000", "http://[::1]:7000"),
    ],
)
def test_resolve_base_url(given: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert resolve_base_url(given) == expected
    monkeypatch.setenv("OLLAMA_HOST", given)
    assert resolve_base_url(None) == expected


def test_resolve_base_url_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert resolve_base_url() == "http://127.0.0.1:11434"


# -- role copies -----------------------------------------------------------------------------------------


def test_judge_model_is_cold_and_does_not_think(fake: FakeOllama, png_b64: str) -> None:
    llm = with_temperature(load_ollama("llava:7b", base_url=fake.url), 0.7)
    judge = judge_copy(llm)
    judge.invoke(judge_messages(png_b64))
    sent = fake.chat_requests()[-1]
    assert sent["options"]["temperature"] == 0
    assert sent["think"] is False
    assert llm.temperature == 0.7 and llm.reasoning is None  # the original is untouched


def test_judge_model_turns_thinking_off_on_a_reasoning_model(fake: FakeOllama) -> None:
    fake.script([Reply(content="7", thinking="let me look closely")])
    llm = judge_copy(load_ollama("qwen3:4b", base_url=fake.url, require_vision=False))
    assert llm.invoke("score it").content == "7"
    assert fake.chat_requests()[-1]["think"] is False


def test_with_temperature_keeps_other_options(fake: FakeOllama) -> None:
    llm = ChatOllama(model="llava:7b", base_url=fake.url, temperature=0.1, seed=7, num_ctx=2048)
    hot = with_temperature(llm, 0.9)
    hot.invoke("propose a prompt")
    options = fake.chat_requests()[-1]["options"]
    assert options == {"temperature": 0.9, "seed": 7, "num_ctx": 2048}
    assert llm.temperature == 0.1


def test_copies_keep_recorded_capabilities(fake: FakeOllama) -> None:
    llm = load_ollama("llava:7b", base_url=fake.url)
    assert ollama_capabilities(judge_copy(with_temperature(llm, 1.2))) == ("completion", "vision")


def test_copies_of_models_without_temperature_are_the_model() -> None:
    plain = FakeListChatModel(responses=["x"])
    assert with_temperature(plain, 0.5) is plain
    assert judge_copy(plain) is plain
    assert ollama_capabilities(plain) is None


# -- images and structured output ------------------------------------------------------------------------


def test_image_block_arrives_as_base64(fake: FakeOllama, png_b64: str) -> None:
    llm = load_ollama("llava:7b", base_url=fake.url)
    llm.invoke(judge_messages(png_b64))
    sent = fake.chat_requests("judge")
    assert len(sent) == 1
    images = sent[0]["messages"][-1]["images"]
    assert images == [png_b64]
    assert base64.b64decode(images[0]).startswith(b"\x89PNG")
    assert sent[0]["messages"][0] == {"role": "system", "content": JUDGE_SYSTEM}


def test_structured_judge_sends_schema_and_parses(fake: FakeOllama, png_b64: str) -> None:
    fake.script({"judge": [{"score": 8, "done": False, "critique": "more sparks"}]})
    judge = structured_judge(judge_copy(load_ollama("llava:7b", base_url=fake.url)), Verdict)
    assert judge is not None
    out = judge.invoke(judge_messages(png_b64))
    assert out["parsed"] == Verdict(score=8, done=False, critique="more sparks")
    assert out["parsing_error"] is None
    fmt = fake.chat_requests()[-1]["format"]
    assert fmt["type"] == "object" and set(fmt["properties"]) == {"score", "done", "critique"}


@pytest.mark.parametrize("garbage", GARBAGE_REPLIES)
def test_structured_judge_survives_garbage(fake: FakeOllama, png_b64: str, garbage: str) -> None:
    fake.script({"judge": [garbage]})
    judge = structured_judge(load_ollama("llava:7b", base_url=fake.url), Verdict)
    assert judge is not None
    out = judge.invoke(judge_messages(png_b64))
    assert out["parsed"] is None
    assert out["parsing_error"] is not None
    assert out["raw"].content == garbage  # kept for a text parser to try


def test_structured_judge_default_reply_fits_the_schema(fake: FakeOllama, png_b64: str) -> None:
    judge = structured_judge(load_ollama("llava:7b", base_url=fake.url), Verdict)
    assert judge is not None
    scores = [judge.invoke(judge_messages(png_b64))["parsed"].score for _ in range(3)]
    assert scores == [4, 5, 6]  # the fake's default judge climbs


def test_json_schema_support_is_ollama_only(fake: FakeOllama) -> None:
    llm = ChatOllama(model="llava:7b", base_url=fake.url)
    assert supports_json_schema(llm)
    assert supports_json_schema(llm.bind(stop=["\n"]))
    plain = FakeListChatModel(responses=["x"])
    assert not supports_json_schema(plain)
    assert structured_judge(plain, Verdict) is None


# -- failures during a run -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expect"),
    [
        ({"error": "something broke in the runner"}, "failed (something broke in the runner)"),
        ({"error": "internal", "status": 500}, "failed (HTTP 500: internal)"),
        (
            {"error": 'model "llava:7b" not found, try pulling it first', "status": 404},
            "`ollama pull llava:7b`",
        ),
        (
            {"error": "model requires more system memory (9.1 GiB) than is available (4.0 GiB)"},
            "free memory or use a smaller model",
        ),
    ],
)
def test_error_replies_are_explained(fake: FakeOllama, reply: dict, expect: str) -> None:
    fake.script([reply])
    llm = load_ollama("llava:7b", base_url=fake.url)
    with pytest.raises(ollama.ResponseError) as caught:
        llm.invoke("hi")
    err = explain_connection_error(caught.value, fake.url, "llava:7b")
    assert isinstance(err, ModelError)
    text = assert_one_line(err)
    assert expect in text and fake.url in text


def test_thinking_on_a_model_that_cannot_think_is_refused(fake: FakeOllama) -> None:
    llm = ChatOllama(model="llava:7b", base_url=fake.url, reasoning=True)
    with pytest.raises(ollama.ResponseError) as caught:
        llm.invoke("hi")
    err = explain_connection_error(caught.value, fake.url, "llava:7b")
    assert err is not None and "does not support thinking" in str(err)


def test_other_errors_are_not_explained() -> None:
    assert explain_connection_error(ValueError("bad score"), "http://127.0.0.1:11434") is None
    assert explain_connection_error(KeyError("x"), "http://127.0.0.1:11434") is None


def test_explains_a_chained_cause() -> None:
    try:
        try:
            raise httpx.ConnectError("refused")
        except httpx.ConnectError as inner:
            raise RuntimeError("node failed") from inner
    except RuntimeError as outer:
        err = explain_connection_error(outer, "127.0.0.1:9")
    assert err is not None and "http://127.0.0.1:9 stopped answering" in str(err)


def test_server_killed_between_calls(fake: FakeOllama, png_b64: str) -> None:
    llm = judge_copy(load_ollama("llava:7b", base_url=fake.url))
    llm.invoke(judge_messages(png_b64))
    url = fake.url
    fake.stop()
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        llm.invoke(judge_messages(png_b64))
    assert time.monotonic() - started < 5
    err = explain_connection_error(caught.value, url, "llava:7b")
    assert err is not None
    text = assert_one_line(err)
    assert f"Ollama at {url} stopped answering" in text and "ollama serve" in text
    fake.start()  # Ollama is back on the same port: the same model object works again
    assert fake.url == url
    llm.invoke(judge_messages(png_b64))


def test_server_dies_mid_reply(fake: FakeOllama) -> None:
    fake.script([Reply(content="SCORE: 7/10 and some more words", chunks=4, drop_after=2)])
    llm = load_ollama("llava:7b", base_url=fake.url)
    with pytest.raises(Exception) as caught:
        llm.invoke("hi")
    err = explain_connection_error(caught.value, fake.url)
    assert err is not None and "dropped the connection mid-reply" in assert_one_line(err)


def test_slow_reply_times_out(fake: FakeOllama) -> None:
    fake.script([Reply(content="late", delay=1.0)])
    llm = load_ollama("llava:7b", base_url=fake.url, timeout=0.3)
    with pytest.raises(httpx.TimeoutException) as caught:
        llm.invoke("hi")
    err = explain_connection_error(caught.value, fake.url, "llava:7b")
    assert err is not None and "did not answer 'llava:7b' in time" in str(err)


def test_model_error_passes_through() -> None:
    original = ModelError("already explained")
    assert explain_connection_error(original, "http://x:1") is original


# -- the fake itself -------------------------------------------------------------------------------------


def test_fake_detects_roles() -> None:
    img = [{"role": "user", "content": "look", "images": ["AAAA"]}]
    assert detect_role({"messages": [{"role": "system", "content": "Rate the image"}, *img]}) == "judge"
    assert detect_role({"messages": img}) == "vision"
    assert detect_role({"messages": [{"role": "user", "content": "hi"}], "tools": [{"x": 1}]}) == "tools"
    assert detect_role({"messages": [{"role": "user", "content": "score this prompt"}]}) == "text"


def test_fake_fills_nested_schemas() -> None:
    class Inner(BaseModel):
        notes: list[str]

    class Outer(BaseModel):
        score: float = Field(ge=0, le=1)
        accept: bool
        detail: Inner | None = None

    value = fill_schema(Outer.model_json_schema(), 9)
    assert value["score"] == pytest.approx(0.9) and value["accept"] is True
    assert Outer.model_validate(value).detail == Inner(notes=[value["detail"]["notes"][0]])


def test_fake_tool_calls_reach_the_client(fake: FakeOllama) -> None:
    class Route(BaseModel):
        """Pick the next step."""

        step: str

    fake.script({"tools": [{"tool_calls": [{"name": "Route", "arguments": {"step": "refine"}}]}]})
    llm = ChatOllama(model="llama3:8b", base_url=fake.url).bind_tools([Route])
    msg = llm.invoke("what next?")
    assert msg.tool_calls[0]["name"] == "Route" and msg.tool_calls[0]["args"] == {"step": "refine"}


@pytest.mark.slow
def test_fake_runs_as_a_process(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"models": MODELS, "replies": {"judge": "garbage", "text": ["a fox"]}}))
    log = tmp_path / "requests.jsonl"
    fake_py = Path(__file__).resolve().parents[1] / "fake_ollama.py"
    cmd = [sys.executable, str(fake_py), "--port", "0", "--script", str(script), "--log", str(log)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # capabilities are listed: no warning expected
                llm = load_ollama("llava:7b", base_url=url)
            assert llm.invoke("write a prompt").content == "a fox"
        finally:
            proc.terminate()
            assert proc.wait(timeout=10) == 0
    paths = [json.loads(line)["path"] for line in log.read_text().splitlines()]
    assert paths == ["/api/tags", "/api/show", "/api/chat"]
