"""Builds the refinement StateGraph, one per strategy.

    START -> setup -> generate -> evaluate -> accept_<strategy> --> stop -> END
                         ^                        |--> summarize -> generate   (adopted: refine the critic's idea)
                         |                        '--> propose -> summarize     (rejected, or annealing)
                         '-------------- review <-- summarize   (review on: a person approves, edits or stops;
                                           '--> stop              nodes.review)

Two more loops hand the decisions to chat models (their shapes are drawn in their node modules):

    agent:                START -> setup -> router <-> generate | evaluate -> accept_agent | summarize | propose
                                              '-> stop -> END                  (refineloop.nodes.router)
    evaluator-optimizer:  START -> setup -> generator -> critic -> accept_evaluator_optimizer --> stop -> END
                                                ^------------------------------------------'   (nodes.agents)

The module-level graphs are compiled without a checkpointer, for `langgraph dev` (which brings its own
persistence and refuses a graph that has one); the CLI compiles with SQLite via `build_graph`.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from refineloop.nodes.accept import ACCEPT_NODES, accept_greedy
from refineloop.nodes.agents import generator, route_after_critique
from refineloop.nodes.evaluate import evaluate
from refineloop.nodes.generate import generate
from refineloop.nodes.propose import propose
from refineloop.nodes.review import ReviewState, review, route_after_review, route_to_review, stop_or_reviewed
from refineloop.nodes.router import AgentState, agent_stop, make_agent_setup, router
from refineloop.nodes.routes import route_after_accept
from refineloop.nodes.setup import make_setup
from refineloop.nodes.stop import stop
from refineloop.nodes.summarize import summarize
from refineloop.run_view import in_run_view
from refineloop.settings import STRATEGIES, RunSettings
from refineloop.state import RefineState

#: The node each strategy's graph writes its acceptance from; a fork seeds its new thread as this node, so the
#: graph's own route after acceptance decides what comes next (refineloop.apps.fork).
ACCEPT_NODE = {
    "greedy": "accept_greedy",
    "climbing": "accept_climbing",
    "annealing": "accept_annealing",
    "img2img": "accept_img2img",
    "agent": "accept_agent",
    "evaluator-optimizer": "accept_evaluator_optimizer",
}


def build_graph(strategy: str, checkpointer: Checkpointer = None) -> CompiledStateGraph:
    """Compile the loop for one strategy."""
    if strategy in AGENT_BUILDERS:
        return AGENT_BUILDERS[strategy](checkpointer)
    if strategy not in ACCEPT_NODES:
        raise ValueError(f"unknown strategy '{strategy}': use one of {', '.join(STRATEGIES)}")
    accept = f"accept_{strategy}"
    builder = StateGraph(ReviewState, context_schema=RunSettings)
    builder.add_node("setup", in_run_view(make_setup(strategy)))
    builder.add_node("generate", in_run_view(generate))
    builder.add_node("evaluate", in_run_view(evaluate))
    builder.add_node(accept, in_run_view(ACCEPT_NODES[strategy]))
    builder.add_node("propose", in_run_view(propose))
    builder.add_node("summarize", in_run_view(summarize))
    builder.add_node("review", in_run_view(review))
    # The reviewer's stop must carry its own reason, which the shared stop rules cannot know.
    builder.add_node("stop", in_run_view(stop_or_reviewed))
    builder.add_edge(START, "setup")
    builder.add_edge("setup", "generate")
    builder.add_edge("generate", "evaluate")
    builder.add_edge("evaluate", accept)
    builder.add_conditional_edges(accept, route_after_accept)
    builder.add_edge("propose", "summarize")
    # A conditional edge rather than a review node that passes: with review off no super-step is added.
    builder.add_conditional_edges("summarize", route_to_review)
    builder.add_conditional_edges("review", route_after_review)
    builder.add_edge("stop", END)
    return builder.compile(checkpointer=checkpointer, name=f"refine-{strategy}")


def build_agent_graph(checkpointer: Checkpointer = None) -> CompiledStateGraph:
    """Agent mode: every node returns to the router, which asks a tool-calling model where to go next.

    Acceptance stays a fixed edge after evaluate (greedy, like the seed's agent), and propose runs only when
    the fixed route asks for a new idea, so it leads straight to summarize.
    """
    builder = StateGraph(AgentState, context_schema=RunSettings)
    builder.add_node("setup", in_run_view(make_agent_setup("agent")))
    builder.add_node("router", in_run_view(router))
    builder.add_node("generate", in_run_view(generate))
    builder.add_node("evaluate", in_run_view(evaluate))
    builder.add_node("accept_agent", in_run_view(accept_greedy))
    builder.add_node("summarize", in_run_view(summarize))
    builder.add_node("propose", in_run_view(propose))
    builder.add_node("stop", in_run_view(agent_stop))
    builder.add_edge(START, "setup")
    builder.add_edge("setup", "router")
    builder.add_edge("generate", "router")
    builder.add_edge("evaluate", "accept_agent")
    builder.add_edge("accept_agent", "router")
    builder.add_edge("summarize", "router")
    builder.add_edge("propose", "summarize")
    builder.add_edge("stop", END)
    return builder.compile(checkpointer=checkpointer, name="refine-agent")


def build_evaluator_optimizer_graph(checkpointer: Checkpointer = None) -> CompiledStateGraph:
    """Evaluator-optimizer: the generator agent writes and draws, the critic agent judges, greedy keeps."""
    accept = "accept_evaluator_optimizer"
    builder = StateGraph(RefineState, context_schema=RunSettings)
    builder.add_node("setup", in_run_view(make_agent_setup("evaluator-optimizer")))
    builder.add_node("generator", in_run_view(generator))
    # The critic agent's one tool is the judge; the evaluate node already wraps the judge for the state.
    builder.add_node("critic", in_run_view(evaluate))
    builder.add_node(accept, in_run_view(accept_greedy))
    builder.add_node("stop", in_run_view(stop))
    builder.add_edge(START, "setup")
    builder.add_edge("setup", "generator")
    builder.add_edge("generator", "critic")
    builder.add_edge("critic", accept)
    builder.add_conditional_edges(accept, route_after_critique)
    builder.add_edge("stop", END)
    return builder.compile(checkpointer=checkpointer, name="refine-evaluator-optimizer")


#: Strategies whose loop is not the shared accept-and-route shape.
AGENT_BUILDERS = {"agent": build_agent_graph, "evaluator-optimizer": build_evaluator_optimizer_graph}

greedy = build_graph("greedy")
climbing = build_graph("climbing")
annealing = build_graph("annealing")
img2img = build_graph("img2img")
agent = build_graph("agent")
evaluator_optimizer = build_graph("evaluator-optimizer")
graph = greedy
