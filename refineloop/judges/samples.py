"""A fresh look at an image with the run's own judge: the 1-10 scorer, or the checklist."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refineloop.judges.base import Judging
from refineloop.judges.checklist import ask_checklist, questions_of
from refineloop.judges.score import Look, look


def fresh_look(j: Judging, candidate: Mapping[str, Any], *, temperature: float, label: str) -> Look | None:
    """One more look at `candidate` by the judge the run uses; None when nothing readable came back."""
    if j.settings.judge == "checklist" and (questions := questions_of(j.task)):
        return ask_checklist(j, candidate, questions, temperature=temperature, label=label)
    return look(j, candidate, temperature=temperature, label=label)
