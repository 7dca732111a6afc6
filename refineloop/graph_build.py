"""Builds the refinement StateGraph, one per strategy, from its entry in refineloop.strategies.

    START -> setup -> generate -> evaluate -> accept_<strategy> --> stop -> END
                         ^                        |--> summarize -> generate   (adopted: refine the critic's idea)
                         |                        '--> propose -> summarize     (rejected, or annealing)
                         '-------------- review <-- summarize   (review on: a person approves, edits or stops;
                                           '--> stop              nodes.review)

Two more loops hand the decisions to chat models (their shapes are drawn in their node modules):

    agent:                START -> setup -> router <-> generate | evaluate -> accept_agent | summarize | propose
                                              '-> stop -> END                  (refineloop.nodes.router)
    evaluator-optimizer:  START -> setup -> generator -> generate -> critic -> accept_evaluator_optimizer --> stop
                                                ^------------------------------------------------------'
                                                                                               (nodes.agents)

In every graph, a run given `--init-image` passes from setup through `baseline` first, which judges the user's
picture as image 0 (refineloop.nodes.baseline).

Every graph takes the same input (refineloop.state.RunInput: what a user or the CLI gives at the start) and ends
in the one stop node (refineloop.nodes.stop). RunSettings is the graphs' context schema, so Studio draws its form,
but every node reads the run's knobs from the checkpointed state: LangGraph does not checkpoint the runtime
context, so a resumed run would come back without them.

The CLI, the engine and the runners compile the one graph a run needs with `build_graph` (and their
checkpointer); the graphs `langgraph dev` serves are compiled once each in refineloop.graph, which a run does not
import, so it does not pay for compiling every strategy's graph.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from refineloop.nodes.accept import accept_node
from refineloop.nodes.agents import generator, route_after_critique
from refineloop.nodes.baseline import after_setup_agent, after_setup_loop, after_setup_writer, baseline
from refineloop.nodes.evaluate import evaluate
from refineloop.nodes.generate import generate
from refineloop.nodes.propose import propose
from refineloop.nodes.review import ReviewState, review, route_after_review, route_to_review
from refineloop.nodes.router import AgentState, router
from refineloop.nodes.setup import make_agent_setup, make_setup
from refineloop.nodes.stop import stop
from refineloop.nodes.summarize import summarize
from refineloop.run_view import in_run_view
from refineloop.settings import RunSettings
from refineloop.state import RefineState, RunInput
from refineloop.stopping import route_after_accept, route_after_evaluate
from refineloop.strategies import STRATEGY_SPECS, Shape, StrategySpec, strategy_names

#: A graph under construction: any of the three states, the run's settings as context, the run's input.
Builder = StateGraph[Any, RunSettings, RunInput, Any]


def build_graph(
    strategy: str, checkpointer: Checkpointer = None
) -> CompiledStateGraph[Any, RunSettings, RunInput, Any]:
    """Compile the loop for one strategy."""
    spec = STRATEGY_SPECS.get(strategy)
    if spec is None:
        raise ValueError(f"unknown strategy '{strategy}': use one of {', '.join(strategy_names())}")
    return BUILDERS[spec.shape](spec).compile(checkpointer=checkpointer, name=f"refine-{spec.name}")


def build_loop(spec: StrategySpec) -> Builder:
    """The shared loop: judge, accept by the strategy's rule, then stop, refine or propose (and review)."""
    accept = spec.accept_node
    builder = StateGraph(ReviewState, context_schema=RunSettings, input_schema=RunInput)
    builder.add_node("setup", in_run_view(make_setup(spec.name)), input_schema=RunInput)
    builder.add_node("generate", in_run_view(generate))
    builder.add_node("evaluate", in_run_view(evaluate))
    builder.add_node(accept, in_run_view(accept_node(spec)))
    builder.add_node("propose", in_run_view(propose))
    builder.add_node("summarize", in_run_view(summarize))
    builder.add_node("review", in_run_view(review))
    builder.add_node("stop", in_run_view(stop))
    builder.add_node("baseline", in_run_view(baseline))
    builder.add_edge(START, "setup")
    builder.add_conditional_edges("setup", after_setup_loop)  # --init-image: the user's picture is judged first
    builder.add_edge("baseline", "generate")
    builder.add_edge("generate", "evaluate")
    # With drafts, a round's winning draft goes back to be drawn in full, and a round none of whose drafts
    # reached the best routes on as a miss (refineloop.stopping.route_after_evaluate).
    after_evaluate: dict[Hashable, str] = {"accept": accept, "generate": "generate", "stop": "stop"}
    after_evaluate.update(summarize="summarize", propose="propose")
    builder.add_conditional_edges("evaluate", route_after_evaluate, after_evaluate)
    builder.add_conditional_edges(accept, route_after_accept)
    builder.add_edge("propose", "summarize")
    # A conditional edge rather than a review node that passes: with review off no super-step is added.
    builder.add_conditional_edges("summarize", route_to_review)
    builder.add_conditional_edges("review", route_after_review)
    builder.add_edge("stop", END)
    return builder


def build_agent_router(spec: StrategySpec) -> Builder:
    """Agent mode: every node returns to the router, which asks a tool-calling model where to go next.

    Acceptance stays a fixed edge after evaluate (by the strategy's rule), and propose runs only when the fixed
    route asks for a new idea, so it leads straight to summarize.
    """
    accept = spec.accept_node
    builder = StateGraph(AgentState, context_schema=RunSettings, input_schema=RunInput)
    builder.add_node("setup", in_run_view(make_agent_setup(spec.name)), input_schema=RunInput)
    builder.add_node("router", in_run_view(router))
    builder.add_node("generate", in_run_view(generate))
    builder.add_node("evaluate", in_run_view(evaluate))
    builder.add_node(accept, in_run_view(accept_node(spec)))
    builder.add_node("summarize", in_run_view(summarize))
    builder.add_node("propose", in_run_view(propose))
    builder.add_node("stop", in_run_view(stop))
    builder.add_node("baseline", in_run_view(baseline))
    builder.add_edge(START, "setup")
    builder.add_conditional_edges("setup", after_setup_agent)  # --init-image: the user's picture is judged first
    builder.add_edge("baseline", "router")
    builder.add_edge("generate", "router")
    builder.add_edge("evaluate", accept)
    builder.add_edge(accept, "router")
    builder.add_edge("summarize", "router")
    builder.add_edge("propose", "summarize")
    builder.add_edge("stop", END)
    return builder


def build_evaluator_optimizer(spec: StrategySpec) -> Builder:
    """Evaluator-optimizer: the generator agent writes, generate draws, the critic agent judges, the rule keeps."""
    accept = spec.accept_node
    builder = StateGraph(RefineState, context_schema=RunSettings, input_schema=RunInput)
    builder.add_node("setup", in_run_view(make_agent_setup(spec.name)), input_schema=RunInput)
    builder.add_node("generator", in_run_view(generator))
    builder.add_node("generate", in_run_view(generate))
    # The critic agent's one tool is the judge; the evaluate node already wraps the judge for the state.
    builder.add_node("critic", in_run_view(evaluate))
    builder.add_node(accept, in_run_view(accept_node(spec)))
    builder.add_node("stop", in_run_view(stop))
    builder.add_node("baseline", in_run_view(baseline))
    builder.add_edge(START, "setup")
    builder.add_conditional_edges("setup", after_setup_writer)  # --init-image: the user's picture is judged first
    builder.add_edge("baseline", "generator")
    builder.add_edge("generator", "generate")
    builder.add_edge("generate", "critic")
    builder.add_edge("critic", accept)
    builder.add_conditional_edges(accept, route_after_critique)
    builder.add_edge("stop", END)
    return builder


#: The builder of each graph shape a strategy may name (StrategySpec.shape).
BUILDERS: dict[Shape, Callable[[StrategySpec], Builder]] = {
    "loop": build_loop,
    "agent-router": build_agent_router,
    "evaluator-optimizer": build_evaluator_optimizer,
}
