"""The judges' fixed temperatures and margins, in one place: every judging module reads them from here."""

from __future__ import annotations

COLD = 0.0
"""Temperature of a cold look (one score, a duel, a checklist written or asked once): as steady as the model is."""
WARM = 0.3
"""Temperature of a warm look (--judge-samples above 1, a second look, the final pick's fresh looks): enough to
decorrelate repeated looks at one image, not to wander."""
TIE_MARGIN = 0.5
"""Mean scores (1-10) closer than this tie: with --judge-samples above 1, a challenger that ties the best makes the
best be judged again."""
DUEL_WINS = 1
"""Orders of the duel with the best that a DONE image must win for its DONE to stand (--confirm-done)."""
PASS = 0.5
"""A checklist question counts as met when the chance of yes is at least this."""


def sample_temperature(samples: int) -> float:
    """The temperature of a round's looks at an image: warm when several are averaged, else cold."""
    return WARM if samples > 1 else COLD
