"""A DONE is confirmed by a second look before it stops a run (--confirm-done, on by default).

One lucky reading should not end a search: in a simulated world with a biased critic, a quarter or more of the
runs that stopped on DONE stopped below the quality the critic claimed. So a DONE that could stop the run (the
image ties or beats the best, the route's own rule) gets a fresh warm sample from the run's judge and, when
another image holds the title, a duel with it in both orders. The DONE stands when the sample says DONE too and
the image did not lose both orders; otherwise the verdict becomes CONTINUE (with the second look's idea, when
it gave one) and the run goes on. The look is kept in the image's record (`confirm`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refineloop.judges.base import Judging
from refineloop.judges.duel import duel
from refineloop.judges.knobs import DUEL_WINS, WARM
from refineloop.judges.measure import count_done
from refineloop.judges.samples import fresh_look
from refineloop.progress_events import critic_phase
from refineloop.state import Candidate


def could_stop(chosen: Mapping[str, Any], best: Mapping[str, Any] | None) -> bool:
    """Whether this DONE would end the run: the route stops on a DONE whose image ties or beats the best."""
    if chosen.get("verdict") != "DONE" or chosen.get("score") is None:
        return False
    return best is None or best.get("score") is None or chosen["score"] >= best["score"]


def confirm_done(j: Judging, chosen: Candidate, best: Mapping[str, Any] | None) -> Candidate:
    """A round's last look: `chosen` as it goes to acceptance, its DONE upheld or turned into CONTINUE."""
    if not j.settings.confirm_done or not could_stop(chosen, best):
        return chosen
    duels = bool(best and best.get("iteration") != chosen["iteration"] and best.get("score") is not None)
    with critic_phase(f"DONE check of image {chosen['iteration']}", 1 + 2 * duels):
        return _confirm(j, chosen, best)


def _confirm(j: Judging, chosen: Candidate, best: Mapping[str, Any] | None) -> Candidate:
    second = fresh_look(j, chosen, temperature=WARM, label="confirm")
    record: dict[str, Any] = {"sample": None if second is None else second.score}
    upheld = second is not None and second.verdict == "DONE"
    if second is not None:
        record["verdict"] = second.verdict
    if best and best.get("iteration") != chosen["iteration"] and best.get("score") is not None:
        met = duel(j, chosen, best, label="confirm-duel")
        if met is not None:
            record["duel"] = {**met.to_dict(), "wins": met.wins(chosen["iteration"])}
            upheld = upheld and met.wins(chosen["iteration"]) >= DUEL_WINS
        else:
            upheld = False  # no call left for the duel: an unchecked DONE does not stop the run
    record["upheld"] = upheld
    j.count(**count_done(upheld))
    confirmed: Candidate = {**chosen, "confirm": record}
    if not upheld:
        idea = second.next_idea if second is not None and second.next_idea else chosen.get("next_idea", "")
        confirmed.update({"verdict": "CONTINUE", "next_idea": idea})
    return confirmed
