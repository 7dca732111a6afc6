"""refineloop: iterative image refinement as a LangGraph state machine.

Kept import-light on purpose: `refineloop --help` must not pay for langgraph, torch or diffusers.
Import graphs from `refineloop.graph` and the runner from `refineloop.apps.engine`.
"""

__version__ = "0.1.0"
