"""A round's drafts judged (--draft-steps, --draft-size): which one, if any, earns a full image.

Every draft gets the run's judge (samples, checklist) at once; the best-judged is the round's winner. It is drawn
in full only when its score beats the best image's by --draft-margin (0.5 by default: strictly higher on a
whole-number scale; 0 lets a tie through, onto which climbing would walk sideways); otherwise the round ends as a
miss, and its ideas join the failed ones so the proposer looks elsewhere. A draft's DONE stops nothing: only a
full image can end the run. Each draft's record is written beside it in drafts/.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refineloop.backends.chat.fan_out import run_all
from refineloop.judges.base import Judging
from refineloop.judges.checklist import prepare_checklist
from refineloop.judges.round import round_extras
from refineloop.judges.samples import score_image
from refineloop.run_folder.image_files import save_json
from refineloop.state import Candidate


def judge_drafts(j: Judging, state: Mapping[str, Any]) -> dict[str, Any]:
    """Judge the round's drafts; the update names the winner to draw in full, or records the round as a miss."""
    task, checklist = prepare_checklist(j, state)
    j = dataclasses.replace(j, task=task)
    drafts: list[Candidate] = state["drafts"]
    samples = j.settings.judge_samples
    scorings = [functools.partial(score_image, j, d, samples) for d in drafts]
    judged = run_all(scorings, j.at_once(len(drafts) * samples * j.settings.judge_attempts))
    chosen = max(judged, key=lambda c: -1.0 if c["score"] is None else c["score"])
    best = state.get("best") or {}
    held = best.get("score")
    margin = j.settings.draft_margin
    reaches = chosen["score"] is not None and (held is None or chosen["score"] >= held + margin)
    for draft in judged:
        save_json(
            {**draft, "decision": draft_decision(draft, chosen, reaches, held, margin)},
            Path(draft["path"]).with_suffix(".json"),
        )
    update: dict[str, Any] = {"drafts": [], **round_extras(judged, j, checklist)}
    ideas = list(dict.fromkeys(d["idea"] for d in judged if d.get("idea") and (d is not chosen or not reaches)))
    if reaches:
        update["draft_winner"] = chosen
        ideas = [idea for idea in ideas if idea != chosen["idea"]]
    else:
        update.update(draft_missed=True, decision="rejected", misses=int(state.get("misses", 0)) + 1)
    if ideas:
        update["failed_ideas"] = ideas
    return update


def draft_decision(draft: Candidate, chosen: Candidate, reaches: bool, held: float | None, margin: float) -> str:
    """What became of one draft, in words, for its record."""
    if draft is not chosen:
        return "not drawn: another draft of its round was judged better"
    if reaches:
        return f"drawn in full as image {draft['iteration']}"
    return f"not drawn: its score {draft['score']} is not {margin:g} above the best's {held} (--draft-margin)"
