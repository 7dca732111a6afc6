"""The run's own judge on one image, whichever it is (the 1-10 scorer, or the checklist): a round's samples folded
into the image's record, or one fresh look for a second opinion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refineloop.judges.base import Judging
from refineloop.judges.checklist import ask_checklist, checklist_score, questions_of
from refineloop.judges.score import Look, look, score_samples
from refineloop.state import Candidate


def score_image(j: Judging, candidate: Candidate, samples: int) -> Candidate:
    """Judge an image `samples` times and fold the answers into its record (mean score, every sample)."""
    if j.settings.judge == "checklist":  # weighted yes/no questions instead of a 1-10 score
        return checklist_score(j, candidate, samples)
    return score_samples(j, candidate, samples)


def fresh_look(j: Judging, candidate: Mapping[str, Any], *, temperature: float, label: str) -> Look | None:
    """One more look at `candidate` by the judge the run uses; None when nothing readable came back."""
    if j.settings.judge == "checklist" and (questions := questions_of(j.task)):
        return ask_checklist(j, candidate, questions, temperature=temperature, label=label)
    return look(j, candidate, temperature=temperature, label=label)
