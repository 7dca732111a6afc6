"""A tie with the best is judged again (--judge-samples above 1): a lucky score on the best must not stand forever.

When the round's image scores within TIE_MARGIN of the best, the best gets as many fresh samples as the challenger
had. Its revised score is written back to its sidecar (which keeps its `first_score` and every re-score), and with
--judge score the best is then again the highest-scored image judged so far, the earliest on a tie: a re-score
that drops the incumbent below an earlier image hands the title to that image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refineloop.judges.base import Judging
from refineloop.judges.knobs import TIE_MARGIN
from refineloop.judges.samples import score_image
from refineloop.run_folder.image_files import image_path, read_record, sidecar_path
from refineloop.run_folder.score_index import save_sidecar, top_score
from refineloop.state import Candidate
from refineloop.strategies import spec_for

Rescored = tuple[Candidate, Candidate]
"""The best as it was, and as it was judged again."""


def rescore_tie(
    j: Judging, state: Mapping[str, Any], chosen: Candidate, *, before: int
) -> tuple[dict[str, Any], Rescored | None]:
    """The state's new `best` (and `current`, when it stood on the best) after a tie is judged again, and the
    re-score to record once the round's calls are done; ({}, None) when there is no tie to settle. `before` is
    the round's first image: the images judged before it are those the best is chosen among."""
    spec = spec_for(j.settings.strategy)
    best = state.get("best")
    held, score = (best.get("score") if best else None), chosen.get("score")
    if not (j.settings.judge_samples > 1 and best and held is not None and score is not None and spec.rescores_ties):
        return {}, None
    if abs(score - held) >= TIE_MARGIN:
        return {}, None
    revised = score_image(j, best, j.settings.judge_samples)
    leader = highest_scored(j.run_dir, revised, before=before, held=held) if j.settings.judge == "score" else revised
    update: dict[str, Any] = {"best": leader}
    current = state.get("current")
    if current and current["iteration"] == revised["iteration"]:
        # A walk that must beat the best stands on the best again; one that compares with the current image
        # walks on from the re-scored image's record.
        update["current"] = revised if spec.compares_with == "current" else leader
    return update, (best, revised)


def record_rescore(run_dir: str, before: Candidate, after: Candidate, *, at: int) -> None:
    """Rewrite a re-scored image's sidecar with what it now says (score, samples, verdict, critique, idea),
    keeping the score it was first given (`first_score`) and each re-score (`rescores`: the image that
    caused it, the revised score). Re-running the node for the same challenger replaces its entry."""
    path = sidecar_path(run_dir, after["iteration"])
    record = read_record(path) or dict(before)  # bounded and type-checked: the sidecar is a file on disk
    first = record.get("first_score", record.get("score", before.get("score")))
    rescores = [r for r in record.get("rescores") or [] if isinstance(r, dict) and r.get("at") != at]
    rescores.append({"at": at, "score": after.get("score")})
    record.update({key: after[key] for key in ("score", "samples", "verdict", "critique", "next_idea") if key in after})
    record.update(first_score=first, rescores=rescores)
    save_sidecar(record, run_dir, after["iteration"])


def highest_scored(run_dir: str, incumbent: Candidate, *, before: int, held: float | None = None) -> Candidate:
    """The best under `--judge score` once the incumbent has a revised score: the highest-scored image among
    those judged before image `before` (the incumbent with its new score), the earliest on a tie.

    Earlier images' scores come from their sidecars, the record of every judged image; an image that takes the
    title is rebuilt from its sidecar, with its path in this run folder. The incumbent held the title at its
    score before (`held`): one that did not drop keeps it without a look at the others, so a long run does not
    read every sidecar at every tie.
    """
    revised = incumbent.get("score")
    if held is not None and revised is not None and revised >= held:
        return incumbent
    # The others' scores come from an index this process keeps up to date (see score_index).
    found = top_score(run_dir, below=before, skip=incumbent["iteration"])
    if found is None:
        return incumbent
    top, score = found
    if revised is not None and (revised > score or (revised == score and incumbent["iteration"] < top)):
        return incumbent
    record = read_record(sidecar_path(run_dir, top))
    if record is None:
        return incumbent
    known = Candidate.__annotations__
    leader: Candidate = {k: v for k, v in record.items() if k in known}  # type: ignore[assignment]
    leader.update({"iteration": top, "path": str(image_path(run_dir, top))})
    return leader
