"""The end of a walk on drafts (--draft-walk): the stop draws the crowned draft in full.

On a walk every round's image is a draft (refineloop.round_request: --draft-steps, --draft-size), judged and kept by
the strategy like any image, so the search takes several steps for the cost of one full image. The final pick
meets the walk's best drafts as it meets any run's images (its looks and duels cost critic calls, not draws);
then the crowned draft is drawn in full with its own seed and prompt, numbered after the walk's images, and
judged, and best.png is that full image. With an auditor (--audit-model) the walk's first draft is drawn in full
too, so the audit compares two full images. A full image's record names its draft.

In bench/search.py's two simulated worlds, picking among the drafts and drawing only the winner in full reached
more quality per image than drawing the pick's pool in full and picking among those (docs/bench.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.judges.base import Judging
from refineloop.judges.final_pick import record_of
from refineloop.judges.finish import spent, stop_judging
from refineloop.judges.samples import score_image
from refineloop.nodes.drafts import draw_full
from refineloop.progress_events import critic_phase
from refineloop.run_folder import image_writer
from refineloop.run_folder.image_files import read_record, read_sidecars, sidecar_path
from refineloop.run_folder.score_index import save_sidecar
from refineloop.settings import RunSettings
from refineloop.state import Candidate, RefineState


def finish_walk(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Draw the crowned draft in full (and the first one, for the audit) and judge it; the update moves
    `iteration` past the full images, makes the crowned draft's the best and records them in `walk_finish`.
    Empty when the run is no walk or its best is no draft (the user's own picture). A re-run of the stop keeps a
    full image an earlier try left judged on disk, when it is of the same draft."""
    settings = RunSettings.from_state(state["settings"])
    best = state.get("best")
    if not settings.draft_walk or not best or not best.get("walk_draft"):
        return {}
    started = time.perf_counter()
    j = stop_judging(dict(state), config)
    drafts = to_draw(state, settings, best)
    finished: list[Candidate] = []
    for number, draft in enumerate(drafts, start=state["iteration"] + 1):
        kept = finished_before(state["run_dir"], number, draft)
        finished.append(kept if kept is not None else draw_and_judge(state, config, j, draft, number))
    image_writer.wait_for([c["path"] for c in finished])  # best.png is copied from the first of them next
    record = [{"iteration": c["iteration"], "draft": d["iteration"], "score": c.get("score")} for c, d in zip(
        finished, drafts, strict=True
    )]  # fmt: skip
    update = {"iteration": finished[-1]["iteration"], "best": finished[0], "walk_finish": record}
    return {**update, **spent(j, started)}


def to_draw(state: RefineState, settings: RunSettings, best: Mapping[str, Any]) -> list[Candidate]:
    """The crowned draft, then, for an auditor, the walk's first draft (when the run has no picture of the user's
    as image 0, and the first draft is not the crowned one)."""
    run_dir = state["run_dir"]
    drafts = [record_of(run_dir, best["iteration"], dict(best))]
    if settings.audit_model and best["iteration"] != 1:
        sidecars = read_sidecars(run_dir)
        if 0 not in sidecars and (sidecars.get(1) or {}).get("walk_draft"):
            drafts.append(record_of(run_dir, 1, sidecars[1]))
    return drafts


def first_in_full(finish: list[dict[str, Any]] | None) -> int | None:
    """The full image of the walk's first draft, which the audit compares the crowned image with (None when
    the run drew none)."""
    return next((f["iteration"] for f in finish or [] if f["draft"] == 1), None)


def finished_before(run_dir: str, number: int, draft: Mapping[str, Any]) -> Candidate | None:
    """Image `number` as an earlier try at this stop left it, when it is `draft` drawn in full and judged."""
    record = read_record(sidecar_path(run_dir, number))
    if record is None or (record.get("draft") or {}).get("iteration") != draft["iteration"]:
        return None
    if record.get("score") is None:
        return None
    return record_of(run_dir, number, record)


def draw_and_judge(state: RefineState, config: RunnableConfig, j: Judging, draft: Candidate, number: int) -> Candidate:
    """Draw `draft` in full as image `number` (the run's steps and size, the draft's seed and prompt) and judge
    it as the run judges an image; its record names the draft."""
    model = j.models.image_model(j.settings)
    base_prompt = draft["walk_draft"].get("base_prompt", state["prompt"])
    drawn = draw_full(state, config, model, draft, base_prompt, number)["candidate"]
    drawn["draft"] = {"iteration": draft["iteration"], "path": draft["path"], "score": draft.get("score")}
    with critic_phase(f"judging image {number}, draft #{draft['iteration']} drawn in full", j.settings.judge_samples):
        judged = score_image(j, drawn, j.settings.judge_samples)
    decision = f"drawn in full at the stop from draft #{draft['iteration']}"
    save_sidecar({**judged, "decision": decision}, j.run_dir, number)
    return judged
