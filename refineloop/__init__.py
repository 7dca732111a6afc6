"""refineloop: iterative image refinement as a LangGraph state machine.

Kept import-light on purpose: `refineloop --help` must not pay for langgraph, torch or diffusers.
Import graphs from `refineloop.graph`, the engine from `refineloop.apps.engine`, and the terminal's `start_run`
and `resume_run` from `refineloop.cli.run_commands`.
"""

__version__ = "0.1.0"
