"""The strategy table (refineloop.strategies): a new strategy is one entry plus its acceptance rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from refineloop.acceptance import Decision
from refineloop.errors import SettingsError
from refineloop.graph_build import build_graph
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.strategies import STRATEGY_SPECS, StrategySpec, register_strategy, spec_for, unregister_strategy
from tests.conftest import judge_reply

TOY = "always-keep-new"


def keep_every_image(state: RefineState, settings: RunSettings) -> Decision:
    """The toy rule: adopt each new image, whatever its score."""
    return Decision("accepted", state["candidate"])


@pytest.fixture
def toy() -> Iterator[StrategySpec]:
    """The toy strategy, registered for one test and removed after it."""
    spec = StrategySpec(name=TOY, description="keep every new image", rule=keep_every_image)
    register_strategy(spec)
    try:
        yield spec
    finally:
        unregister_strategy(TOY)


def test_a_registered_strategy_runs_end_to_end(toy, scripted, run_settings, quiet):
    from refineloop.cli.run_commands import start_run

    cache, _ = scripted([judge_reply(6), judge_reply(3), judge_reply(5)])
    outcome = start_run(run_settings(strategy=TOY, max_iterations=3), models=cache, out=quiet)
    assert outcome.status == "done", outcome.error
    values = outcome.values
    assert [h["decision"] for h in values["history"]] == ["accepted", "accepted", "accepted"]
    assert values["current"]["iteration"] == 3 and values["best"]["iteration"] == 1
    assert values["stop_reason"] == "reached --max-iterations 3"
    run = Path(outcome.run_dir)
    assert (run / "best.png").read_bytes() == (run / "01.png").read_bytes()
    assert f"strategy: {TOY}" in quiet.getvalue()
    assert "best" in (run / "summary.txt").read_text()


def test_the_toy_strategy_is_gone_after_its_test():
    assert TOY not in STRATEGY_SPECS
    with pytest.raises(SettingsError, match=f"unknown strategy '{TOY}': use one of greedy, climbing"):
        RunSettings(strategy=TOY).validate()


def test_unknown_strategy_is_one_line_naming_every_strategy(toy):
    with pytest.raises(SettingsError) as caught:
        RunSettings(strategy="hill").validate()
    message = str(caught.value)
    assert "\n" not in message and all(name in message for name in STRATEGY_SPECS)


@pytest.mark.parametrize("name", list(STRATEGY_SPECS))
def test_every_entry_has_a_graph_that_compiles_with_the_user_input_only(name):
    graph = build_graph(name)
    spec = spec_for(name)
    assert graph.name == f"refine-{name}"
    assert spec.accept_node in graph.get_graph().nodes
    properties = graph.get_input_jsonschema()["properties"]
    assert set(properties) == {"goal", "settings", "task"}
    assert all(p.get("description") for p in properties.values())


def test_the_table_says_what_the_settings_defaults_were():
    assert RunSettings(strategy="img2img").effective_patience() == 4
    assert [n for n, s in STRATEGY_SPECS.items() if s.stops_on_misses] == ["climbing", "img2img"]
    assert [n for n, s in STRATEGY_SPECS.items() if s.comparing] == ["climbing", "annealing", "img2img"]
    assert [n for n, s in STRATEGY_SPECS.items() if s.reviewable] == ["greedy", "climbing", "annealing", "img2img"]
