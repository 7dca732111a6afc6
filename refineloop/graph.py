"""Builds the refinement StateGraph, one per strategy.

    START -> setup -> generate -> evaluate -> accept_<strategy> --> stop -> END
                         ^                        |--> summarize -> generate   (adopted: refine the critic's idea)
                         |                        '--> propose -> summarize     (rejected, or annealing)

The module-level graphs are compiled without a checkpointer, for `langgraph dev` (which brings its own
persistence and refuses a graph that has one); the CLI compiles with SQLite via `build_graph`.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from refineloop.nodes.accept import ACCEPT_NODES
from refineloop.nodes.evaluate import evaluate
from refineloop.nodes.generate import generate
from refineloop.nodes.propose import propose
from refineloop.nodes.routes import route_after_accept
from refineloop.nodes.setup import make_setup
from refineloop.nodes.stop import stop
from refineloop.nodes.summarize import summarize
from refineloop.settings import STRATEGIES, RunSettings
from refineloop.state import RefineState


def build_graph(strategy: str, checkpointer: Checkpointer = None) -> CompiledStateGraph:
    """Compile the loop for one strategy."""
    if strategy not in ACCEPT_NODES:
        raise ValueError(f"unknown strategy '{strategy}': use one of {', '.join(STRATEGIES)}")
    accept = f"accept_{strategy}"
    builder = StateGraph(RefineState, context_schema=RunSettings)
    builder.add_node("setup", make_setup(strategy))
    builder.add_node("generate", generate)
    builder.add_node("evaluate", evaluate)
    builder.add_node(accept, ACCEPT_NODES[strategy])
    builder.add_node("propose", propose)
    builder.add_node("summarize", summarize)
    builder.add_node("stop", stop)
    builder.add_edge(START, "setup")
    builder.add_edge("setup", "generate")
    builder.add_edge("generate", "evaluate")
    builder.add_edge("evaluate", accept)
    builder.add_conditional_edges(accept, route_after_accept)
    builder.add_edge("propose", "summarize")
    builder.add_edge("summarize", "generate")
    builder.add_edge("stop", END)
    return builder.compile(checkpointer=checkpointer, name=f"refine-{strategy}")


greedy = build_graph("greedy")
climbing = build_graph("climbing")
annealing = build_graph("annealing")
img2img = build_graph("img2img")
graph = greedy
