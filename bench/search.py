"""Which search finds the better image for fewer generations? A simulated world with a known truth.

Every idea has a true quality; an image drawn from it lands near that quality (image-to-image luck); a
judge sees the image's true quality through a persistent per-image bias, a fresh per-call error when it
samples warm, integer rounding, and (in duels) a lean towards the first image shown. Only the two model
backends are simulated: runs go through the real graph, nodes, acceptance and stop rules.

    python bench/search.py                 # 200 seeded runs per configuration
    python bench/search.py --runs 20       # quicker
    python bench/search.py --quick         # a smoke run (the test suite uses it)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from PIL import Image  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

from refineloop.graph import build_graph  # noqa: E402
from refineloop.nodes.setup import initial_state, resolve_settings  # noqa: E402
from refineloop.settings import RunSettings  # noqa: E402
from refineloop.tools.image_models import ImageRequest, ImageTraits  # noqa: E402
from refineloop.tools.models import ModelCache  # noqa: E402


@dataclass
class Noise:
    """How the simulated world misleads, in score points. These are the bench's assumptions, settable by flag."""

    image: float = 0.6
    """Spread of an image's true quality around its idea's quality (seed luck)."""
    judge: float = 0.8
    """Absolute-score error per image; a cold judge repeats it on every call for the same image."""
    sample: float = 0.6
    """Fresh error of each warm judge sample (temperature above 0), which averaging can cancel."""
    duel: float = 0.4
    """Error of one head-to-head look: relative judgements, both images in one context, wobble less."""
    lean: float = 0.3
    """How much better the first of two images looks in a duel (position bias; both orders cancel it)."""
    drift: float = 0.35
    """Mean gain of a new idea over the image it was suggested from."""
    spread: float = 1.1
    """Spread of that gain: most suggestions help a little, many hurt."""


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def encode(quality: float) -> Image.Image:
    """A 4 px image whose first pixel carries the true quality (PNG is lossless)."""
    value = max(0, min(2**24 - 1, int(quality * 10000)))
    img = Image.new("RGB", (4, 4), (value >> 16, (value >> 8) & 255, value & 255))
    return img


def decode(png: bytes | Path) -> float:
    """The true quality an image was drawn with."""
    img = Image.open(io.BytesIO(png) if isinstance(png, bytes) else png).convert("RGB")
    r, g, b = img.getpixel((0, 0))
    return ((r << 16) | (g << 8) | b) / 10000


class World:
    """Ideas and their true qualities, shared by the simulated image model and critic of one run."""

    def __init__(self, seed: int, noise: Noise) -> None:
        self.seed, self.noise = seed, noise
        self.quality: dict[str, float] = {"idea-start": 3.0}

    def idea_from(self, quality: float, *salt: object) -> str:
        """A new idea suggested from an image of `quality`; deterministic in its inputs, so resumes agree."""
        rng = random.Random(_digest(self.seed, *salt))
        name = f"idea-{_digest(self.seed, *salt) % 10**10}"
        self.quality.setdefault(name, quality + rng.gauss(self.noise.drift, self.noise.spread))
        return name


class SimImageModel:
    """Draws an image whose true quality is its idea's plus seeded luck."""

    name = "sim"
    traits = ImageTraits(prompt_budget=None, negative_prompt=False, img2img=True, strength=True)

    def __init__(self, world: World) -> None:
        self.world = world

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        ideas = re.findall(r"idea-[a-z0-9]+", request.prompt)
        base = self.world.quality.get(ideas[-1] if ideas else "idea-start", 3.0)
        return [encode(base + random.Random(_digest("img", s)).gauss(0, self.world.noise.image)) for s in request.seeds]


class SimCritic(BaseChatModel):
    """Judge, proposer and duel referee of the simulated world."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    world: Any
    temperature: float = 0.0
    calls: dict = {}

    @property
    def _llm_type(self) -> str:
        return "sim-critic"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        system = str(messages[0].content)
        images = [
            __import__("base64").b64decode(b["base64"])
            for m in messages
            if isinstance(m.content, list)
            for b in m.content
            if isinstance(b, dict) and b.get("base64")
        ]
        if "WINNER:" in system:
            text = self._duel(images)
        elif "SCORE:" in system:
            text = self._judge(images[0])
        else:
            failed = system.count("\n- ")
            idea = self.world.idea_from(decode(images[0]), "propose", images[0], failed, self.temperature)
            text = f"IDEA: a fresh take, {idea}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _judge(self, png: bytes) -> str:
        """True quality plus the image's persistent error (halved when warm, plus a fresh one), as an integer."""
        noise = self.world.noise
        error = random.Random(_digest(self.world.seed, "judge", png)).gauss(0, noise.judge)
        if self.temperature > 0:
            n = self.calls[png] = self.calls.get(png, 0) + 1
            error = 0.5 * error + random.Random(_digest(self.world.seed, "sample", png, n)).gauss(0, noise.sample)
        score = max(1, min(10, round(decode(png) + error)))
        if score >= 10:
            return "SCORE: 10\nCRITIQUE: flawless\nDONE: nothing left to improve"
        idea = self.world.idea_from(decode(png), "judge", png)
        return f"SCORE: {score}\nCRITIQUE: could be better\nCONTINUE: the next take, {idea}"

    def _duel(self, images: list[bytes]) -> str:
        a, b = images[:2]
        noise = self.world.noise
        error = random.Random(_digest(self.world.seed, "duel", a, b)).gauss(0, noise.duel)
        return "WINNER: A" if decode(a) - decode(b) + noise.lean + error >= 0 else "WINNER: B"


@dataclass
class Result:
    quality: float
    images: int
    critic_calls: int
    truly_best: bool


def run_once(settings: RunSettings, seed: int, noise: Noise, folder: Path) -> Result:
    """One run through the real graph (no checkpointer: the loop's logic is what is measured here)."""
    world = World(seed, noise)
    cache = ModelCache()
    cache.register_image("sim", SimImageModel(world))
    cache.register_chat("sim", SimCritic(world=world, calls={}))
    settings = RunSettings.from_dict({**settings.to_dict(), "seed": seed, "output_dir": str(folder)})
    settings, task = resolve_settings(settings)
    values = build_graph(settings.strategy).invoke(
        initial_state(settings, task), {"configurable": {"models": cache}, "recursion_limit": 10_000}
    )
    qualities = [decode(p) for p in sorted(folder.glob("[0-9]*.png"))]
    best = decode(Path(values["best"]["path"]))
    return Result(best, len(qualities), values.get("critic_calls", 0), best >= max(qualities) - 1e-9)


CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("climbing (the seed's)", {"strategy": "climbing"}),
    ("greedy", {"strategy": "greedy"}),
    ("annealing", {"strategy": "annealing"}),
    ("climbing, pairwise", {"strategy": "climbing", "judge": "pairwise"}),
    ("climbing, 3 samples", {"strategy": "climbing", "judge_samples": 3}),
    ("climbing, patience 10", {"strategy": "climbing", "patience": 10}),
    ("climbing, pairwise, patience 10", {"strategy": "climbing", "judge": "pairwise", "patience": 10}),
    ("climbing, 3 samples, patience 10", {"strategy": "climbing", "judge_samples": 3, "patience": 10}),
    ("climbing, best of 2, patience 5", {"strategy": "climbing", "candidates": 2, "rounds": 5, "patience": 5}),
    ("annealing, pairwise", {"strategy": "annealing", "judge": "pairwise"}),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare search strategies and judges in a simulated world.")
    parser.add_argument("--runs", type=int, default=200, help="seeded runs per configuration (default 200)")
    parser.add_argument("--iterations", type=int, default=10, help="rounds per run (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 runs per configuration, to prove it works")
    for name, default in vars(Noise()).items():
        parser.add_argument(f"--{name}", type=float, default=default, help=f"noise: {name} (default {default})")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    noise = Noise(**{name: getattr(args, name) for name in vars(Noise())})
    print(f"{runs} runs per configuration, {args.iterations} rounds, noise {noise}")
    print(f"{'configuration':<32}{'true quality':>13}{'images':>8}{'critic calls':>14}{'best.png truly best':>21}")
    started = time.perf_counter()
    table: dict[str, list[Result]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, knobs in CONFIGS:
            knobs = dict(knobs)
            rounds = knobs.pop("rounds", args.iterations)
            base = RunSettings(
                image_model="sim", eval_model="sim", goal="a simulated goal", max_iterations=rounds, **knobs
            )
            results = table[label] = [
                run_once(base, seed, noise, Path(tmp) / f"{label}-{seed}") for seed in range(runs)
            ]
            print(
                f"{label:<32}{statistics.fmean(r.quality for r in results):>13.2f}"
                f"{statistics.fmean(r.images for r in results):>8.1f}"
                f"{statistics.fmean(r.critic_calls for r in results):>14.1f}"
                f"{statistics.fmean(r.truly_best for r in results):>21.0%}"
            )
    print(f"({time.perf_counter() - started:.0f} s)")
    print_verdict(table)
    return 0


def print_verdict(table: dict[str, list[Result]]) -> None:
    """Each option against the seed's climbing: quality gained, generations spent."""
    seed_label = CONFIGS[0][0]
    seed_quality = statistics.fmean(r.quality for r in table[seed_label])
    seed_images = statistics.fmean(r.images for r in table[seed_label])
    print(f"\nagainst {seed_label}: {seed_quality:.2f} true quality with {seed_images:.1f} images")
    for label, results in table.items():
        if label == seed_label:
            continue
        quality = statistics.fmean(r.quality for r in results)
        images = statistics.fmean(r.images for r in results)
        print(f"  {label:<32}{quality - seed_quality:+6.2f} quality   {images / seed_images - 1:+5.0%} images")


if __name__ == "__main__":
    sys.exit(main())
