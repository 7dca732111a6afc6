"""A critic measured on purpose, image by image (judge-check's looks and duels; the command is
refineloop.apps.judge_check): two cold looks at each image (does a cold score repeat?), warm ones (how far do
they spread?), duels in both orders between images of close score (position flips, ties, agreement with the
scores), the auditor's own score of each image, and one checklist look (does the backend return log
probabilities?). With drafts, each image's draft (the same request with fewer steps or a smaller size) gets a
cold look too: do drafts rank the images as their full images do? The counters are those a run counts in
passing (refineloop.judges.measure), and the drafts' own.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from typing import Any, TextIO

from refineloop.judges.audit import auditor_settings
from refineloop.judges.base import Judging
from refineloop.judges.checklist import ask_checklist, fallback_questions, questions_of
from refineloop.judges.duel import count_duel, duel
from refineloop.judges.knobs import COLD, WARM
from refineloop.judges.measure import (
    add,
    count_audit,
    count_draft,
    count_draft_order,
    count_repeat,
    count_samples,
    count_tie,
)
from refineloop.judges.score import look


@dataclass
class CheckImage:
    """One image under check, with every look it got."""

    iteration: int
    path: str
    prompt: str
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    audit: float | None = None
    draft_path: str | None = None
    """The image's draft, when the check measures drafts."""
    draft: float | None = None
    """The draft's cold score."""

    @property
    def score(self) -> float | None:
        """Its score for ranking: the mean of every look."""
        looks = [*self.cold, *self.warm]
        return round(statistics.fmean(looks), 2) if looks else None

    def record(self) -> dict[str, Any]:
        """What the duels and the report see of it."""
        return {"iteration": self.iteration, "path": self.path, "prompt": self.prompt, "score": self.score}


def close_pairs(images: list[CheckImage], count: int) -> list[tuple[CheckImage, CheckImage]]:
    """Up to `count` pairs, the closest in score first: where a judge's position lean decides most."""
    pairs = list(itertools.combinations(images, 2))
    pairs.sort(key=lambda pair: (abs((pair[0].score or 0) - (pair[1].score or 0)), pair[0].iteration))
    return pairs[:count]


def planned_calls(images: int, *, samples: int, pairs: int, audit: bool, drafts: bool = False) -> int:
    """How many critic calls `measure_critic` makes when every call is answered: two cold looks and `samples`
    warm ones an image, both orders of each duel, one auditor look an image, one cold look at each draft, and
    the checklist probe."""
    duels = min(pairs, images * (images - 1) // 2)
    return images * (2 + samples) + 2 * duels + (images if audit else 0) + (images if drafts else 0) + 1


def measure_critic(
    j: Judging, images: list[CheckImage], *, samples: int, pairs: int, out: TextIO
) -> tuple[dict[str, float], dict[str, Any]]:
    """Every look and duel of the check; the counters, and what else was learnt (log probabilities, pairs)."""
    stats: dict[str, float] = {}
    for image in images:
        record = image.record()
        image.cold = [found.score for _ in range(2) if (found := look(j, record, temperature=COLD, label="check-cold"))]
        if len(image.cold) == 2:
            add(stats, count_repeat(*image.cold))
        image.warm = [
            found.score for _ in range(samples) if (found := look(j, record, temperature=WARM, label="check-warm"))
        ]
        add(stats, count_samples(image.warm))
        out.write(f"  #{image.iteration}: cold {_scores(image.cold)}, warm {_scores(image.warm)}\n")
    for a, b in itertools.combinations(images, 2):
        if a.cold and b.cold:
            add(stats, count_tie(a.cold[0], b.cold[0]))
    held = []
    for a, b in close_pairs(images, pairs):
        met = duel(j, a.record(), b.record(), label="check-duel", counted=False)
        if met is not None:
            add(stats, count_duel(met, a.score, b.score))
            held.append(met.to_dict())
    extra: dict[str, Any] = {"duels": held}
    if j.settings.audit_model:
        auditor = j.models.judge_model(auditor_settings(j.settings), COLD)
        for image in images:
            found = look(j, image.record(), temperature=COLD, label="check-audit", runnable=auditor)
            image.audit = None if found is None else found.score
        for a, b in itertools.combinations(images, 2):
            if None not in (a.score, b.score, a.audit, b.audit) and a.score != b.score and a.audit != b.audit:
                add(stats, count_audit((a.score > b.score) == (a.audit > b.audit)))  # type: ignore[operator]
    add(stats, measure_drafts(j, images, out))
    questions = questions_of(j.task) or fallback_questions(j.task)
    probe = ask_checklist(j, images[0].record(), questions, temperature=COLD, label="check-logprobs")
    extra["logprobs"] = None if probe is None else probe.from_logprobs
    return stats, extra


def measure_drafts(j: Judging, images: list[CheckImage], out: TextIO) -> dict[str, float]:
    """A cold look at each image's draft, beside the image's first cold look; then, for each pair of images of
    different cold scores, whether their drafts order them alike (nothing without drafts)."""
    stats: dict[str, float] = {}
    drafted = [image for image in images if image.draft_path and image.cold]
    for image in drafted:
        record = {"iteration": image.iteration, "path": image.draft_path, "prompt": image.prompt, "score": None}
        found = look(j, record, temperature=COLD, label="check-draft")
        image.draft = None if found is None else found.score
        if image.draft is not None:
            add(stats, count_draft(image.cold[0], image.draft))
        out.write(f"  #{image.iteration}'s draft: cold {_scores([] if image.draft is None else [image.draft])}\n")
    for a, b in itertools.combinations([i for i in drafted if i.draft is not None], 2):
        if a.cold[0] != b.cold[0]:
            add(stats, count_draft_order((a.cold[0], b.cold[0]), (a.draft, b.draft)))  # type: ignore[arg-type]
    return stats


def _scores(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values) or "none readable"
