"""`stop`: mark the run done and write best.png, summary.txt and collage.png."""

from __future__ import annotations

from typing import Any

from refineloop.nodes.routes import stop_reason
from refineloop.state import RefineState
from refineloop.tools.artifacts import write_artifacts


def stop(state: RefineState) -> dict[str, Any]:
    """Finish the run; the artifacts are rewritten from scratch, so a re-run is harmless."""
    reason = stop_reason(state) or "stopped"
    write_artifacts({**state, "status": "done", "stop_reason": reason})
    return {"status": "done", "stop_reason": reason}
