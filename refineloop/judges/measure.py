"""How far a critic can be trusted, in numbers: counted in passing during a run, and on purpose by judge-check.

A run adds counters to its state's `judge_stats` (a reducer sums them; a duel's come from
`refineloop.judges.duel.count_duel`); `judge-check` makes the same counters on purpose. Both print them through
`measure_rows`, so a run's summary.txt and the check's table read alike:

- cold score repeats: the same image judged twice at temperature 0, the same score both times;
- cold scores tie (judge-check): pairs of different images given the same cold score (a squeezed scale);
- warm sample spread: the standard deviation of an image's warm samples (--judge-samples, the final pick);
- duel position flips: duels whose two orders named different winners (the position decided, not the images);
- duel ties: orders that named no winner (a TIE, an abstention, or an unreadable reply);
- scores agree with duels: of the duels one image won in both orders, between images of different scores,
  how often the higher-scored one won;
- DONE confirmed: of the DONEs that could have stopped the run, how many a second look upheld;
- auditor agrees (judge-check): pairs of images the critic and the auditor rank the same way;
- drafts rank like their full images (judge-check with --draft-steps or --draft-size): pairs of images of
  different cold scores whose drafts' cold scores order them the same way (a tie of the drafts does not), and
  how far, on average, a draft's cold score lies from its full image's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def count_samples(scores: Sequence[float]) -> dict[str, float]:
    """The counters an image's warm samples add (nothing for fewer than two)."""
    if len(scores) < 2:
        return {}
    return {"sampled": 1, "spread": statistics.stdev(scores)}


def count_repeat(first: float, second: float) -> dict[str, float]:
    """The counters of one cold repeat."""
    return {"repeats": 1, "repeated": int(first == second)}


def count_tie(first: float, second: float) -> dict[str, float]:
    """The counters of one pair of different images' cold scores."""
    return {"score_pairs": 1, "score_tied": int(first == second)}


def count_done(confirmed: bool) -> dict[str, float]:
    """The counters of one DONE put to a second look."""
    return {"dones": 1, "dones_upheld": int(confirmed)}


def count_audit(same_order: bool) -> dict[str, float]:
    """The counters of one pair of images ranked by both the critic and the auditor."""
    return {"audit_pairs": 1, "audit_agree": int(same_order)}


def count_draft(full: float, draft: float) -> dict[str, float]:
    """The counters of one image's cold score beside its draft's."""
    return {"drafts": 1, "draft_gap": abs(full - draft)}


def count_draft_order(full: tuple[float, float], draft: tuple[float, float]) -> dict[str, float]:
    """The counters of one pair of images of different cold scores, and their drafts' cold scores."""
    same = draft[0] != draft[1] and (full[0] > full[1]) == (draft[0] > draft[1])
    return {"draft_pairs": 1, "draft_agree": int(same)}


def add(total: dict[str, float], more: dict[str, float]) -> dict[str, float]:
    """Counters summed (the state reducer's rule, for code that collects outside the graph)."""
    for key, value in more.items():
        total[key] = total.get(key, 0) + value
    return total


def rates(stats: dict[str, float], comparisons: int = 0, order_flips: int = 0) -> dict[str, tuple[float | None, int]]:
    """Each measure as (value, how many observations it rests on); value None when nothing was observed.

    `comparisons` and `order_flips` are the evaluate node's own pairwise counters (--judge pairwise), which
    count duels and their flips but not their ties.
    """

    def ratio(part: str, whole: str, extra_part: float = 0, extra_whole: float = 0) -> tuple[float | None, int]:
        n = stats.get(whole, 0) + extra_whole
        return ((stats.get(part, 0) + extra_part) / n if n else None, int(n))

    sampled, drafts = stats.get("sampled", 0), stats.get("drafts", 0)
    return {
        "cold_repeat": ratio("repeated", "repeats"),
        "score_ties": ratio("score_tied", "score_pairs"),
        "warm_spread": (stats.get("spread", 0) / sampled if sampled else None, int(sampled)),
        "flip_rate": ratio("flips", "duels", order_flips, comparisons),
        "tie_rate": ratio("ties", "orders"),
        "agreement": ratio("agree", "agree_pairs"),
        "done_upheld": ratio("dones_upheld", "dones"),
        "audit_agreement": ratio("audit_agree", "audit_pairs"),
        "draft_agreement": ratio("draft_agree", "draft_pairs"),
        "draft_gap": (stats.get("draft_gap", 0) / drafts if drafts else None, int(drafts)),
    }


#: (measure, label, unit of its count) in the order they are shown.
ROWS = (
    ("cold_repeat", "cold score repeats", "images"),
    ("score_ties", "cold scores tie between images", "pairs"),
    ("warm_spread", "warm sample spread", "images"),
    ("flip_rate", "duel position flips", "duels"),
    ("tie_rate", "duel ties and abstentions", "orders"),
    ("agreement", "scores agree with duels", "decided duels"),
    ("done_upheld", "DONE upheld by a second look", "DONEs"),
    ("audit_agreement", "auditor ranks pairs alike", "pairs"),
    ("draft_agreement", "drafts rank pairs like their images", "pairs"),
    ("draft_gap", "a draft's score off its image's", "drafts"),
)


def shown(key: str, value: float | None) -> str:
    """A measure as a person reads it."""
    if value is None:
        return "not measured"
    if key == "warm_spread":
        return f"{value:.2f} points (std. dev.)"
    if key == "draft_gap":
        return f"{value:.2f} points (mean)"
    return f"{value:.0%}"


def measure_rows(measured: dict[str, tuple[float | None, int]]) -> list[tuple[str, str, str]]:
    """(label, value, basis) for every measure with something behind it, in display order."""
    rows = []
    for key, label, unit in ROWS:
        value, n = measured.get(key, (None, 0))
        if value is not None:
            rows.append((label, shown(key, value), f"{n} {unit if n != 1 else unit.removesuffix('s')}"))
    return rows


def run_lines(state: dict[str, Any]) -> list[str]:
    """What summary.txt says about the judge of this run (empty when nothing was measured)."""
    measured = rates(state.get("judge_stats") or {}, state.get("comparisons", 0), state.get("order_flips", 0))
    rows = measure_rows(measured)
    if not rows:
        return []
    width = max(len(label) for label, _, _ in rows)
    lines = ["judge, measured in passing (`refineloop judge-check RUN_DIR` measures it on purpose):"]
    lines += [f"  {label:<{width}}  {value} ({basis})" for label, value, basis in rows]
    return lines
