"""What the graph and its checkpoints cost per iteration, next to a plain Python loop.

Both sides call the same instant backends (a pre-drawn 64 px image and a canned judge), so the difference
is the graph: SQLite checkpoints with durability "sync", state copies, sidecars and trace lines.

    python bench/overhead.py [--iterations 200] [--long 1000]

The long run shows that the per-iteration cost stays flat and the checkpoints grow linearly: at image 1000 an
iteration costs what it cost at image 10, and the database holds a few KB per image.
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

from refineloop.backends.chat.invoke import build_messages  # noqa: E402
from refineloop.backends.image.protocol import ImageRequest, ImageTraits  # noqa: E402
from refineloop.backends.model_cache import ModelCache  # noqa: E402
from refineloop.cli.run_commands import start_run  # noqa: E402
from refineloop.judges.verdicts import parse_judge_text  # noqa: E402
from refineloop.outputs.artifacts import write_artifacts  # noqa: E402
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
            self.times.append(time.perf_counter())
        return len(text)


def long_run(images: int, folder: Path) -> tuple[float, float, float]:
    """One run of `images` images: ms per iteration around image 10 and around the last image, and the
    checkpoint database's size per image in KB (the write-ahead log included)."""
    cache = ModelCache()
    cache.register_image("instant", InstantImage())
    cache.register_chat("instant", InstantCritic())
    run = folder / "long"
    settings = RunSettings(
        image_model="instant", eval_model="instant", strategy="greedy", max_iterations=images, seed=1,
        output_dir=str(run),
    )  # fmt: skip
    stamps = Stamps()
    start_run(settings, models=cache, out=stamps)
    times = stamps.times
    early = (times[14] - times[4]) / 10 * 1000
    late = (times[-1] - times[-11]) / 10 * 1000
    size = sum(p.stat().st_size for p in run.glob("checkpoints.sqlite*"))
    return early, late, size / images / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long", type=int, default=1000, help="images of the long run (0 skips it)")
    args = parser.parse_args()
    plain, graph, artifacts, floor = [], [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            plain.append(plain_loop(args.iterations, Path(tmp)))
        with tempfile.TemporaryDirectory() as tmp:
            loop, once = graph_loop(args.iterations, Path(tmp))
            graph.append(loop)
            artifacts.append(once)
        with tempfile.TemporaryDirectory() as tmp:
            floor.append(langgraph_floor(args.iterations, Path(tmp)))
    p, g = statistics.median(plain), statistics.median(graph)
    print(f"iterations per run: {args.iterations}, repeats: {args.repeats} (median shown)")
    print(f"{'plain Python loop':<34}{p:8.2f} ms/iteration")
    print(f"{'graph + SQLite (durability sync)':<34}{g:8.2f} ms/iteration")
    print(f"{'added by the graph':<34}{g - p:8.2f} ms/iteration   (target <= 2 ms; peer: ~350 ms)")
    print(
        f"{'  of which LangGraph alone':<34}{statistics.median(floor):8.2f} ms/iteration   (4 empty checkpointed steps)"
    )
    print(f"{'ratio':<34}{g / p:8.2f} x")
    print(f"{'once per run: collage, summary':<34}{statistics.median(artifacts):8.1f} ms for {args.iterations} images")
    if args.long:
        with tempfile.TemporaryDirectory() as tmp:
            early, late, kb = long_run(args.long, Path(tmp))
        print(f"long run of {args.long} images (graph + SQLite, same backends):")
        print(f"{'  per iteration around image 10':<34}{early:8.2f} ms")
        print(f"{f'  per iteration around image {args.long}':<34}{late:8.2f} ms   (target: no more than at image 10)")
        print(f"{'  checkpoints per image':<34}{kb:8.2f} KB   (target <= 20 KB)")


if __name__ == "__main__":
    main()
