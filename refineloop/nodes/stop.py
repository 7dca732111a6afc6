"""`stop`: crown the best (after the final pick), mark the run done and write best.png, summary.txt, collage.png.

Every graph shape ends here. The reason is the shared stop rules' (refineloop.stopping); where none fired, it
is the one the step that chose to stop wrote into `stop_reason` (the reviewer, agent mode's router).
"""

from __future__ import annotations

from typing import Any, cast

from langchain_core.runnables import RunnableConfig

from refineloop.judges.finish import applied, audit_step, pick_step
from refineloop.nodes.walk import finish_walk, first_in_full
from refineloop.outputs.artifacts import write_artifacts
from refineloop.state import RefineState
from refineloop.stopping import stop_reason


def stop(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Finish the run: the final pick (refineloop.judges.finish), a walk's crowned draft drawn in full
    (refineloop.nodes.walk), the audit, then the artifacts, rewritten from scratch, so a re-run is harmless."""
    reason = stop_reason(state) or state.get("stop_reason") or "stopped"
    # `applied` merges plain dicts, counters added: each step sees the state the steps before it made, and the
    # node's update is all of theirs as one.
    update = pick_step(dict(state), config)
    update = applied(update, finish_walk(cast(RefineState, applied(dict(state), update)), config))
    first = first_in_full(update.get("walk_finish"))
    update = applied(update, audit_step(applied(dict(state), update), config, first))
    update.update(status="done", stop_reason=reason)
    write_artifacts(cast(RefineState, applied(dict(state), update)))
    return update
