"""The end of a walk on drafts (--draft-walk): the stop draws the walk's best drafts in full before the final pick.

On a walk every round's image is a draft (refineloop.round_request: --draft-steps, --draft-size), judged and kept by
the strategy like any image, so the search takes several steps for the cost of one full image. What the walk found
is only a draft, though; at the stop the drafts that the final pick would meet (or the best alone with
--final-pick 0, and the one whose DONE stopped the run) are drawn in full with their own seeds and prompts,
numbered after the walk's images, and judged; the final pick then chooses among those full images only
(refineloop.judges.final_pick), so best.png is always drawn in full. A full image's record names its draft.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig

from refineloop.backends.image.requests import run_request
from refineloop.backends.model_cache import models_for
from refineloop.budgets import critic_calls_left
from refineloop.judges.base import Budget, Judging
from refineloop.judges.checklist import with_questions
from refineloop.judges.final_pick import pool_of, record_of
from refineloop.judges.samples import score_image
from refineloop.nodes.round_draw import draw_round
from refineloop.progress_events import critic_phase
from refineloop.run_folder import image_writer
from refineloop.run_folder.image_files import read_record, save_json, sidecar_path
from refineloop.settings import RunSettings
from refineloop.state import Candidate, RefineState
from refineloop.tasks import Task


def finish_walk(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
    """Draw the walk's best drafts in full and judge them; the update moves `iteration` past them and makes the
    full image of the best draft the best. Empty when the run is no walk, or has no draft to finish. A re-run of
    the stop keeps the full images a crash left judged on disk, and draws the rest again (same seeds, same
    images)."""
    settings = RunSettings.from_state(state["settings"])
    if not settings.draft_walk or not state.get("best"):
        return {}
    drafts = walk_pool(state, settings)
    if not drafts:  # the best is the user's own picture (--init-image), and no draft would meet it
        return {}
    started = time.perf_counter()
    task = Task.from_dict(state["task"])
    if state.get("checklist"):
        task = with_questions(task, state["checklist"])
    j = Judging(models_for(config), settings, task, state["run_dir"], Budget(critic_calls_left(state, settings)))
    first = state["iteration"] + 1
    finished: list[Candidate] = []
    for number, draft in enumerate(drafts, start=first):
        kept = finished_before(state["run_dir"], number, draft)
        finished.append(kept if kept is not None else draw_and_judge(state, config, j, draft, number))
    image_writer.wait_for([c["path"] for c in finished])  # best.png is copied from one of them next
    pairs = list(zip(finished, drafts, strict=True))
    best = state["best"]
    assert best is not None
    crowned = next((c for c, d in pairs if d["iteration"] == best["iteration"]), best)
    record = [{"iteration": c["iteration"], "draft": d["iteration"], "score": c.get("score")} for c, d in pairs]
    return {
        "iteration": first + len(finished) - 1,
        "best": crowned,
        "walk_finish": record,
        "critic_calls": j.budget.used,
        "seconds": time.perf_counter() - started,
    }


def walk_pool(state: RefineState, settings: RunSettings) -> list[Candidate]:
    """The drafts to draw in full: the final pick's pool drawn among the drafts alone (the best first), or the
    best alone when there is no final pick; never the user's own picture (--init-image), which is not a draft."""
    best = state["best"]
    assert best is not None
    if settings.final_pick < 2:
        return [record_of(state["run_dir"], best["iteration"], dict(best))] if best.get("walk_draft") else []
    candidate = state.get("candidate") or {}
    said_done = candidate.get("iteration") if candidate.get("verdict") == "DONE" else None
    return pool_of(state["run_dir"], best, settings.final_pick, said_done, among=is_walk_draft)


def is_walk_draft(record: Mapping[str, Any]) -> bool:
    """Whether an image's record is one of the walk's drafts (a full image drawn at an earlier try of this stop
    is not, and must not take a draft's place in the pool)."""
    return bool(record.get("walk_draft"))


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
    request = run_request(
        j.settings,
        Task.from_dict(state["task"]),
        model.traits,
        prompt=draft["prompt"],
        seeds=(draft["seed"],),
        init_image=draft.get("init_image"),
        strength=draft.get("strength"),
    )
    walk = draft["walk_draft"]
    view: RefineState = {**state, "idea": draft["idea"], "prompt": walk.get("base_prompt", state["prompt"])}
    drawn = draw_round(view, config, model, request, [], range(number, number + 1))["candidate"]
    drawn["draft"] = {"iteration": draft["iteration"], "path": draft["path"], "score": draft.get("score")}
    with critic_phase(f"judging image {number}, draft #{draft['iteration']} drawn in full", j.settings.judge_samples):
        judged = score_image(j, drawn, j.settings.judge_samples)
    decision = f"drawn in full at the stop from draft #{draft['iteration']}"
    save_json({**judged, "decision": decision}, sidecar_path(j.run_dir, number))
    return judged
