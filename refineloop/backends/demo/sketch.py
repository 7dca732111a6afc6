"""`sketch`: an offline procedural image model for demos and tests. It is NOT a real model.

It paints with Pillow only (no torch import), so the demo starts in well under a second. The picture
follows the prompt's words: the subject (a hotdog, or a generic object named by the prompt), steam,
grill marks, glow, flames, lava, embers, white-hot cores, colour words and intensity words; the seed
moves and varies everything, so two seeds of one prompt are two different images.
"""

from __future__ import annotations

import math
import random
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from refineloop.backends.image.protocol import ImageRequest, ImageTraits, check_one_batch
from refineloop.backends.table import Backend, fixed
from refineloop.errors import SettingsError

if TYPE_CHECKING:
    from refineloop.settings import RunSettings

#: Words that add heat, and how much. Several words stack, so escalating prompts draw hotter images.
HEAT_WORDS: dict[str, float] = {
    "warm": 0.5,
    "hot": 0.7,
    "steam": 1.0,
    "steaming": 1.0,
    "grill": 0.8,
    "grilled": 0.8,
    "charred": 1.2,
    "sizzling": 1.2,
    "smoke": 0.6,
    "glow": 1.6,
    "glowing": 1.6,
    "red-hot": 2.0,
    "ember": 1.8,
    "embers": 1.8,
    "spark": 1.4,
    "sparks": 1.4,
    "flame": 2.4,
    "flames": 2.4,
    "fire": 2.4,
    "burning": 2.2,
    "blaze": 3.0,
    "blazing": 3.0,
    "roaring": 2.6,
    "inferno": 3.6,
    "lava": 3.4,
    "molten": 3.4,
    "magma": 3.4,
    "white-hot": 4.0,
    "plasma": 4.0,
    "haze": 1.0,
    "scorching": 2.4,
    "volcanic": 3.0,
    "explosion": 3.2,
}
INTENSIFIERS = ("extreme", "intense", "massive", "huge", "blinding", "raging", "furious", "towering")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 20),
    "orange": (255, 130, 20),
    "yellow": (255, 220, 60),
    "gold": (255, 190, 40),
    "blue": (60, 120, 255),
    "purple": (160, 60, 220),
    "green": (60, 200, 80),
    "white": (255, 250, 235),
}


@dataclass(frozen=True)
class Scene:
    """What the words of a prompt ask the painter for."""

    heat: float
    steam: bool
    glow: bool
    flames: int
    lava: bool
    embers: bool
    white_hot: bool
    grill: bool
    tint: tuple[int, int, int] | None
    hotdog: bool
    subject_hue: int


def read_scene(prompt: str) -> Scene:
    """Turn prompt words into painting instructions."""
    words = re.findall(r"[a-z]+(?:-[a-z]+)?", prompt.lower())
    heat = sum(HEAT_WORDS.get(w, 0.0) for w in words)
    heat *= 1.0 + 0.25 * sum(w in INTENSIFIERS for w in words)
    has = set(words).__contains__
    flame_words = sum(w in ("flame", "flames", "fire", "blaze", "blazing", "inferno", "burning") for w in words)
    tint = next((COLOURS[w] for w in words if w in COLOURS), None)
    return Scene(
        heat=heat,
        steam=any(map(has, ("steam", "steaming", "smoke", "haze", "vapour", "vapor"))),
        glow=any(map(has, ("glow", "glowing", "red-hot", "radiant", "luminous"))) or heat > 6,
        flames=min(14, flame_words * 3 + int(heat // 3)) if flame_words or heat > 7 else 0,
        lava=any(map(has, ("lava", "molten", "magma", "volcanic"))),
        embers=any(map(has, ("ember", "embers", "spark", "sparks"))),
        white_hot=any(map(has, ("white-hot", "plasma", "blinding"))),
        grill=any(map(has, ("grill", "grilled", "charred", "seared"))),
        tint=tint,
        hotdog=any(map(has, ("hotdog", "hot-dog", "sausage", "frankfurter", "bun"))),
        subject_hue=zlib.crc32(" ".join(w for w in words if w not in HEAT_WORDS).encode()) % 360,
    )


class SketchImageModel:
    """Procedural painter with the image-model protocol; prompt budget 77 like a CLIP model."""

    name = "sketch"
    traits = ImageTraits(prompt_budget=77, negative_prompt=True, img2img=True, strength=True)
    placement = "cpu (Pillow procedural painter, no weights)"

    def __init__(self, size: int = 256, delay: float = 0.0) -> None:
        self.size = int(size)
        self.delay = delay
        self.name = "sketch" if not delay else f"sketch (+{delay:g} s per image)"

    def call_defaults(self, *, img2img: bool = False) -> dict[str, Any]:
        """The painter draws each image in one pass: one step, which the images' metadata records (the web UIs'
        readers find the settings line by its `Steps:`)."""
        return {"steps": 1}

    def sampler_words(self, name: str) -> tuple[str, str]:
        """A1111's `Sampler` word for its images: `sketch` (no sampler; the settings refuse --scheduler)."""
        return "sketch", ""

    def default_size(self) -> tuple[int, int]:
        """The (width, height) it paints at when a request names none."""
        return self.size, self.size

    def count_tokens(self, text: str) -> int:
        """Count words and punctuation marks, close to what a CLIP tokenizer reports for plain English."""
        return len(re.findall(r"\w+|[^\w\s]", text))

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        """Paint one image per seed; with an init image, blend towards it by (1 - strength)."""
        width, height = request.width or self.size, request.height or self.size
        if self.delay:
            time.sleep(self.delay * len(request.seeds))
        scene = read_scene(request.prompt)
        images = [paint(scene, width, height, seed) for seed in request.seeds]
        if request.init_image:
            base = Image.open(request.init_image).convert("RGB").resize((width, height))
            keep = 1.0 - (request.strength if request.strength is not None else 0.6)
            images = [Image.blend(img, base, keep * 0.7) for img in images]
        return images

    def generate_many(self, requests: Sequence[ImageRequest]) -> list[list[Image.Image]]:
        """Each request's images as `generate` paints them: a painter gains nothing from batching."""
        check_one_batch(requests)
        return [self.generate(request) for request in requests]


def paint(scene: Scene, width: int, height: int, seed: int) -> Image.Image:
    """Paint one scene at one seed."""
    rng = random.Random(seed)
    heat = min(scene.heat, 16.0) / 16.0
    img = _background(width, height, heat, rng)
    cx, cy = width * rng.uniform(0.42, 0.58), height * rng.uniform(0.5, 0.64)
    if scene.glow:
        img = _glow(img, cx, cy, width * (0.25 + 0.35 * heat), scene.tint or (255, 120, 30))
    draw = ImageDraw.Draw(img, "RGBA")
    flame_colour = scene.tint or (255, 120 + int(60 * heat), 20)
    for _ in range(scene.flames):
        _flame(
            draw,
            cx + rng.uniform(-0.3, 0.3) * width,
            cy,
            height * rng.uniform(0.15, 0.3 + 0.3 * heat),
            width * rng.uniform(0.05, 0.1),
            flame_colour,
            rng,
        )
    _subject(draw, scene, cx, cy, width, rng)
    if scene.lava:
        for _ in range(6 + rng.randint(0, 4)):
            x = cx + rng.uniform(-0.3, 0.3) * width
            # On a small canvas the drip's fixed 10 px start could sit below its end, which Pillow refuses.
            top = cy + min(10.0, 0.05 * height)
            bottom = max(top + 1, cy + rng.uniform(0.1, 0.3) * height)
            draw.ellipse((x - 6, top, x + 6, bottom), fill=(255, 90, 0, 230))
    if scene.white_hot:
        r = width * (0.08 + 0.1 * heat)
        draw.ellipse((cx - r, cy - r * 0.6, cx + r, cy + r * 0.6), fill=(255, 250, 220, 210))
    if scene.embers:
        for _ in range(40 + int(60 * heat)):
            x, y = rng.uniform(0, width), rng.uniform(0, height * 0.8)
            draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=(255, rng.randint(160, 240), 60, 255))
    if scene.steam:
        for k in range(3 + rng.randint(0, 2)):
            _steam(draw, cx + (k - 1.5) * width * 0.08, cy - height * 0.12, height * 0.35, rng)
    return img.filter(ImageFilter.SMOOTH)


def _background(width: int, height: int, heat: float, rng: random.Random) -> Image.Image:
    top = (int(30 + 120 * heat), int(30 + 30 * heat), int(60 - 40 * heat))
    bottom = (int(50 + 180 * heat), int(40 + 60 * heat), int(40 - 20 * heat))
    jitter = rng.randint(-12, 12)
    column = Image.new("RGB", (1, height))
    for y in range(height):
        t = y / max(1, height - 1)
        column.putpixel(
            (0, y), tuple(max(0, min(255, int(a + (b - a) * t) + jitter)) for a, b in zip(top, bottom, strict=True))
        )
    return column.resize((width, height))


def _glow(img: Image.Image, cx: float, cy: float, radius: float, colour: tuple[int, int, int]) -> Image.Image:
    halo = Image.new("RGB", img.size, (0, 0, 0))
    draw = ImageDraw.Draw(halo)
    for k in range(8, 0, -1):
        r = radius * k / 8
        shade = tuple(int(c * (1 - k / 9)) for c in colour)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=shade)
    return ImageChops.add(img, halo.filter(ImageFilter.GaussianBlur(radius / 6)))


def _flame(
    draw: ImageDraw.ImageDraw,
    x: float,
    base: float,
    tall: float,
    wide: float,
    colour: tuple[int, int, int],
    rng: random.Random,
) -> None:
    lean = rng.uniform(-0.4, 0.4) * wide
    outer = [
        (x - wide, base),
        (x + lean * 0.5 - wide * 0.5, base - tall * 0.5),
        (x + lean, base - tall),
        (x + lean * 0.5 + wide * 0.5, base - tall * 0.5),
        (x + wide, base),
    ]
    draw.polygon(outer, fill=(*colour, 215))
    inner = [(x - wide * 0.5, base), (x + lean * 0.6, base - tall * 0.6), (x + wide * 0.5, base)]
    draw.polygon(inner, fill=(255, 235, 120, 230))


def _steam(draw: ImageDraw.ImageDraw, x: float, y: float, tall: float, rng: random.Random) -> None:
    phase = rng.uniform(0, math.tau)
    points = [(x + 8 * math.sin(phase + t / 6), y - tall * t / 30) for t in range(31)]
    draw.line(points, fill=(235, 235, 235, 170), width=5)


def _subject(draw: ImageDraw.ImageDraw, scene: Scene, cx: float, cy: float, width: float, rng: random.Random) -> None:
    w = width * rng.uniform(0.26, 0.32)
    if not scene.hotdog:
        hue = scene.subject_hue
        colour = (120 + hue % 100, 80 + (hue * 3) % 120, 80 + (hue * 7) % 150, 255)
        draw.rounded_rectangle((cx - w, cy - w * 0.6, cx + w, cy + w * 0.6), radius=w * 0.3, fill=colour)
        return
    draw.rounded_rectangle((cx - w, cy - w * 0.28, cx + w, cy + w * 0.3), radius=w * 0.25, fill=(222, 170, 100, 255))
    red = min(255, 150 + int(10 * scene.heat))
    sausage = (red, max(30, 80 - int(4 * scene.heat)), 40, 255)
    draw.rounded_rectangle((cx - w * 1.1, cy - w * 0.16, cx + w * 1.1, cy + w * 0.08), radius=w * 0.12, fill=sausage)
    if scene.grill:
        for k in range(5):
            x = cx - w * 0.8 + k * w * 0.4
            draw.line((x, cy - w * 0.14, x + w * 0.12, cy + w * 0.06), fill=(50, 20, 10, 255), width=3)


#: Bounds of the painter's own options: a size any PNG can hold, a pause no longer than a minute.
SKETCH_SIZES = (8, 8192)
SKETCH_MAX_DELAY = 60.0


class SketchOptions(TypedDict, total=False):
    """The options of a `sketch:...` spec, as SketchImageModel takes them."""

    size: int
    delay: float


def sketch_options(spec: str) -> SketchOptions:
    """`sketch:size=512,delay=0.5`: image size, and a pause per image that mimics a slow model; SettingsError
    with the fix for anything else."""
    options: SketchOptions = {}
    for part in filter(None, spec.partition(":")[2].split(",")):
        key, _, value = part.partition("=")
        if key not in ("size", "delay"):
            raise SettingsError(f"has an unknown sketch option '{key}': use sketch:size=256,delay=0.5")
        try:
            number = int(value) if key == "size" else float(value)
        except ValueError:
            raise SettingsError(f"gives sketch option {key} '{value}', which is not a number") from None
        if key == "size":
            low, high = SKETCH_SIZES
            if not low <= number <= high:
                raise SettingsError(f"asks for a sketch size of {value}: use {low} to {high} pixels")
            options["size"] = int(number)
        else:
            if not (math.isfinite(number) and 0 <= number <= SKETCH_MAX_DELAY):
                raise SettingsError(f"asks for a sketch delay of {value}: use 0 to {SKETCH_MAX_DELAY:g} seconds")
            options["delay"] = float(number)
    return options


def _check_sketch(spec: str) -> None:
    sketch_options(spec)


def _load_sketch(spec: str, settings: RunSettings) -> SketchImageModel:
    return SketchImageModel(**sketch_options(spec))


SKETCH_BACKEND = Backend(
    name="sketch",
    kind="image",
    syntax="sketch[:size=N,delay=S]",
    summary="the offline demo painter (Pillow, no weights; NOT a real model)",
    claims=fixed("sketch"),
    check=_check_sketch,
    load=_load_sketch,
    steps=False,
)
