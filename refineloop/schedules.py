"""Deterministic schedules: seeds, annealing temperature and draws, img2img strength.

Everything random in a run derives from (seed, iteration), so a resumed run makes exactly the decisions
an uninterrupted one would have made.
"""

from __future__ import annotations

import hashlib
import random

#: Proposer temperature for strategies that do not cool: varied, but not wild.
STEADY_TEMPERATURE = 0.7
#: Horizon for the strength schedule of runs that go on until DONE (max_iterations 0).
OPEN_ENDED_HORIZON = 10


def derive_seed(seed: int, iteration: int, purpose: str = "image") -> int:
    """A 32-bit seed for one purpose at one iteration, stable across processes and Python versions."""
    digest = hashlib.sha256(f"{seed}:{purpose}:{iteration}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def image_seed(seed: int, iteration: int, first_seed: int | None = None) -> int:
    """The seed of image `iteration`: derived from the run seed, except image 1 when `first_seed` pins it
    (`run --from IMAGE` remakes that image first)."""
    if iteration == 1 and first_seed is not None:
        return first_seed
    return derive_seed(seed, iteration)


def draw(seed: int, iteration: int) -> float:
    """The annealing acceptance draw for an iteration, uniform in [0, 1)."""
    return random.Random(derive_seed(seed, iteration, "accept")).random()


def temperature(initial: float, rate: float, iteration: int) -> float:
    """Geometric cooling: T = T0 * rate^(i - 1)."""
    return initial * rate ** max(0, iteration - 1)


def proposer_temperature(anneal_t: float, initial: float) -> float:
    """The proposer samples hot while the search is hot: 1.0 at T0, down to 0.2 as T nears 0."""
    return round(0.2 + 0.8 * min(1.0, anneal_t / initial), 3)


def strength(iteration: int, max_iterations: int, initial: float, final: float) -> float:
    """img2img strength for image `iteration` (image 1 is text-to-image): initial at image 2, final at the last."""
    last = max_iterations if max_iterations > 0 else OPEN_ENDED_HORIZON
    if last <= 2:
        return initial
    progress = min(1.0, (iteration - 2) / (last - 2))
    return round(initial + (final - initial) * progress, 4)
