"""The graphs langgraph.json serves (Studio), one per strategy, compiled at import without a checkpointer.

`langgraph dev` brings its own persistence and refuses a graph that has one. How each graph is built, and the
shapes they take, is refineloop.graph_build; a run compiles its own graph there, with its checkpointer.
"""

from __future__ import annotations

from refineloop.graph_build import build_graph

greedy = build_graph("greedy")
climbing = build_graph("climbing")
annealing = build_graph("annealing")
img2img = build_graph("img2img")
agent = build_graph("agent")
evaluator_optimizer = build_graph("evaluator-optimizer")
