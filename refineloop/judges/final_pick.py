"""The final pick: before best.png is crowned, the top images meet again under a careful judge (--final-pick K).

A run's best is whatever won one noisy judgement along the way, and in simulated runs the image crowned was
often not the best one made. So at the stop the K highest-scored images, and the best if it is not among them,
meet again (when the K-th place falls inside a tie of scores, every image tied with it joins too, up to WIDEN
times K: a cut inside a tie would otherwise keep the earliest images, whatever they are): each gets FINAL_SAMPLES
fresh warm looks from the run's judge, and every pair duels in both orders. The winner has the most duel wins
(each order won is a point; an order that abstains gives neither a point); a tie goes to the higher mean of the
fresh looks (only those: the scores that put an image in the pool are biased upwards by the very luck that put it
there), then to the image already crowned, then to the earlier one. Every pool image's sidecar keeps its part
(`final_pick`), the state keeps the whole pick, and summary.txt and report.html show it.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Mapping
from typing import Any

from refineloop.judges.base import Judging
from refineloop.judges.duel import Duel, duel
from refineloop.judges.knobs import WARM
from refineloop.judges.measure import count_samples
from refineloop.judges.samples import fresh_look
from refineloop.knob_shapes import MAX_FINAL_PICK
from refineloop.progress_events import critic_phase
from refineloop.run_folder.image_files import image_path, read_record, read_sidecars, sidecar_path
from refineloop.run_folder.score_index import save_sidecar
from refineloop.state import Candidate

FINAL_SAMPLES = 2
"""Fresh warm looks per pool image."""
WIDEN = 2
"""How many times K the pool may grow to take the images tied with the K-th (never past MAX_FINAL_PICK, unless K
is larger). In bench/search.py's two worlds it lifted "truly the best" by 5 and 11 points, for 9 and 30 more
critic calls a run."""


def _scored(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def record_of(run_dir: str, iteration: int, record: dict[str, Any]) -> Candidate:
    """An image's state record rebuilt from its sidecar, with its path in this run folder."""
    known = Candidate.__annotations__
    candidate: Candidate = {k: v for k, v in record.items() if k in known}  # type: ignore[assignment]
    candidate["iteration"] = iteration
    candidate["path"] = str(image_path(run_dir, iteration))
    return candidate


def pool_of(
    run_dir: str,
    best: Mapping[str, Any] | None,
    k: int,
    said_done: int | None = None,
    *,
    among: Callable[[Mapping[str, Any]], bool] | None = None,
) -> list[Candidate]:
    """The images that meet again: the best first, then the highest-scored others (the earliest on a tie), K of
    them and every image tied with the K-th, up to WIDEN times K; and the image whose DONE stopped the run
    (`said_done`) always, even when its score ranks it outside: the run ended on its word. `among`: only the
    images whose records it accepts."""
    sidecars = read_sidecars(run_dir)
    if among is not None:
        sidecars = {it: rec for it, rec in sidecars.items() if among(rec)}
    ranked = sorted(
        (it for it, rec in sidecars.items() if _scored(rec.get("score"))), key=lambda it: (-sidecars[it]["score"], it)
    )
    first = best["iteration"] if best and best.get("iteration") in sidecars else None
    chosen = ([first] if first is not None else []) + [it for it in ranked if it != first]
    pool = chosen[: pool_size(chosen, sidecars, k)]
    if said_done is not None and said_done in sidecars and said_done not in pool:
        pool.append(said_done)
    return [record_of(run_dir, it, sidecars[it]) for it in pool]


def pool_size(chosen: list[int], sidecars: Mapping[int, Mapping[str, Any]], k: int) -> int:
    """K, or more when the images after the K-th in `chosen` tie with its score (up to WIDEN times K)."""
    if len(chosen) <= k:
        return len(chosen)
    cut = sidecars[chosen[k - 1]].get("score")
    most = min(len(chosen), max(k, min(WIDEN * k, MAX_FINAL_PICK)))
    size = k
    while size < most and _scored(cut) and sidecars[chosen[size]].get("score") == cut:
        size += 1
    return size


def walked(record: Mapping[str, Any]) -> bool:
    """Whether an image is one of a walk's own (a draft, or the user's picture), not a draft that the stop drew
    in full (--draft-walk), whose record names its draft."""
    return not record.get("draft")


def final_pick(j: Judging, best: Mapping[str, Any] | None, said_done: int | None = None) -> dict[str, Any] | None:
    """Judge the pool again and name the winner; None when fewer than two judged images exist. A pick the
    budget cut short decides on what it measured; one that could make no call at all keeps the best.
    `said_done`: the image whose DONE stopped the run, which always takes part. A walk on drafts picks among
    its own images, never a draft an earlier try of the stop drew in full (refineloop.nodes.walk)."""
    among = walked if j.settings.draft_walk else None
    pool = pool_of(j.run_dir, best, j.settings.final_pick, said_done, among=among)
    if len(pool) < 2:
        return None
    calls = len(pool) * FINAL_SAMPLES + len(pool) * (len(pool) - 1)  # fresh looks, then duels in both orders
    with critic_phase(f"final pick among {len(pool)} images", calls):
        return _pick(j, best, pool)


def _pick(j: Judging, best: Mapping[str, Any] | None, pool: list[Candidate]) -> dict[str, Any]:
    fresh: dict[int, list[float]] = {c["iteration"]: [] for c in pool}
    for candidate in pool:
        for _ in range(FINAL_SAMPLES):
            found = fresh_look(j, candidate, temperature=WARM, label="final-pick")
            if found is not None:
                fresh[candidate["iteration"]].append(found.score)
        j.count(**count_samples(fresh[candidate["iteration"]]))
    duels: list[Duel] = []
    for a, b in itertools.combinations(pool, 2):
        if (met := duel(j, a, b, label="final-duel")) is not None:
            duels.append(met)
    incumbent = pool[0]["iteration"] if best else None
    if not duels and not any(fresh.values()):
        skipped = "no critic calls left for it"
        return {"pool": [c["iteration"] for c in pool], "previous": incumbent, "winner": incumbent, "skipped": skipped}
    points = {c["iteration"]: sum(d.wins(c["iteration"]) for d in duels) for c in pool}
    means = {it: round(statistics.fmean(scores), 2) if scores else None for it, scores in fresh.items()}

    def strength(it: int) -> tuple[float, float, int, int]:
        mean = means[it]
        return (points[it], -1.0 if mean is None else mean, int(it == incumbent), -it)

    order = sorted(points, key=strength, reverse=True)
    most = 2 * (len(pool) - 1)
    entries = [
        {"iteration": it, "rank": rank, "points": points[it], "most": most, "samples": fresh[it], "mean": means[it]}
        for rank, it in enumerate(order, start=1)
    ]
    for entry in entries:
        _note(j.run_dir, entry)
    return {
        "pool": [c["iteration"] for c in pool],
        "previous": incumbent,
        "winner": order[0],
        "entries": entries,
        "duels": [d.to_dict() for d in duels],
    }


def _note(run_dir: str, entry: dict[str, Any]) -> None:
    """Keep an image's part in the final pick in its sidecar (rewritten, never appended, on a re-run)."""
    path = sidecar_path(run_dir, entry["iteration"])
    record = read_record(path)
    if record is not None:
        save_sidecar(
            {**record, "final_pick": {k: v for k, v in entry.items() if k != "iteration"}}, run_dir, entry["iteration"]
        )


def winner_record(run_dir: str, pick: dict[str, Any]) -> Candidate | None:
    """The winner's state record, from its sidecar (so best.png, summary.txt and report.html show its score)."""
    winner = pick.get("winner")
    if not isinstance(winner, int):
        return None
    record = read_record(sidecar_path(run_dir, winner))
    return None if record is None else record_of(run_dir, winner, record)


def pick_lines(pick: dict[str, Any] | None) -> list[str]:
    """What summary.txt says about the final pick."""
    if not pick:
        return []
    pool = ", ".join(f"#{it}" for it in pick.get("pool", []))
    if pick.get("skipped"):
        return [f"final pick among {pool}: skipped ({pick['skipped']}); the best stays #{pick.get('previous')}"]
    lines = [f"final pick among {pool}: #{pick['winner']} won (the best before it was #{pick.get('previous')})"]
    lines += [f"  {n}. {place}" for n, place in enumerate(pick_places(pick), start=1)]
    return lines


def pick_places(pick: dict[str, Any] | None) -> list[str]:
    """Each place of the final pick, first place first, WITHOUT its number: whoever shows the list numbers it
    once (summary.txt writes `1.`, the report an ordered list)."""
    if not pick or pick.get("skipped"):
        return []
    places = []
    for entry in sorted(pick.get("entries", []), key=lambda e: e["rank"]):
        looks = ", ".join(f"{s:g}" for s in entry["samples"]) or "none"
        mean = "?" if entry["mean"] is None else f"{entry['mean']:g}"
        places.append(
            f"#{entry['iteration']}: duel points {entry['points']} of {entry['most']}, "
            f"fresh looks {looks} (mean {mean})"
        )
    return places


def pick_headline(pick: dict[str, Any] | None) -> str:
    """The final pick in one line, for the run's progress ("" when there was none)."""
    if not pick or pick.get("skipped"):
        return f"final pick skipped: {pick['skipped']}" if pick else ""
    pool = ", ".join(f"#{it}" for it in pick.get("pool", []))
    if pick["winner"] == pick.get("previous"):
        return f"final pick among {pool}: #{pick['winner']} keeps the title"
    headline = f"final pick among {pool}: #{pick['winner']} takes the title from #{pick.get('previous')}"
    by_image = {entry["iteration"]: entry for entry in pick.get("entries", [])}
    won, lost = by_image.get(pick["winner"]), by_image.get(pick.get("previous"))
    if won and lost:
        # Say why, since the new best may have scored lower in the loop: the duels of the pick decide.
        headline += f" ({won['points']} of {won['most']} duel points against {lost['points']}"
        headline += "; equal points go to the higher fresh looks)" if won["points"] == lost["points"] else ")"
    return headline
