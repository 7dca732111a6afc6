"""What the graph and its checkpoints cost per iteration, next to a plain Python loop.

Both sides call the same instant backends (a pre-drawn 64 px image and a canned judge), so the difference
is the graph: SQLite checkpoints with durability "sync", state copies, sidecars and trace lines.

    python bench/overhead.py [--iterations 200] [--long 1000] [--configs greedy,climbing,...]

The long runs (one per strategy, and climbing with `--candidates 4`, `--judge-samples 3`, `--judge pairwise`,
`--judge checklist`, screened drafts and a walk on drafts) show that the per-iteration cost stays flat and the
checkpoints grow linearly: at image 1000 an iteration costs what it cost at image 10, and the database holds a
few KB per image. Their critic answers each role (judge, proposer, duel, checklist) with replies as long as a real
vision model's, and its scores wander (so climbing both adopts and rejects, and annealing walks downhill), never
saying DONE. Each run's folder is named as a run's is by default, since every database row keeps that name.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from PIL import Image  # noqa: E402

from refineloop.backends.chat.invoke import build_messages, call_kind  # noqa: E402
from refineloop.backends.image.protocol import ImageRequest, ImageTraits  # noqa: E402
from refineloop.backends.model_cache import ModelCache  # noqa: E402
from refineloop.cli.run_commands import start_run  # noqa: E402
from refineloop.judges.verdicts import parse_judge_text  # noqa: E402
from refineloop.outputs.artifacts import write_artifacts  # noqa: E402
from refineloop.run_start import default_run_dir  # noqa: E402
from refineloop.settings import RunSettings  # noqa: E402

REPLY = "SCORE: 5\nCRITIQUE: fine\nCONTINUE: a hotter hotdog"


class InstantImage:
    """Returns the same small image at once; uncapped prompts, so no summarizer call."""

    name = "instant"
    traits = ImageTraits(prompt_budget=None, negative_prompt=True, img2img=True, strength=True)

    def __init__(self) -> None:
        self.image = Image.new("RGB", (64, 64), (200, 80, 20))

    def generate(self, request: ImageRequest) -> list[Image.Image]:
        return [self.image for _ in request.seeds]

    def generate_many(self, requests: Sequence[ImageRequest]) -> list[list[Image.Image]]:
        return [self.generate(request) for request in requests]

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class InstantCritic(BaseChatModel):
    """Answers every call with the same judge reply."""

    @property
    def _llm_type(self) -> str:
        return "instant"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=REPLY))])


def plain_loop(iterations: int, folder: Path) -> float:
    """The same backend calls in a bare loop: generate, save the PNG, judge with the image, parse."""
    image_model, critic = InstantImage(), InstantCritic()
    started = time.perf_counter()
    for i in range(1, iterations + 1):
        image = image_model.generate(ImageRequest(prompt="a hotdog", negative_prompt="", seeds=(i,)))[0]
        path = folder / f"{i:02d}.png"
        image.save(path)
        reply = critic.invoke(build_messages("SCORE:", "judge", str(path)))
        parse_judge_text(str(reply.content))
    return (time.perf_counter() - started) / iterations * 1000


def graph_loop(iterations: int, folder: Path) -> tuple[float, float]:
    """The real runner: graph, SqliteSaver, durability sync, progress display to a buffer.

    Returns ms per iteration of the loop, and ms for the once-per-run artifacts (collage, summary, best.png),
    timed by writing them again from the final state and taken out of the loop figure.
    """
    cache = ModelCache()
    cache.register_image("instant", InstantImage())
    cache.register_chat("instant", InstantCritic())
    settings = RunSettings(
        image_model="instant",
        eval_model="instant",
        strategy="greedy",
        max_iterations=iterations,
        seed=1,
        output_dir=str(folder / "run"),
    )
    started = time.perf_counter()
    outcome = start_run(settings, models=cache, out=io.StringIO())
    elapsed = time.perf_counter() - started
    assert len(outcome.values["history"]) == iterations
    started = time.perf_counter()
    write_artifacts(outcome.values)
    artifacts = time.perf_counter() - started
    return (elapsed - artifacts) / iterations * 1000, artifacts * 1000


class FloorState(TypedDict):
    """The state of the floor graph: a counter and a growing list, like the run's iteration and history."""

    i: int
    seen: list[int]


def langgraph_floor(iterations: int, folder: Path) -> float:
    """LangGraph alone: four nodes that do nothing (as many super-steps as one refineloop iteration), on the
    same SQLite settings with durability "sync". No graph of four checkpointed steps can cost less."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(FloorState)
    graph.add_node("one", lambda s: {"i": s["i"] + 1})
    graph.add_node("two", lambda s: {"seen": [*s["seen"][-1:], s["i"]]})
    graph.add_node("three", lambda s: {})
    graph.add_node("four", lambda s: {})
    graph.add_edge(START, "one")
    graph.add_edge("one", "two")
    graph.add_edge("two", "three")
    graph.add_edge("three", "four")
    graph.add_conditional_edges("four", lambda s: END if s["i"] >= iterations else "one")
    conn = sqlite3.connect(folder / "floor.sqlite", check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    app = graph.compile(checkpointer=SqliteSaver(conn))
    config: Any = {"configurable": {"thread_id": "floor"}, "recursion_limit": 10 * iterations}
    started = time.perf_counter()
    for _ in app.stream({"i": 0, "seen": []}, config, durability="sync"):
        pass
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed / iterations * 1000


class Stamps(io.StringIO):
    """A progress sink that notes when each image's line arrives (one per judged image)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def write(self, text: str) -> int:
        if text.startswith("["):
            # The process's CPU time, all its threads: on a shared machine other processes do not move it.
            self.times.append(time.process_time())
        return len(text)


#: What a real vision model writes about an image, at about its length (a critique and an idea each a few
#: hundred characters): the records that checkpoints carry are as large as in a real run.
CRITIQUE = (
    "The sausage glows a deep orange and the bun is toasted at its edges, but the heat stops at the food: the "
    "plate is cold, the background a flat grey, and nothing in the air shimmers. The steam is thin and drawn "
    "straight up, the light is even and soft, and the colours sit in the middle of the range."
)
IDEA = (
    "the same hotdog on a cast-iron plate still hissing, thick steam curling through red backlight, the air "
    "above it rippling with heat haze, embers drifting past, a deep black background and saturated orange light"
)
#: The judge's scores in turn: new bests early, then ever more misses, some downhill moves for annealing.
SCORES = (5, 6, 4, 7, 5, 6, 3, 8, 6, 5, 7, 4)


class TalkingCritic(BaseChatModel):
    """Answers each role in its format, at a real model's length; scores follow SCORES, never DONE."""

    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "talking"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.calls += 1
        kind = call_kind(run_manager)  # what refineloop asks, from the call's metadata
        if kind == "compare":
            text = f"WINNER: {'AB'[self.calls % 2]}\nWHY: it shows more heat."
        elif kind == "judge":
            text = f"SCORE: {SCORES[self.calls % len(SCORES)]}\nCRITIQUE: {CRITIQUE}\nCONTINUE: {IDEA}"
        elif kind == "checklist-write":
            text = "\n".join(f"QUESTION: Does the image show heat in part {n}? | WEIGHT: {n}" for n in range(1, 6))
        elif kind == "checklist":
            text = "\n".join(f"Q{n}: {'yes' if (self.calls + n) % 3 else 'no'}" for n in range(1, 6))
        elif kind == "propose":
            text = f"IDEA: {IDEA}, variation {self.calls}"
        else:
            text = IDEA
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


#: The long runs: one per strategy, and climbing with each judge option, --candidates 4 (with and without screened
#: drafts) and a walk on drafts.
LONG_CONFIGS: dict[str, dict[str, Any]] = {
    "greedy": {"strategy": "greedy"},
    "climbing": {"strategy": "climbing"},
    "annealing": {"strategy": "annealing"},
    "img2img": {"strategy": "img2img"},
    "agent": {"strategy": "agent"},
    "evaluator-optimizer": {"strategy": "evaluator-optimizer"},
    "climbing --candidates 4": {"strategy": "climbing", "candidates": 4},
    "climbing --judge-samples 3": {"strategy": "climbing", "judge_samples": 3},
    "annealing --judge-samples 3": {"strategy": "annealing", "judge_samples": 3},
    "climbing --judge pairwise": {"strategy": "climbing", "judge": "pairwise"},
    "climbing --judge checklist": {"strategy": "climbing", "judge": "checklist"},
    "climbing --candidates 4 --draft-steps 7": {"strategy": "climbing", "candidates": 4, "draft_steps": 7},
    "climbing --draft-walk --draft-steps 7": {"strategy": "climbing", "draft_steps": 7, "draft_walk": True},
}


def long_run(images: int, folder: Path, options: dict[str, Any]) -> tuple[float, float, float, float]:
    """One run of `images` images with `options` (RunSettings fields): CPU ms per image around image 10 and
    around the last image, the checkpoint database's size per image in KB (its write-ahead log included), and
    the CPU seconds from the last image's progress line to the run's end (the stop: the final pick with this
    instant critic, best.png, summary.txt, the collage and report.html)."""
    cache = ModelCache()
    cache.register_image("instant", InstantImage())
    cache.register_chat("instant", TalkingCritic())
    # Named as a run's folder is by default: the thread id is the folder's name, and every database row keeps it.
    run = Path(default_run_dir("hotdog", root=str(folder)))
    rounds = -(-images // options.get("candidates", 1))
    settings = RunSettings(
        image_model="instant", eval_model="instant", max_iterations=rounds, patience=images, seed=1,
        output_dir=str(run), **options,
    )  # fmt: skip
    stamps = Stamps()
    start_run(settings, models=cache, out=stamps)
    tail = time.process_time() - stamps.times[-1]
    # Screened drafts count as images here: each is drawn, judged and recorded like one.
    made = len(list(run.glob("[0-9]*.png"))) + len(list(run.glob("drafts/*.png")))
    # A progress line is one round: with --candidates 4, ten lines are forty images; with screened drafts, the
    # image drawn in full after one or more rounds of drafts. So a line stands for the run's images per line.
    times = stamps.times
    per = made / len(times)
    early, late = window(times, 4, 14) / per, window(times, len(times) - 11, len(times) - 1) / per
    size = sum(p.stat().st_size for p in run.glob("checkpoints.sqlite*"))
    if made < images:
        print(f"  warning: the run stopped at {made} images of {images}")
    return early, late, size / max(made, 1) / 1024, tail


def window(times: list[float], first: int, last: int) -> float:
    """CPU ms per progress line between two lines (kept within the run: a short run has fewer than 15)."""
    first, last = max(0, min(first, len(times) - 2)), max(1, min(last, len(times) - 1))
    return (times[last] - times[first]) / (last - first) * 1000


def short_runs(iterations: int, repeats: int) -> None:
    """The graph's cost per iteration beside a plain loop and LangGraph alone, the median of `repeats` runs."""
    plain, graph, artifacts, floor = [], [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            plain.append(plain_loop(iterations, Path(tmp)))
        with tempfile.TemporaryDirectory() as tmp:
            loop, once = graph_loop(iterations, Path(tmp))
            graph.append(loop)
            artifacts.append(once)
        with tempfile.TemporaryDirectory() as tmp:
            floor.append(langgraph_floor(iterations, Path(tmp)))
    p, g = statistics.median(plain), statistics.median(graph)
    print(f"iterations per run: {iterations}, repeats: {repeats} (median shown)")
    print(f"{'plain Python loop':<34}{p:8.2f} ms/iteration")
    print(f"{'graph + SQLite (durability sync)':<34}{g:8.2f} ms/iteration")
    print(f"{'added by the graph':<34}{g - p:8.2f} ms/iteration   (target <= 2 ms; peer: ~350 ms)")
    print(
        f"{'  of which LangGraph alone':<34}{statistics.median(floor):8.2f} ms/iteration   (4 empty checkpointed steps)"
    )
    print(f"{'ratio':<34}{g / p:8.2f} x")
    print(f"{'once per run: collage, summary':<34}{statistics.median(artifacts):8.1f} ms for {iterations} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="short runs of each kind (0 skips them)")
    parser.add_argument("--long", type=int, default=1000, help="images of each long run (0 skips them)")
    parser.add_argument(
        "--configs", default=",".join(LONG_CONFIGS), help=f"long runs to make, of: {', '.join(LONG_CONFIGS)}"
    )
    args = parser.parse_args()
    if args.repeats:
        short_runs(args.iterations, args.repeats)
    if args.long:
        print(f"long runs of {args.long} images (graph + SQLite, instant image, a critic that talks at length):")
        print(
            f"  {'configuration':<42}{'CPU ms/image @10':>17}{f'@{args.long}':>9}{'KB/image':>10}{'stop CPU s':>12}"
            "   (target <= 20 KB)"
        )
        for name in args.configs.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                early, late, kb, tail = long_run(args.long, Path(tmp), LONG_CONFIGS[name])
            print(f"  {name:<42}{early:17.2f}{late:9.2f}{kb:10.2f}{tail:12.2f}")


if __name__ == "__main__":
    main()
