"""`stop`: crown the best (after the final pick), mark the run done and write best.png, summary.txt, collage.png.

Every graph shape ends here. The reason is the shared stop rules' (refineloop.stopping); where none fired, it
is the one the step that chose to stop wrote into `stop_reason` (the reviewer, agent mode's router).
"""

from __future__ import annotations

from typing import Any, cast

from langchain_core.runnables import RunnableConfig

from refineloop.judges.finish import applied, finish
from refineloop.nodes.walk import finish_walk
from refineloop.outputs.artifacts import write_artifacts
from refineloop.state import RefineState
from refineloop.stopping import stop_reason


def stop(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Finish the run: a walk's best drafts drawn in full (refineloop.nodes.walk), the final pick and the audit
    (refineloop.judges.finish), then the artifacts, rewritten from scratch, so a re-run is harmless."""
    reason = stop_reason(state) or state.get("stop_reason") or "stopped"
    walked = finish_walk(state, config)
    picked = finish(applied(dict(state), walked), config)
    # `applied` merges plain dicts, counters added: the two steps' updates as one, then the state they make.
    update = {**applied(walked, picked), "status": "done", "stop_reason": reason}
    write_artifacts(cast(RefineState, applied(dict(state), update)))
    return update
