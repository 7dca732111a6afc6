"""Agent mode: a scripted tool-calling model routes the real graph through the runner; code keeps the rules."""

from __future__ import annotations

from pathlib import Path

from langchain_core.messages import AIMessage

from refineloop.backends.demo.sketch import SketchImageModel
from refineloop.backends.model_cache import ModelCache
from refineloop.cli.run_commands import resume_run, start_run
from refineloop.files.trace import read_trace
from refineloop.graph_build import build_graph
from tests.conftest import images_in, judge_reply, tool_call
from tests.fake_ollama import FakeOllama


def routes(run_dir: str) -> list[dict]:
    """The router's trace records, in order."""
    return [r for r in read_trace(run_dir) if r["kind"] == "route"]


def agent_run(scripted, agent_model, run_settings, quiet, script, replies, **overrides):
    """Run agent mode with `script` for the router and `replies` for the judge."""
    cache, critic = scripted(replies)
    model = agent_model(script)
    cache.register_chat("agent-fake", model)
    settings = run_settings(strategy="agent", agent_model="agent-fake", **overrides)
    return start_run(settings, models=cache, out=quiet), model, critic


def test_build_graph_knows_the_agent_strategies():
    assert build_graph("agent").name == "refine-agent"
    assert build_graph("evaluator-optimizer").name == "refine-evaluator-optimizer"


def test_a_valid_route_sequence_is_followed(scripted, agent_model, run_settings, quiet):
    script = [
        tool_call("generate"),
        tool_call("evaluate"),
        tool_call("summarize"),
        tool_call("generate"),
        tool_call("evaluate"),
        tool_call("stop", "the heat is right"),
    ]
    # final_pick=0: the critic calls counted below are the route's alone (the final pick's are tested apart).
    replies = [judge_reply(5, idea="glowing coals"), judge_reply(7)]
    outcome, model, critic = agent_run(scripted, agent_model, run_settings, quiet, script, replies, final_pick=0)
    assert outcome.status == "done"
    assert [(r["route"], r["fallback"]) for r in routes(outcome.run_dir)] == [
        (name, None) for name in ("generate", "evaluate", "summarize", "generate", "evaluate", "stop")
    ]
    assert images_in(Path(outcome.run_dir)) == ["01.png", "02.png"]
    assert outcome.values["stop_reason"] == "the agent stopped after image 2: the heat is right"
    # Summarize carried the critic's idea into the second image's prompt.
    assert "glowing coals" in outcome.values["candidate"]["prompt"]
    assert outcome.values["best"]["iteration"] == 2
    assert [c["role"] for c in critic.calls] == ["judge", "judge"]
    # The model was handed the four route tools and a text view of the run (no image).
    assert {t["function"]["name"] for t in model.tools} == {"generate", "evaluate", "summarize", "stop"}
    first_view = str(model.seen[1][-1].content)
    assert "#1, not judged yet" in first_view and "Allowed now: evaluate" in first_view
    assert "stopped: the agent stopped after image 2" in quiet.getvalue()


def test_an_unknown_tool_falls_back_to_the_fixed_route(scripted, agent_model, run_settings, quiet):
    script = [tool_call("generate"), tool_call("paint_more_flames")]
    outcome, _, _ = agent_run(
        scripted, agent_model, run_settings, quiet, script, [judge_reply(4), judge_reply(6)], max_iterations=2
    )
    records = routes(outcome.run_dir)
    assert records[1]["tool_calls"] == [{"name": "paint_more_flames", "args": {}}]
    assert records[1]["fallback"] == "unknown tool 'paint_more_flames'"
    assert records[1]["route"] == "evaluate"
    assert outcome.status == "done" and len(outcome.values["history"]) == 2


def test_a_reply_without_a_tool_call_falls_back(scripted, agent_model, run_settings, quiet):
    script = [AIMessage(content="I would draw a hotter one next.")]
    outcome, _, _ = agent_run(scripted, agent_model, run_settings, quiet, script, [], max_iterations=2)
    first = routes(outcome.run_dir)[0]
    assert first["received"] == "I would draw a hotter one next."
    assert first["fallback"] == "no tool call in the reply" and first["route"] == "generate"
    # The rest of the script is empty text too, so the fixed route runs the whole loop.
    assert images_in(Path(outcome.run_dir)) == ["01.png", "02.png"]
    assert outcome.values["stop_reason"] == "reached --max-iterations 2"


def test_impossible_moves_fall_back(scripted, agent_model, run_settings, quiet):
    script = [tool_call("evaluate"), tool_call("generate"), tool_call("stop")]
    outcome, _, _ = agent_run(scripted, agent_model, run_settings, quiet, script, [], max_iterations=1)
    got = [(r["route"], r["fallback"]) for r in routes(outcome.run_dir)][:3]
    assert got == [
        ("generate", "'evaluate' is not possible now (no new image to judge)"),
        ("evaluate", "'generate' is not possible now (image 1 has not been judged)"),
        ("stop", None),
    ]
    # The last image is judged before any stop.
    assert len(outcome.values["history"]) == 1


def test_generate_past_the_cap_stops_with_exactly_the_cap(scripted, agent_model, run_settings, quiet):
    script = [tool_call("generate"), tool_call("evaluate"), tool_call("generate"), tool_call("evaluate")]
    script += [tool_call("generate")] * 3
    outcome, _, _ = agent_run(
        scripted, agent_model, run_settings, quiet, script, [judge_reply(3), judge_reply(4)], max_iterations=2
    )
    assert images_in(Path(outcome.run_dir)) == ["01.png", "02.png"]
    last = routes(outcome.run_dir)[-1]
    assert (last["route"], last["fallback"]) == ("stop", "generate at the image cap (2 images)")
    assert outcome.values["stop_reason"] == "reached --max-iterations 2"
    assert (Path(outcome.run_dir) / "best.png").exists()


def test_a_spinning_model_is_bounded(scripted, agent_model, run_settings, quiet):
    # A model that only ever says summarize: refused when it changes nothing, and capped per image.
    outcome, model, _ = agent_run(
        scripted, agent_model, run_settings, quiet, [tool_call("summarize")] * 40, [], max_iterations=3
    )
    assert images_in(Path(outcome.run_dir)) == ["01.png", "02.png", "03.png"]
    records = routes(outcome.run_dir)
    per_image = {}
    for record in records:
        per_image[record["iteration"]] = per_image.get(record["iteration"], 0) + record["asked"]
    assert max(per_image.values()) <= 3


def test_the_router_call_budget_hands_over_to_the_fixed_route(scripted, agent_model, run_settings, quiet):
    script = [tool_call("generate"), tool_call("evaluate")] + [tool_call("stop")] * 5
    outcome, model, _ = agent_run(
        scripted, agent_model, run_settings, quiet, script, [], max_iterations=2, agent_router_calls=1
    )
    records = routes(outcome.run_dir)
    assert sum(r["asked"] for r in records) == 3  # once before image 1, once per image after
    spent = [r for r in records if not r["asked"]]
    assert spent and all(r["fallback"] == "router call budget spent (1 per image)" for r in spent)
    assert len(outcome.values["history"]) == 2


def test_an_interrupted_agent_run_resumes_where_it_stopped(scripted, agent_model, run_settings, quiet):
    cycle = [tool_call("evaluate"), tool_call("summarize"), tool_call("generate")]
    script = [tool_call("generate"), *cycle, *cycle, tool_call("evaluate"), tool_call("stop")]
    replies = [judge_reply(4), KeyboardInterrupt(), judge_reply(6), judge_reply(5)]
    first, model, _ = agent_run(scripted, agent_model, run_settings, quiet, script, replies, max_iterations=5)
    assert first.status == "interrupted" and len(first.values["history"]) == 1
    second = resume_run(first.run_dir, models=resume_cache(model, scripted, replies), out=quiet)
    assert second.status == "done"
    assert [h["score"] for h in second.values["history"]] == [4, 6, 5]
    # The interrupted judgement re-ran; the router went on with the script, never re-asking a finished step.
    assert [r["route"] for r in routes(second.run_dir)] == [c.tool_calls[0]["name"] for c in script]
    assert all(r["fallback"] is None for r in routes(second.run_dir))


def resume_cache(model, scripted, replies):
    """A fresh cache for the resume: the judge continues after the interrupt, the router keeps its script."""
    cache, _ = scripted(replies[2:])
    cache.register_chat("agent-fake", model)
    return cache


def test_a_model_without_tools_follows_the_greedy_order(scripted, run_settings, quiet, tmp_path):
    # The scripted critic is a plain chat model: bind_tools raises NotImplementedError.
    replies = [judge_reply(6), judge_reply(3), judge_reply(5)]
    cache, _ = scripted(list(replies))
    outcome = start_run(run_settings(strategy="agent", max_iterations=3), models=cache, out=quiet)
    records = routes(outcome.run_dir)
    assert len(records) == 1 and records[0]["fallback"] == "TemperatureCritic cannot call tools"
    cache2, _ = scripted(list(replies))
    greedy = start_run(
        run_settings(strategy="greedy", max_iterations=3, output_dir=str(tmp_path / "greedy")), models=cache2, out=quiet
    )
    assert [c["prompt"] for c in _candidates(outcome.run_dir)] == [c["prompt"] for c in _candidates(greedy.run_dir)]
    assert [h["score"] for h in outcome.values["history"]] == [6, 3, 5]
    assert outcome.values["best"]["iteration"] == 1


def _candidates(run_dir: str) -> list[dict]:
    """The image records of a run's trace, in order."""
    return [r for r in read_trace(run_dir) if r["kind"] == "image"]


OLLAMA_MODELS = {"llava:7b": ["completion", "vision"], "qwen3:4b": ["completion", "tools"]}


def ollama_run(fake: FakeOllama, run_settings, quiet, agent: str, **overrides):
    """Agent mode against the fake Ollama: llava judges, `agent` routes, through the real ChatOllama."""
    cache = ModelCache()
    cache.register_image("sketch", SketchImageModel(size=64))
    settings = run_settings(
        strategy="agent", eval_model="ollama:llava:7b", agent_model=agent, ollama_url=fake.url, **overrides
    )
    return start_run(settings, models=cache, out=quiet)


def test_chat_ollama_routes_through_real_tool_calls(run_settings, quiet):
    picks = ["generate", "evaluate", "summarize", "generate", "evaluate", "stop"]
    tools = [{"tool_calls": [{"name": name, "arguments": {"reason": f"step {i}"}}]} for i, name in enumerate(picks)]
    judge = [
        {"score": s, "critique": "warm, not yet burning", "verdict": "CONTINUE", "next_idea": "flames on the bun"}
        for s in (5, 6)
    ]
    with FakeOllama(models=OLLAMA_MODELS, replies={"tools": tools, "judge": judge}) as fake:
        # A text-only router is fine: only the critic has to see images.
        outcome = ollama_run(fake, run_settings, quiet, "ollama:qwen3:4b", max_iterations=4)
        asked = fake.chat_requests("tools")
    assert outcome.status == "done", quiet.getvalue()
    assert [(r["route"], r["fallback"]) for r in routes(outcome.run_dir)] == [(p, None) for p in picks]
    assert outcome.values["stop_reason"] == "the agent stopped after image 2: step 5"
    assert len(asked) == len(picks) and {body["model"] for body in asked} == {"qwen3:4b"}
    assert {t["function"]["name"] for t in asked[0]["tools"]} == {"generate", "evaluate", "summarize", "stop"}
    assert asked[0]["options"]["temperature"] == 0
    assert not any(m.get("images") for body in asked for m in body["messages"])
    assert "flames on the bun" in outcome.values["candidate"]["prompt"]


def test_an_ollama_model_without_tools_is_never_asked(run_settings, quiet):
    with FakeOllama(models=OLLAMA_MODELS) as fake:
        outcome = ollama_run(fake, run_settings, quiet, "ollama:llava:7b", max_iterations=2)
        asked = fake.chat_requests("tools")
    assert outcome.status == "done" and not asked
    (note,) = routes(outcome.run_dir)
    assert note["fallback"] == "the Ollama model lacks the 'tools' capability"


def test_a_missing_agent_model_fails_before_any_image(run_settings, quiet):
    with FakeOllama(models=OLLAMA_MODELS) as fake:
        outcome = ollama_run(fake, run_settings, quiet, "ollama:nope:1b")
    assert outcome.status == "failed"
    assert "--agent-model ollama:nope:1b" in quiet.getvalue() and "ollama pull nope:1b" in quiet.getvalue()
    assert images_in(Path(outcome.run_dir)) == []
