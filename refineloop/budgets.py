"""Run budgets: images, critic calls and working time. Each stops the run cleanly and says which."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from refineloop.settings import RunSettings


def critic_calls_left(state: Mapping[str, Any], settings: RunSettings) -> int | None:
    """Critic calls still allowed; None when there is no critic-call budget."""
    if not settings.max_critic_calls:
        return None
    return max(0, settings.max_critic_calls - int(state.get("critic_calls", 0)))


def can_spare_call(state: Mapping[str, Any], settings: RunSettings) -> bool:
    """Whether a proposer or summarizer call still leaves one judge call for every image of the next round (and
    for each full image a walk's stop draws).

    When it does not, those steps fall back to their deterministic answer, so the budget is spent on
    judging, which is what decides what is kept.
    """
    left = critic_calls_left(state, settings)
    return left is None or left > settings.candidates + settings.stop_draws()


def budget_stop_reason(state: Mapping[str, Any], settings: RunSettings) -> str | None:
    """Why a budget ends the run before the next round, or None."""
    # A walk on drafts keeps back, from both budgets, the full images its stop draws and judges.
    kept_back = settings.stop_draws()
    if settings.max_images and state.get("iteration", 0) >= settings.rounds_image_budget():
        return f"reached the image budget (--max-images {settings.max_images}{_kept_for_the_stop(kept_back, 'draws')})"
    left = critic_calls_left(state, settings)
    if left is not None and left < settings.candidates + kept_back:
        used = state.get("critic_calls", 0)
        kept = _kept_for_the_stop(kept_back, "judges")
        return f"reached the critic-call budget (--max-critic-calls {settings.max_critic_calls}; {used} used{kept})"
    if settings.max_seconds and state.get("seconds", 0.0) >= settings.max_seconds:
        return f"reached the time budget (--max-seconds {settings.max_seconds:g}; {state['seconds']:.1f} s worked)"
    return None


def _kept_for_the_stop(full: int, does: str) -> str:
    if not full:
        return ""
    return f"; {full} kept for the full image{'s' if full > 1 else ''} the walk's stop {does}"
