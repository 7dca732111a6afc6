"""`langgraph dev` serves every graph in langgraph.json offline: runs, state, history, schemas and drawings.

One server for the session (`studio_server` in conftest.py), started from a temporary copy of the project so its
`.langgraph_api/` store and every run folder land under pytest's tmp dirs, never in the checkout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_sync_client

from tests.conftest import ROOT, images_in

pytestmark = pytest.mark.slow

GRAPHS = list(json.loads((ROOT / "langgraph.json").read_text())["graphs"])


def context(out: Path) -> dict[str, Any]:
    """Studio's context form, filled in: the offline demo backends, three images, a run folder under tmp."""
    return {"max_iterations": 3, "seed": 1, "output_dir": str(out), "image_model": "sketch", "eval_model": "demo"}


@pytest.mark.parametrize("graph_id", GRAPHS)
def test_every_graph_runs_to_done_with_state_and_history(studio_server, graph_id, tmp_path):
    client = get_sync_client(url=studio_server)
    thread = client.threads.create()
    out = tmp_path / graph_id
    result = client.runs.wait(thread["thread_id"], graph_id, input={}, context=context(out))
    assert "__error__" not in result, result
    state = client.threads.get_state(thread["thread_id"])
    values = state["values"]
    assert values["status"] == "done" and values["iteration"] == 3
    best = values["best"]
    assert isinstance(best["path"], str) and Path(best["path"]).is_file()
    assert isinstance(best["score"], int)
    assert Path(values["run_dir"]) == out.resolve()
    assert images_in(out) == ["01.png", "02.png", "03.png"]
    assert (out / "best.png").is_file() and (out / "summary.txt").is_file()
    # Every image was judged, the last one included.
    assert [h["iteration"] for h in values["history"]] == [1, 2, 3]
    history = client.threads.get_history(thread["thread_id"], limit=200)
    assert len(history) >= 10
    assert history[0]["values"]["status"] == "done" and history[0]["next"] == []
    assert any(h["next"] for h in history[1:]), "earlier checkpoints show the run under way"
    if graph_id == "refine-agent":
        # The demo critic cannot call tools: the router says so once and follows the fixed route.
        notes = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
        routes = [n for n in notes if n["kind"] == "route"]
        assert len(routes) == 1 and "cannot call tools" in routes[0]["fallback"]


def test_context_schema_describes_every_field(studio_server):
    client = get_sync_client(url=studio_server)
    for graph_id in GRAPHS:
        assistant = client.assistants.search(graph_id=graph_id)[0]
        properties = client.assistants.get_schemas(assistant["assistant_id"])["context_schema"]["properties"]
        assert {"max_iterations", "eval_model", "agent_model", "agent_router_calls"} <= set(properties)
        assert all(p.get("description") for p in properties.values()), graph_id
        # The form shows each setting's group and bounds, from the same shapes as --help and validation.
        assert all(p.get("x-group") for p in properties.values()), graph_id
        candidates = properties["candidates"]
        assert (candidates["minimum"], candidates["maximum"], candidates["x-group"]) == (1, 16, "judging")
        assert properties["final_pick"]["x-allowed"] == "0 (off) or between 2 and 10"


def test_input_form_asks_only_what_a_user_gives_at_the_start(studio_server):
    client = get_sync_client(url=studio_server)
    for graph_id in GRAPHS:
        assistant = client.assistants.search(graph_id=graph_id)[0]
        properties = client.assistants.get_schemas(assistant["assistant_id"])["input_schema"]["properties"]
        assert set(properties) == {"goal", "settings", "task"}, graph_id
        assert all(p.get("description") for p in properties.values()), graph_id


EXPECTED_BRANCHES = {
    "refine-agent": ("router", {"generate", "evaluate", "summarize", "stop"}),
    "refine-evaluator-optimizer": ("accept_evaluator_optimizer", {"stop", "generator"}),
}


def test_drawings_keep_every_branch(studio_server):
    client = get_sync_client(url=studio_server)
    for graph_id in GRAPHS:
        strategy = graph_id.removeprefix("refine-")
        source, targets = EXPECTED_BRANCHES.get(graph_id, (f"accept_{strategy}", {"stop", "summarize", "propose"}))
        assistant = client.assistants.search(graph_id=graph_id)[0]
        edges = client.assistants.get_graph(assistant["assistant_id"])["edges"]
        assert targets <= {e["target"] for e in edges if e["source"] == source}, graph_id
