"""Which search and which judge find, and crown, the better image for fewer generations? Two simulated worlds.

Every idea has a true quality; an image drawn from it lands near that quality (seed luck); a judge sees the
image's true quality through a persistent per-image bias, a fresh per-call error when it samples warm, integer
rounding and (in duels) a lean towards the first image shown. Only the two model backends are simulated: runs go
through the real graph, nodes, acceptance, stop rules, final pick and DONE confirmation.

Two worlds, because which option helps depends on the critic:

- `today`: the assumptions this bench has always made (the `Noise` defaults below);
- `harsh`: a critic unlike it, with numbers fixed before any row was run (README, "Beyond the seed"): scores
  squeezed into 6-8; a per-idea 'appeal' that the scorer sees in full and duels and checklists at half, without
  the image being better; duels that also see half of each image's persistent bias, lean hard towards the first
  image (1.0) and abstain (TIE) when their margin is under 0.6; diminishing returns above a true quality of 7.5
  (each point above costs a new idea 0.6 of expected gain, so above ~8 most changes hurt); and a DONE whenever
  the scorer's perceived quality reaches 8.5.

The checklist judge in both worlds: the critic writes six questions, one per level of quality from 4 to 9
(weights 1, 1, 2, 2, 3, 3); an image's chance of a yes to the question of level t is a logistic curve in
(true quality + half its appeal + half its persistent bias + a per-question error of 0.8 - t), over 0.6; the
answer text is yes when that chance is at least a half, and the reply carries the chances as log probabilities.

Drafts (rows with drafts, and a walk on drafts) show the same idea and seed as their full image, with a flaw of
their own (`--draft`) that every critic sees and that no idea proposed from the draft inherits; a draft counts
as `--draft-cost` of an image in the images column.

Besides each row's true quality, images, critic calls, how often best.png is truly the best image made and the
quality found but not picked, the table shows how often an ideal pick would crown the truly best: one that sees
every image as duels do (half its idea's appeal, the duels' share of its persistent error) without their fresh
error and lean, the ceiling of any pick whose judges share that view.

    python bench/search.py                   # both worlds, 200 seeded runs per row
    python bench/search.py --world harsh --runs 40
    python bench/search.py --quick           # a smoke run (the test suite uses it)
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from PIL import Image  # noqa: E402
from pydantic import ConfigDict  # noqa: E402

from refineloop.backends.chat.invoke import call_kind  # noqa: E402
from refineloop.backends.image.protocol import ImageRequest, ImageTraits  # noqa: E402
from refineloop.backends.model_cache import ModelCache  # noqa: E402
from refineloop.graph_build import build_graph  # noqa: E402
from refineloop.nodes.setup import initial_state  # noqa: E402
from refineloop.run_start import resolve_settings  # noqa: E402
from refineloop.settings import RunSettings  # noqa: E402


@dataclass
class Noise:
    """How a simulated world misleads, in quality points. The defaults are today's world; `HARSH` the other."""

    image: float = 0.6
    """Spread of an image's true quality around its idea's quality (seed luck)."""
    judge: float = 0.8
    """The scorer's persistent error per image; a cold judge repeats it on every call for the same image."""
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
    score_low: float = 1.0
    """The score a perceived quality of 1 gets; with score_high, how the scale is squeezed (6-8 in the harsh world)."""
    score_high: float = 10.0
    """The score a perceived quality of 10 gets."""
    appeal: float = 0.0
    """Spread of a per-idea appeal: the scorer sees it in full, duels and checklists at half; it is not quality."""
    duel_bias: float = 0.0
    """Share of each image's persistent scorer error that duels see as well."""
    abstain: float = 0.0
    """A duel order answers TIE when its perceived margin (lean and error included) is under this."""
    knee: float = 99.0
    """Above this true quality a new idea's expected gain shrinks..."""
    decay: float = 0.0
    """...by this much per point (diminishing returns)."""
    done_at: float = 9.5
    """The scorer says DONE when its perceived quality reaches this (9.5: a 10 after rounding)."""
    draft: float = 0.5
    """Extra spread of a draft's true quality around the full image of the same idea and seed (a draft drawn with
    fewer steps shows the composition, not every detail)."""


HARSH = Noise(
    duel=0.5,
    lean=1.0,
    score_low=6.0,
    score_high=8.0,
    appeal=0.8,
    duel_bias=0.5,
    abstain=0.6,
    knee=7.5,
    decay=0.6,
    done_at=8.5,
)
WORLDS = {"today": Noise(), "harsh": HARSH}

#: The checklist the simulated critic writes: (level of quality a yes asks for, weight).
LEVELS = ((4, 1), (5, 1), (6, 2), (7, 2), (8, 3), (9, 3))
CHECK_NOISE = 0.8
CHECK_SOFTNESS = 0.6


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def _gauss(sigma: float, *salt: object) -> float:
    return random.Random(_digest(*salt)).gauss(0, sigma) if sigma else 0.0


BLOCK, DIGITS = 16, 5
"""An image carries numbers as flat grey blocks, one hexadecimal digit each: flat blocks come through the JPEG
the critic is sent (refineloop.backends.chat.critic_images) unchanged to within a grey level or two."""


def _digits(value: float) -> list[int]:
    number = max(0, min(16**DIGITS - 1, round((value + 50) * 1000)))
    return [(number >> (4 * k)) & 15 for k in reversed(range(DIGITS))]


def _number(digits: list[int]) -> float:
    total = 0
    for digit in digits:
        total = total * 16 + digit
    return total / 1000 - 50


def encode(quality: float, appeal: float = 0.0, flaw: float = 0.0) -> Image.Image:
    """An image whose grey blocks spell its true quality, its idea's appeal and, for a draft, its flaw: how far
    the draft's look departs from the full image of the same idea and seed (each to 0.001)."""
    digits = _digits(quality) + _digits(appeal) + _digits(flaw)
    img = Image.new("L", (BLOCK * len(digits), BLOCK))
    for n, digit in enumerate(digits):
        img.paste(digit * 16 + 8, (n * BLOCK, 0, (n + 1) * BLOCK, BLOCK))
    return img.convert("RGB")


def decode(png: bytes | Path) -> float:
    """The true quality of the full image an image stands for (a draft's, its full image's): what the bench
    scores and what a new idea is proposed from."""
    return _decode(png)[0]


def decode_both(data: bytes | Path) -> tuple[float, float]:
    """The quality an image shows (a draft's flaw included) and its appeal: what every critic sees."""
    quality, appeal, flaw = _decode(data)
    return quality + flaw, appeal


def _decode(data: bytes | Path) -> tuple[float, float, float]:
    img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data).convert("L")
    digits = []
    for n in range(3 * DIGITS):
        middle = img.crop((n * BLOCK + 4, 4, (n + 1) * BLOCK - 4, BLOCK - 4))
        level = statistics.fmean(middle.get_flattened_data())
        digits.append(max(0, min(15, round((level - 8) / 16))))
    quality, appeal, flaw = (_number(digits[k * DIGITS : (k + 1) * DIGITS]) for k in range(3))
    return quality, appeal, flaw


class World:
    """Ideas, their true qualities and appeal, shared by the simulated image model and critic of one run."""

    def __init__(self, seed: int, noise: Noise) -> None:
        self.seed, self.noise = seed, noise
        self.quality: dict[str, float] = {"idea-start": 3.0}
        self.appeal: dict[str, float] = {"idea-start": 0.0}
        self.seen: dict[float, float] = {}
        """What a duel perceives of each image judged, without its fresh error and lean, by true quality."""

    def idea_from(self, quality: float, *salt: object) -> str:
        """A new idea suggested from an image of `quality`; deterministic in its inputs, so resumes agree."""
        rng = random.Random(_digest(self.seed, *salt))
        name = f"idea-{_digest(self.seed, *salt) % 10**10}"
        noise = self.noise
        gain = noise.drift - noise.decay * max(0.0, quality - noise.knee)
        self.quality.setdefault(name, quality + rng.gauss(gain, noise.spread))
        self.appeal.setdefault(name, rng.gauss(0, noise.appeal) if noise.appeal else 0.0)
        return name


#: The steps of a full image in the rows with drafts; a request with fewer is a draft.
FULL_STEPS = 20


class SimImageModel:
    """Draws an image whose true quality is its idea's plus seeded luck."""

    name = "sim"
    traits = ImageTraits(prompt_budget=None, negative_prompt=False, img2img=True, strength=True)

    def __init__(self, world: World) -> None:
        self.world = world

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        """An image per seed; a draft (fewer than FULL_STEPS steps) sees the same idea and seed with extra noise."""
        ideas = re.findall(r"idea-[a-z0-9]+", request.prompt)
        idea = ideas[-1] if ideas else "idea-start"
        base, appeal = self.world.quality.get(idea, 3.0), self.world.appeal.get(idea, 0.0)
        draft = request.steps is not None and request.steps < FULL_STEPS
        return [
            encode(
                base + _gauss(self.world.noise.image, "img", s),
                appeal,
                _gauss(self.world.noise.draft, self.world.seed, "draft", idea, s) if draft else 0.0,
            )
            for s in request.seeds
        ]

    def generate_many(self, requests: Sequence[ImageRequest]) -> list[list[Image.Image]]:
        return [self.generate(request) for request in requests]


class SimCritic(BaseChatModel):
    """Judge, duel referee, checklist writer and answerer, and proposer of a simulated world."""

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
            base64.b64decode(b["base64"])
            for m in messages
            if isinstance(m.content, list)
            for b in m.content
            if isinstance(b, dict) and b.get("base64")
        ]
        metadata: dict[str, Any] = {}
        kind = call_kind(run_manager)  # what refineloop asks, from the call's metadata
        if kind == "compare":
            text = self._duel(images)
        elif kind == "judge":
            text = self._judge(images[0])
        elif kind == "checklist-write":
            text = "\n".join(f"QUESTION: Does the image reach level {t} of the goal? | WEIGHT: {w}" for t, w in LEVELS)
        elif kind == "checklist":
            human = messages[-1].content
            human = (
                " ".join(b.get("text", "") for b in human if isinstance(b, dict)) if isinstance(human, list) else human
            )
            text, metadata = self._answer(images[0], [int(t) for t in re.findall(r"level (\d+)", str(human))])
        else:
            failed = system.count("\n- ")
            idea = self.world.idea_from(decode(images[0]), "propose", images[0], failed, self.temperature)
            text = f"IDEA: a fresh take, {idea}"
        message = AIMessage(content=text, response_metadata=metadata)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _bias(self, png: bytes) -> float:
        bias = _gauss(self.world.noise.judge, self.world.seed, "judge", png)
        quality, appeal = decode_both(png)
        self.world.seen[round(quality, 3)] = quality + 0.5 * appeal + self.world.noise.duel_bias * bias
        return bias

    def _fresh(self, png: bytes, *salt: object) -> int:
        """How many warm calls this image has had (each draws fresh noise)."""
        key = (png, *salt)
        n = self.calls[key] = self.calls.get(key, 0) + 1
        return n

    def _judge(self, png: bytes) -> str:
        """Perceived quality: true + appeal + the image's persistent error (halved when warm, plus a fresh one)."""
        noise = self.world.noise
        quality, appeal = decode_both(png)
        error = self._bias(png)
        if self.temperature > 0:
            n = self._fresh(png, "sample")
            error = 0.5 * error + _gauss(noise.sample, self.world.seed, "sample", png, n)
        perceived = quality + appeal + error
        shown = noise.score_low + (noise.score_high - noise.score_low) * (perceived - 1) / 9
        score = max(1, min(10, round(shown)))
        if perceived >= noise.done_at:
            return f"SCORE: {score}\nCRITIQUE: flawless\nDONE: nothing left to improve"
        idea = self.world.idea_from(decode(png), "judge", png)  # from what a draft stands for, as the proposer
        return f"SCORE: {score}\nCRITIQUE: could be better\nCONTINUE: the next take, {idea}"

    def _duel(self, images: list[bytes]) -> str:
        a, b = images[:2]
        noise = self.world.noise
        (qa, pa), (qb, pb) = decode_both(a), decode_both(b)
        seen_a = qa + 0.5 * pa + noise.duel_bias * self._bias(a)
        seen_b = qb + 0.5 * pb + noise.duel_bias * self._bias(b)
        margin = seen_a - seen_b + noise.lean + _gauss(noise.duel, self.world.seed, "duel", a, b)
        if abs(margin) < noise.abstain:
            return "WINNER: TIE\nWHY: too close to call"
        return "WINNER: A" if margin >= 0 else "WINNER: B"

    def _answer(self, png: bytes, levels: list[int]) -> tuple[str, dict[str, Any]]:
        """A yes/no per question, from a logistic chance; the chances come back as log probabilities."""
        quality, appeal = decode_both(png)
        seen = quality + 0.5 * appeal + 0.5 * self._bias(png)
        n = self._fresh(png, "check") if self.temperature > 0 else 0
        lines, tokens = [], []
        for k, level in enumerate(levels, start=1):
            error = _gauss(CHECK_NOISE, self.world.seed, "check", png, level)
            if n:
                error = 0.5 * error + _gauss(self.world.noise.sample, self.world.seed, "check", png, level, n)
            chance = 1 / (1 + math.exp(-(seen + error - level) / CHECK_SOFTNESS))
            chance = min(1 - 1e-6, max(1e-6, chance))
            word = "yes" if chance >= 0.5 else "no"
            lines.append(f"Q{k}: {word}")
            options = [{"token": "yes", "logprob": math.log(chance)}, {"token": "no", "logprob": math.log(1 - chance)}]
            tokens.append({**options[0 if word == "yes" else 1], "top_logprobs": options})
        return "\n".join(lines), {"logprobs": tokens}


@dataclass
class Result:
    quality: float
    images: float
    """Full images made, plus each draft counted as --draft-cost of one."""
    critic_calls: int
    truly_best: bool
    gap: float
    """True quality of the best image made minus that of best.png (found but not picked)."""
    done: bool
    """Whether the run stopped on DONE."""
    ideal: bool
    """Whether a pick that saw every image as duels do, without their fresh error and lean, would crown the truly
    best: the ceiling of any pick whose judges share that view (appeal and persistent error included)."""


def run_once(settings: RunSettings, seed: int, noise: Noise, folder: Path, draft_cost: float = 0.25) -> Result:
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
    done = str(values.get("stop_reason", "")).startswith("the critic said DONE")
    top = max(qualities)
    ideal = max(qualities, key=lambda q: world.seen.get(round(q, 3), q)) >= top - 1e-9
    walked = sum(bool(json.loads(p.read_text()).get("walk_draft")) for p in folder.glob("[0-9]*.json"))
    images = len(qualities) - walked + draft_cost * (walked + len(list(folder.glob("drafts/*.png"))))
    return Result(best, images, values.get("critic_calls", 0), best >= top - 1e-9, top - best, done, ideal)


#: The seed's own judging: no final pick, the first DONE stops the run, one cold score an image, patience 3, and
#: a climber that stays on the best when a new image ties it.
SEEDS = {"final_pick": 0, "confirm_done": False, "patience": 3, "sideways": False}
#: refineloop's judging before this bench chose the defaults: a final pick of 4, DONE confirmed, patience 3, no
#: sideways moves.
OLD = {"patience": 3, "sideways": False}

#: Drafts at a quarter of a full image's steps (the sim draws a request with fewer than FULL_STEPS as a draft).
DRAFTS = {"steps": FULL_STEPS, "draft_steps": FULL_STEPS // 4}
#: A walk on drafts (--draft-walk) at a quarter of the steps; only its crowned draft is drawn in full at the stop.
WALK = {**DRAFTS, "draft_walk": True, "final_pick": 0}
#: The rounds of the walk rows: drafts are cheap, so the sweep goes past the other rows' 10 rounds.
WALKS = (4, 6, 8, 10, 13, 16)
#: Three candidates a round, each on its own idea.
IDEAS = {"candidates": 3, "distinct_ideas": True}
#: What a draft costs, in images, in the "images" column (--draft-cost; set before the workers fork).
DRAFT_COST = [0.25]

#: (label, settings) of every row. "seed's" rows judge and climb as the seed does; "defaults" rows take
#: refineloop's defaults for what they do not name (climbing with sideways moves and patience 10, a final pick of
#: 4, DONE confirmed).
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("climbing (the seed's)", {"strategy": "climbing", **SEEDS}),
    ("climbing, patience 10 (seed's)", {"strategy": "climbing", **SEEDS, "patience": 10}),
    ("greedy (seed's)", {"strategy": "greedy", **SEEDS, "patience": None}),
    ("annealing (seed's)", {"strategy": "annealing", **SEEDS, "patience": None}),
    ("best of 10 seeds (seed's judge)", {"strategy": "climbing", "candidates": 10, "rounds": 1, **SEEDS}),
    ("climbing, pairwise (seed's)", {"strategy": "climbing", "judge": "pairwise", **SEEDS}),
    ("climbing, 3 samples (seed's)", {"strategy": "climbing", "judge_samples": 3, **SEEDS}),
    ("climbing, checklist (seed's)", {"strategy": "climbing", "judge": "checklist", **SEEDS}),
    ("climbing, sideways, p. 10 (seed's)", {"strategy": "climbing", **SEEDS, "patience": 10, "sideways": True}),
    ("climbing + final pick 3", {"strategy": "climbing", **SEEDS, "final_pick": 3}),
    ("climbing + final pick 4", {"strategy": "climbing", **SEEDS, "final_pick": 4}),
    ("greedy + DONE confirmation", {"strategy": "greedy", "final_pick": 0, "confirm_done": True}),
    ("old demo default: climbing", {"strategy": "climbing", **OLD}),
    ("old run default: greedy", {"strategy": "greedy"}),
    ("last default: no sideways", {"strategy": "climbing", "sideways": False}),
    ("defaults: climbing, patience 10", {}),
    ("best of 10 seeds (defaults)", {"candidates": 10, "rounds": 1}),
    ("annealing (defaults)", {"strategy": "annealing"}),
    ("climbing, pairwise (defaults)", {"judge": "pairwise"}),
    ("climbing, 3 samples (defaults)", {"judge_samples": 3}),
    ("climbing, checklist (defaults)", {"judge": "checklist"}),
    ("annealing, checklist (defaults)", {"strategy": "annealing", "judge": "checklist"}),
    ("defaults, final pick 6", {"final_pick": 6}),
    ("defaults, 3 images", {"rounds": 3}),
    ("climbing, 3 samples, 3 images", {"judge_samples": 3, "rounds": 3}),
    ("defaults, 2 images", {"rounds": 2}),
    ("defaults, 4 images", {"rounds": 4}),
    ("defaults, 5 images", {"rounds": 5}),
    ("defaults, 6 images", {"rounds": 6}),
    *[(f"distinct ideas x3, {n} images", {**IDEAS, "max_images": n}) for n in (3, 4, 6)],
    *[(f"drafts, {n} rounds", {**DRAFTS, "rounds": n}) for n in (2, 3, 4, 6, 8, 10)],
    *[(f"drafts, margin 0, {n} rounds", {**DRAFTS, "draft_margin": 0.0, "rounds": n}) for n in (4, 6)],
    *[(f"drafts, ideas x3, {n} rounds", {**DRAFTS, **IDEAS, "rounds": n}) for n in (2, 3, 4, 6)],
    ("plateau 0.1 (defaults)", {"plateau_cost": 0.1}),
    ("plateau 0.1, 6 images", {"plateau_cost": 0.1, "rounds": 6}),
    ("drafts + plateau 0.1", {**DRAFTS, "plateau_cost": 0.1}),
    *[(f"walk, {n} rounds", {**WALK, "rounds": n}) for n in WALKS],
    *[(f"walk, pick 2, {n} rounds", {**WALK, "final_pick": 2, "rounds": n}) for n in WALKS],
    *[(f"walk, pick 4, {n} rounds", {**WALK, "final_pick": 4, "rounds": n}) for n in WALKS],
]


def _one(job: tuple[str, dict[str, Any], int, dict[str, float], int, str]) -> Result:
    label, knobs, iterations, noise, seed, tmp = job
    knobs = dict(knobs)
    rounds = knobs.pop("rounds", iterations)
    base = RunSettings(image_model="sim", eval_model="sim", goal="a simulated goal", max_iterations=rounds, **knobs)
    folder = Path(tmp) / f"{hashlib.sha256(label.encode()).hexdigest()[:10]}-{seed}"
    return run_once(base, seed, Noise(**noise), folder, DRAFT_COST[0])


def run_world(
    name: str, noise: Noise, runs: int, iterations: int, jobs: int, rows: Sequence[str] = ()
) -> dict[str, list[Result]]:
    """Every row in one world (or those named in `rows`, with the seed's two), printed as it finishes."""
    print(f"\nworld '{name}': {runs} runs per row, {iterations} rounds, {noise}")
    header = (
        f"{'configuration':<34}{'quality':>8}{'images':>8}{'calls':>7}{'truly best':>12}{'gap':>7}{'DONE':>6}{'<8':>6}"
        f"{'ideal':>7}"
    )
    print(header)
    table: dict[str, list[Result]] = {}
    with tempfile.TemporaryDirectory() as tmp, multiprocessing.get_context("fork").Pool(jobs) as pool:
        for label, knobs in CONFIGS:
            if rows and label not in rows and label not in (CONFIGS[0][0], CONFIGS[1][0]):
                continue  # the seed's two climbing rows always run: every verdict is against them
            work = [(label, knobs, iterations, dataclasses.asdict(noise), seed, tmp) for seed in range(runs)]
            results = table[label] = pool.map(_one, work, chunksize=max(1, runs // (4 * jobs)))
            print(row(label, results), flush=True)
    return table


def row(label: str, results: list[Result]) -> str:
    """One line of the table: means over the runs, the share of runs that stopped on DONE, and the share of those
    that stopped below a true quality of 8, and how often an ideal pick (Result.ideal) crowns the truly best."""
    dones = [r for r in results if r.done]
    low = f"{statistics.fmean(r.quality < 8 for r in dones):.0%}" if dones else "-"
    done = f"{len(dones) / len(results):.0%}"
    return (
        f"{label:<34}{statistics.fmean(r.quality for r in results):>8.2f}"
        f"{statistics.fmean(r.images for r in results):>8.2f}"
        f"{statistics.fmean(r.critic_calls for r in results):>7.1f}"
        f"{statistics.fmean(r.truly_best for r in results):>12.0%}"
        f"{statistics.fmean(r.gap for r in results):>7.2f}"
        f"{done:>6}{low:>6}{statistics.fmean(r.ideal for r in results):>7.0%}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare searches and judges in two simulated worlds.")
    parser.add_argument("--runs", type=int, default=200, help="seeded runs per row (default 200)")
    parser.add_argument("--iterations", type=int, default=10, help="rounds per run (default 10)")
    parser.add_argument("--world", choices=("both", *WORLDS), default="both", help="which world (default both)")
    parser.add_argument("--jobs", type=int, default=min(2, multiprocessing.cpu_count()), help="worker processes")
    parser.add_argument(
        "--draft-cost", type=float, default=0.25, help="a draft's cost in images (default 0.25: its share of steps)"
    )
    parser.add_argument("--quick", action="store_true", help="3 runs per row, to prove it works")
    parser.add_argument(
        "--rows", default="", help="only these rows (labels, separated by ;), with the seed's two climbing rows"
    )
    for field in dataclasses.fields(Noise):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=float, default=None, help="replaces it in each world"
        )
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    DRAFT_COST[0] = args.draft_cost
    # An assumption given as a flag replaces the world's own, so a critic's measured habits can be tried.
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Noise) if getattr(args, f.name) is not None}
    started = time.perf_counter()
    for name in WORLDS if args.world == "both" else (args.world,):
        noise = dataclasses.replace(WORLDS[name], **given)
        rows = [label.strip() for label in args.rows.split(";") if label.strip()]
        unknown = [label for label in rows if label not in dict(CONFIGS)]
        if unknown:
            parser.error(f"unknown rows: {', '.join(unknown)}")
        table = run_world(name, noise, runs, args.iterations, max(1, args.jobs), rows)
        print_verdict(table)
        print_needed(table)
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


def print_verdict(table: dict[str, list[Result]]) -> None:
    """Each row against the seed's climbing (patience 3), and against it given about as many images as the
    defaults use (patience 10): the quality gained, and the images spent against the seed's."""
    seed_label, equal_label = CONFIGS[0][0], CONFIGS[1][0]

    def mean(label: str, what: str) -> float:
        return statistics.fmean(getattr(r, what) for r in table[label])

    print(
        f"\nagainst {seed_label}: {mean(seed_label, 'quality'):.2f} with {mean(seed_label, 'images'):.1f} images; "
        f"against {equal_label}: {mean(equal_label, 'quality'):.2f} with {mean(equal_label, 'images'):.1f} images"
    )
    for label in table:
        if label in (seed_label, equal_label):
            continue
        print(
            f"  {label:<34}{mean(label, 'quality') - mean(seed_label, 'quality'):+6.2f} vs patience 3"
            f"{mean(label, 'quality') - mean(equal_label, 'quality'):+7.2f} vs patience 10"
            f"{mean(label, 'images') / mean(seed_label, 'images') - 1:+6.0%} images"
        )


#: A row of a budget sweep: its family, then the budget (", 4 images", ", 6 rounds").
SWEEP = re.compile(r"(.*), (\d+) (?:images|rounds)")


#: Rows that run a sweep's configuration to its end (10 rounds), as the sweep's last point.
WHOLE_RUNS = {"defaults: climbing, patience 10": "defaults", "plateau 0.1 (defaults)": "plateau 0.1"}


def images_needed(points: list[tuple[float, float]], target: float) -> float | None:
    """The images a sweep needs to reach `target` quality, read off its (images, quality) points by linear
    interpolation between the two that straddle it; None when no point of the sweep reaches it."""
    points = sorted(points)
    if points and points[0][1] >= target:
        return points[0][0]
    for (images, quality), (more, better) in zip(points, points[1:], strict=False):
        if quality < target <= better:
            return images + (more - images) * (target - quality) / (better - quality)
    return None


def print_needed(table: dict[str, list[Result]]) -> None:
    """For each budget sweep among the rows, the images it needs for the quality of the seed's climbing with
    patience 3 and with patience 10 (and how many the seed's climbing used for it)."""
    sweeps: dict[str, list[tuple[float, float]]] = {}
    for label, results in table.items():
        match = SWEEP.fullmatch(label)
        if match:
            point = (statistics.fmean(r.images for r in results), statistics.fmean(r.quality for r in results))
            sweeps.setdefault(match.group(1), []).append(point)
        elif label in WHOLE_RUNS:
            point = (statistics.fmean(r.images for r in results), statistics.fmean(r.quality for r in results))
            sweeps.setdefault(WHOLE_RUNS[label], []).append(point)
    for seed_label, patience in ((CONFIGS[0][0], 3), (CONFIGS[1][0], 10)):
        target = statistics.fmean(r.quality for r in table[seed_label])
        used = statistics.fmean(r.images for r in table[seed_label])
        print(f"\nimages needed for the seed's climbing's {target:.2f} at patience {patience} (it used {used:.1f}):")
        for family, points in sweeps.items():
            needed = images_needed(points, target)
            best = max(points, key=lambda p: p[1])
            said = f"{needed:.1f}" if needed is not None else f"not reached (best {best[1]:.2f} with {best[0]:.1f})"
            if needed is not None and needed == min(points)[0]:
                said = f"at most {needed:.1f} (its smallest budget reaches it)"
            print(f"  {family:<34}{said}")


if __name__ == "__main__":
    sys.exit(main())
