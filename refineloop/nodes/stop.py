"""`stop`: crown the best (after the final pick), mark the run done and write best.png, summary.txt, collage.png."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.judges.finish import applied, finish
from refineloop.nodes.routes import stop_reason
from refineloop.run_folder.artifacts import write_artifacts
from refineloop.state import RefineState


def stop(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Finish the run for the reason the shared stop rules give."""
    return stop_for(state, config, stop_reason(state) or "stopped")


def stop_for(state: RefineState, config: RunnableConfig | None, reason: str) -> dict[str, Any]:
    """Finish the run for `reason`: the final pick and the audit (refineloop.judges.finish), then the artifacts,
    rewritten from scratch, so a re-run is harmless."""
    update = {**finish(dict(state), config), "status": "done", "stop_reason": reason}
    write_artifacts(applied(dict(state), update))
    return update
