"""`--eval-model openai:NAME`: the real ChatOpenAI client against a fake OpenAI-compatible server on 127.0.0.1.

Every run goes through the CLI's entry point (`refineloop.cli.main.main`), with the key in the environment only.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from refineloop.backends.chat.invoke import is_transport_error
from refineloop.cli.main import main
from tests.conftest import images_in, refineloop
from tests.fake_openai import NO_SCHEMA, TEXT_ONLY, VISION, FakeOpenAI, has_image

pytestmark = pytest.mark.slow

KEY = "sk-test-0123456789abcdef"
JUDGE = {"score": 3, "critique": "barely warm", "verdict": "CONTINUE", "next_idea": "a hotdog on a glowing grill"}


def judge(score: int, verdict: str = "CONTINUE") -> str:
    return json.dumps({**JUDGE, "score": score, "verdict": verdict})


def run_args(fake: FakeOpenAI, *extra: str, model: str = "vis") -> list[str]:
    return [
        "run",
        "--eval-model",
        f"openai:{model}",
        "--openai-url",
        fake.url,
        "--image-model",
        "sketch:size=64",
        "--strategy",
        "climbing",
        "--max-iterations",
        "3",
        "--seed",
        "4",
        *extra,
    ]


def every_file_text(folder: Path) -> str:
    """Every byte of every file in a run folder, as text (images and SQLite included)."""
    return "".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_run_with_an_openai_critic_uses_schema_temperatures_and_never_writes_the_key(
    tmp_path, monkeypatch, capsys, stream
):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    # Image 2 gets a garbled reply three times (unknown, rejected, so the proposer runs); image 3 wins.
    replies = {"judge": [judge(4), "garbage", "SCORE? maybe", "<<<>>>", judge(6)]}
    with FakeOpenAI({"vis": VISION}, replies, key=KEY) as fake:
        flags = ["--openai-stream"] if stream else []
        code = main(run_args(fake, *flags, "--output-dir", "r"))
        out = capsys.readouterr()
        assert code == 0, out.out + out.err
        run = tmp_path / "r"
        assert images_in(run) == ["01.png", "02.png", "03.png"]
        second = json.loads((run / "02.json").read_text())
        assert second["score"] is None and second["decision"] == "rejected", "garbled replies: unknown, no crash"

        judges = fake.chat_requests("judge")
        # The judge of every image runs cold (later re-looks at the best may sample warmer).
        assert len(judges) >= 5 and all(b["temperature"] == 0 for b in judges[:5])
        assert all(b["response_format"]["type"] == "json_schema" for b in judges)
        assert all(b.get("stream", False) is stream for b in judges)
        # The image travels as an image_url data URL inside the user message.
        parts = judges[0]["messages"][-1]["content"]
        assert any(p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/") for p in parts)
        proposals = fake.chat_requests("propose")
        assert proposals and all(b["temperature"] == 0.7 for b in proposals), "the proposer samples warm"
        assert {r["auth"] for r in fake.requests} == {f"Bearer {KEY}"}
        # The probe came first: one image, a JSON schema, before any judge call.
        assert fake.chat_requests()[0] is fake.chat_requests("probe")[0]

    assert KEY not in out.out + out.err
    assert KEY not in every_file_text(run), "not in run.json, the trace, summary.txt, the report or anywhere"


def test_a_wrong_key_is_one_line_that_never_shows_it(tmp_path, monkeypatch, capsys):
    wrong = "sk-wrong-9876543210fedcba"
    monkeypatch.setenv("MY_KEY", wrong)
    monkeypatch.chdir(tmp_path)
    with FakeOpenAI({"vis": VISION}, key=KEY) as fake:
        # The fake's 401 quotes the key it was sent, as some servers do.
        code = main(run_args(fake, "--openai-key-env", "MY_KEY", "--output-dir", "r"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "refused the key in MY_KEY" in err and "'vis'" in err and "--openai-key-env" in err
    assert wrong not in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_no_key_at_all_says_which_variable_to_set(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    with FakeOpenAI({"vis": VISION}, key=KEY) as fake:
        code = main(run_args(fake, "--output-dir", "r"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "OPENAI_API_KEY is not set" in err and "export OPENAI_API_KEY=" in err


def test_a_model_that_rejects_images_is_refused_before_any_image(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with FakeOpenAI({"textonly": TEXT_ONLY}) as fake:
        code = main(run_args(fake, "--output-dir", "r", model="textonly"))
        probes = fake.chat_requests("probe")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "'textonly'" in err and "refused an image (HTTP 400" in err and "sees images" in err
    # A plain question first (the key and the model pass), then the image with the schema, then without it.
    assert [has_image(p) for p in probes] == [False, True, True]
    assert [bool(p.get("response_format")) for p in probes] == [True, True, False]
    assert not (tmp_path / "r").exists()


def test_a_server_without_json_schema_gets_plain_text_for_the_tolerant_parser(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    replies = {"judge": ["SCORE: 5\nCRITIQUE: some steam\nCONTINUE: more flames", "score 7/10. CONTINUE: embers"]}
    with FakeOpenAI({"plain": NO_SCHEMA}, replies) as fake:
        code = main(run_args(fake, "--output-dir", "r", "--max-iterations", "2", model="plain"))
        judges = fake.chat_requests("judge")
    assert code == 0, capsys.readouterr()
    assert judges and not any("response_format" in b for b in judges)
    scores = [json.loads((tmp_path / "r" / f"0{i}.json").read_text())["score"] for i in (1, 2)]
    assert scores == [5, 7]


def test_a_body_that_is_not_a_completion_fails_in_one_line_and_keeps_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with FakeOpenAI({"vis": VISION}, {"judge": [judge(4), {"garbled": True}]}) as fake:
        code = main(run_args(fake, "--output-dir", "r"))
    out = capsys.readouterr().out
    assert code == 1
    error = next(line for line in out.splitlines() if line.startswith("error:"))
    assert "not an OpenAI chat completion" in error and "--openai-url" in error and fake.url in error
    assert "refineloop resume" in out and images_in(tmp_path / "r") == ["01.png", "02.png"]


def test_a_5xx_and_a_429_are_retried_with_backoff(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    replies = {
        "judge": [{"status": 503, "message": "loading"}, {"status": 429, "message": "slow down"}, judge(9, "DONE")]
    }
    with FakeOpenAI({"vis": VISION}, replies) as fake:
        code = main(run_args(fake, "--output-dir", "r", "--max-iterations", "1", "--critic-retries", "2"))
    assert code == 0, capsys.readouterr()
    trace = [json.loads(line) for line in (tmp_path / "r" / "trace.jsonl").read_text().splitlines()]
    retries = [t for t in trace if t["kind"] == "retry"]
    assert [("503" in t["error"], "429" in t["error"]) for t in retries] == [(True, False), (False, True)]


def test_connection_errors_of_the_openai_client_are_transport_errors():
    import openai

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nobody listens there
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=2)
    with pytest.raises(openai.APIConnectionError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert is_transport_error(caught.value)


def test_an_unreachable_server_is_one_line(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    result = refineloop("run", "--eval-model", "openai:vis", "--openai-url", url, "--output-dir", "r", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"cannot reach the OpenAI-compatible server at {url}" in result.stderr
    assert not (tmp_path / "r").exists()


def test_a_text_only_agent_model_is_loaded_without_the_image_probe(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # The writer asks for "at most N words", which the fake reads as the summarizer role.
    with FakeOpenAI(
        {"writer": TEXT_ONLY}, {"summarize": ["a hotdog wreathed in blue flame and glowing coals"]}
    ) as fake:
        args = ["run", "--strategy", "evaluator-optimizer", "--eval-model", "demo", "--agent-model", "openai:writer"]
        args += ["--openai-url", fake.url, "--max-iterations", "1", "--seed", "2", "--output-dir", "r"]
        code = main(args)
        probe = fake.chat_requests("probe")
        writes = [b for b in fake.chat_requests() if b not in probe]
    assert code == 0, capsys.readouterr()
    assert len(probe) == 1 and isinstance(probe[0]["messages"][0]["content"], str), "a text probe, no image"
    assert writes, "the prompt writer asked the OpenAI-compatible model"
    record = json.loads((tmp_path / "r" / "01.json").read_text())
    assert "blue flame" in record["prompt"]


def test_bad_openai_flags_are_refused_before_anything(tmp_path, capsys):
    assert main(["run", "--eval-model", "openai:m", "--openai-url", "ftp://x", "--output-dir", str(tmp_path)]) == 2
    assert "is not an http(s) URL" in capsys.readouterr().err
    assert main(["run", "--eval-model", "openai:m", "--openai-key-env", "sk-live-abc", "--output-dir", "x"]) == 2
    assert "never the key itself" in capsys.readouterr().err
    assert main(["run", "--eval-model", "openai:", "--output-dir", "x"]) == 2
    assert "openai:<model>" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["auth", "no_db"])
def test_behind_a_litellm_like_proxy_every_http_400_is_told_apart(tmp_path, monkeypatch, capsys, mode):
    """LiteLLM answers a wrong key, a missing key, an unknown model and an image a model cannot see all with HTTP
    400: the model list, a plain question before the image, and the error's body tell them apart."""
    monkeypatch.chdir(tmp_path)
    cases = {
        "wrong key": ("vis", "sk-wrong-0000", "refused the key in MY_KEY"),
        "missing key": ("vis", None, "MY_KEY is not set"),
        "unknown model": ("nope", KEY, "has no model 'nope'"),
        "blind model": ("textonly", KEY, "refused an image (HTTP 400"),
    }
    with FakeOpenAI({"vis": VISION, "textonly": TEXT_ONLY}, key=KEY, litellm=mode) as fake:
        for case, (model, key, expected) in cases.items():
            if key is None:
                monkeypatch.delenv("MY_KEY", raising=False)
            else:
                monkeypatch.setenv("MY_KEY", key)
            code = main(run_args(fake, "--openai-key-env", "MY_KEY", "--output-dir", case, model=model))
            err = capsys.readouterr().err
            assert code == 2 and err.count("\n") == 1, (case, err)
            assert expected in err, (case, err)
            assert ("sees images" in err) is (case == "blind model"), (case, err)
            assert "sk-wrong-0000" not in err and not (tmp_path / case).exists()
        monkeypatch.setenv("MY_KEY", KEY)
        assert main(run_args(fake, "--openai-key-env", "MY_KEY", "--output-dir", "fine")) == 0
