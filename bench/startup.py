"""The two ends of a run, side by side with bare diffusers: process start to the first image, and the last
image's verdict to the closing line.

    python bench/startup.py [--size 1024] [--steps 28] [--images 5] [--repeats 1] [--threads N] [--[no-]head-start]
                            [--final-pick K]

Both sides draw with one tiny SD3.5-medium-shaped pipeline (tests/tiny_models.py, random weights) and ask one
fake Ollama server (tests/fake_ollama.py, real HTTP on 127.0.0.1) for a verdict on each image, each in a fresh
process timed from just before it is spawned, so imports count:
- bare diffusers: what the seed's scripts do, written plainly: load the pipeline, then per image draw, save the
  PNG and ask the critic; at the end best.png, summary.txt and a collage, then a closing line;
- refineloop: `refineloop run` (climbing) with the same pipeline, size, steps, images and critic.
The tail is from the last verdict (refineloop: its last judge call before the stop) to the closing line; the
final pick's own critic calls are shown apart, since the target is 0.3 s plus those. The last line says whether
refineloop's first image was drawn ahead while the run started up (refineloop.apps.head_start) and how long its
generate step still waited for it: 0 means the whole draw was hidden behind the start-up. The line before it
times, apart, what a run imports beyond torch and diffusers: without a head start, the first image comes at least
that much after bare diffusers'. `--profile FILE` writes a cProfile of the refineloop side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GOAL = "a single hotdog, as visually hot as possible"
MODEL = "fake-vlm:1b"


def critic_reply(role: str, body: Any, n: int) -> Any:
    """The fake critic: scores 5, 6, 7, 5, 6, 7, ... never DONE, so every run draws all its images; JSON where
    the request asks for a schema (refineloop's judge), else the text format."""
    from tests.fake_ollama import fill_schema

    score = 5 + n % 3
    fmt = body.get("format") if isinstance(body, dict) else None
    if role == "judge":
        if isinstance(fmt, dict):
            return {**fill_schema(fmt, score), "verdict": "CONTINUE", "score": score}
        return f"SCORE: {score}\nCRITIQUE: warm it up\nCONTINUE: a hotter hotdog with flames and steam"
    if isinstance(fmt, dict):
        return fill_schema(fmt, score)
    return "a hotter hotdog with flames and steam, glowing embers"


def child_bare(job: dict[str, Any]) -> None:
    """The seed's loop with no framework: every line is stamped by the parent as it arrives."""
    import base64
    import io

    import ollama
    import torch
    from diffusers import AutoPipelineForText2Image
    from PIL import Image

    pipe = AutoPipelineForText2Image.from_pretrained(job["folder"], torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    client = ollama.Client(host=job["url"])
    out = Path(job["out"])
    out.mkdir(parents=True)
    scores: list[float] = []
    for n in range(1, job["images"] + 1):
        generator = torch.Generator("cpu").manual_seed(n)
        image = pipe(
            prompt=GOAL, num_inference_steps=job["steps"], width=job["size"], height=job["size"], generator=generator
        ).images[0]
        print(f"image {n} (cpu {time.process_time():.2f})", flush=True)
        image.save(out / f"{n:02d}.png")
        data = io.BytesIO()
        image.save(data, format="PNG")
        asked = [
            {"role": "system", "content": "Judge the image. Answer SCORE: 1-10, CRITIQUE: ..., CONTINUE: ..."},
            {"role": "user", "content": f"Score this image: {GOAL}", "images": [base64.b64encode(data.getvalue())]},
        ]
        # Ollama streams its answer (as refineloop's client reads it too).
        text = "".join(part.message.content or "" for part in client.chat(model=MODEL, messages=asked, stream=True))
        found = re.search(r"SCORE:\s*(\d+)", text)
        score = float(found.group(1)) if found else 0.0
        scores.append(score)
        print(f"verdict {n}: {score:g}", flush=True)
    best = max(range(len(scores)), key=lambda i: scores[i]) + 1
    (out / "best.png").write_bytes((out / f"{best:02d}.png").read_bytes())
    (out / "summary.txt").write_text("\n".join(f"{n + 1:02d}.png {s:g}" for n, s in enumerate(scores)) + "\n")
    tiles = [Image.open(out / f"{n:02d}.png") for n in range(1, len(scores) + 1)]
    collage = Image.new("RGB", (tiles[0].width * len(tiles), tiles[0].height))
    for n, tile in enumerate(tiles):
        collage.paste(tile, (n * tile.width, 0))
    collage.save(out / "collage.png")
    print(f"done: best image {best}", flush=True)


#: refineloop's flag for the bench's --head-start choice (None: refineloop decides).
HEAD_START_FLAG: dict[bool | None, list[str]] = {None: [], True: ["--head-start"], False: ["--no-head-start"]}


def child_refineloop(job: dict[str, Any]) -> None:
    """`refineloop run`, as the console script runs it (optionally under cProfile)."""
    sys.path.insert(0, str(ROOT))
    argv = [
        "run", "--image-model", job["folder"], "--eval-model", f"ollama:{MODEL}", "--ollama-url", job["url"],
        "--goal", GOAL, "--strategy", "climbing", "--seed", "7", "--max-iterations", str(job["images"]),
        "--steps", str(job["steps"]), "--width", str(job["size"]), "--height", str(job["size"]),
        "--output-dir", job["out"], *HEAD_START_FLAG[job.get("head_start")],
        *(["--final-pick", str(job["final_pick"])] if job.get("final_pick") is not None else []),
    ]  # fmt: skip
    if job.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        code = _run(argv)
        profiler.disable()
        profiler.dump_stats(job["profile"])
    else:
        # As the console script calls it (no argv: this process's own command line), so that it ends the process
        # as a user's `refineloop run` does, and the exit column is its own, not this wrapper's shutdown.
        sys.argv = ["refineloop", *argv]
        code = _run(None)
    raise SystemExit(code)


def _run(argv: list[str] | None) -> int:
    # Note the process's CPU time when the first image is drawn (its trace record), a figure that other
    # processes on a shared machine do not move; patched before any node imports the function.
    import refineloop.files.trace as trace

    original = trace.append_trace

    def noted(run_dir: str, record: dict[str, Any]) -> None:
        if record.get("kind") == "image":
            print(f"image {record.get('iteration')} (cpu {time.process_time():.2f})", flush=True)
        original(run_dir, record)

    trace.append_trace = noted
    from refineloop.cli.main import main

    return main(argv)


def spawn(mode: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run one side in a fresh process; the parent stamps each stdout line as it arrives."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(job, fh)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    if job.get("threads"):  # torch's CPU threads, for both sides alike (OpenMP reads it at start-up)
        env["OMP_NUM_THREADS"] = str(job["threads"])
    lines: list[tuple[float, str]] = []
    started = time.time()
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--job", fh.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    for line in child.stdout:
        lines.append((time.time(), line.rstrip("\n")))
    child.wait()
    ended = time.time()
    os.unlink(fh.name)
    if child.returncode != 0:
        raise SystemExit(f"{mode} failed:\n" + "\n".join(text for _, text in lines[-40:]))
    return {"started": started, "ended": ended, "lines": lines}


#: Imports the image stack, then times the import of what a run needs beyond it (LangGraph, langchain-core,
#: LangSmith and refineloop's run modules), in a fresh process.
RUN_IMPORTS = """
import time, torch, diffusers, diffusers.pipelines.stable_diffusion_3
started = time.perf_counter()
import refineloop.cli.run_commands
print(time.perf_counter() - started)
"""


def run_imports_seconds(repeats: int) -> float:
    """The median time to import a run's modules after torch and diffusers: the start-up that the first image
    waits for unless a head start draws it meanwhile (docs/bench.md)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = [
        float(subprocess.run([sys.executable, "-c", RUN_IMPORTS], env=env, capture_output=True, text=True).stdout)
        for _ in range(repeats)
    ]
    return statistics.median(times)


def first_cpu(run: dict[str, Any]) -> float:
    """CPU seconds the process had used when its first image was drawn."""
    found = re.search(r"\(cpu ([\d.]+)\)", next(text for _, text in run["lines"] if "(cpu " in text))
    return float(found.group(1)) if found else float("nan")


def bare_figures(run: dict[str, Any]) -> dict[str, float]:
    stamps = {text.split(" (cpu")[0].split(":")[0]: at for at, text in run["lines"]}
    images = sorted(at for key, at in stamps.items() if key.startswith("image "))  # "image N (cpu ...)"
    verdicts = sorted(at for key, at in stamps.items() if key.startswith("verdict "))
    closing = max(at for at, _ in run["lines"])
    return {
        "first": images[0] - run["started"],
        "cpu": first_cpu(run),
        "tail": closing - verdicts[-1],
        "pick": 0.0,
        "exit": run["ended"] - closing,
        "wall": run["ended"] - run["started"],
    }


def refineloop_figures(run: dict[str, Any], out: Path) -> dict[str, float]:
    trace = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    images = [r["time"] for r in trace if r.get("kind") == "image"]
    judged = [r for r in trace if r.get("kind") == "chat" and str(r.get("role", "")).startswith("judge")]
    pick = [r for r in trace if r.get("kind") == "chat" and str(r.get("role", "")).startswith("final")]
    # A judge call's record is written when its answer is in: the last one before the stop is the last verdict.
    last = max(r["time"] for r in judged if not pick or r["time"] <= min(p["time"] for p in pick))
    closing = max(at for at, text in run["lines"] if text.strip())
    first = next(r for r in trace if r.get("kind") == "image")
    return {
        "ahead": 1.0 if first.get("head_start") == "used" else 0.0,
        "waited": float(first["seconds"]),
        "first": images[0] - run["started"],
        "cpu": first_cpu(run),
        "tail": closing - last,
        "pick": sum(r["seconds"] for r in pick),
        "exit": run["ended"] - closing,
        "wall": run["ended"] - run["started"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="image side (default 1024, as the seed draws)")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of runs (medians shown)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch's CPU threads on both sides (default: torch's choice, every core); fewer leave the start-up a "
        "core while the first image draws, as a GPU draw does",
    )
    parser.add_argument(
        "--head-start",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run refineloop with --head-start or --no-head-start (default: neither, refineloop's own choice)",
    )
    parser.add_argument(
        "--final-pick",
        type=int,
        default=None,
        help="refineloop's --final-pick K (default: its own); 0 leaves the tail with no critic call to hide behind",
    )
    parser.add_argument("--profile", help="write a cProfile of the refineloop side here")
    parser.add_argument("--timeline", action="store_true", help="print each side's lines with their times")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = json.loads(Path(args.job).read_text())
        child_bare(job) if args.child == "bare" else child_refineloop(job)
        return
    sys.path.insert(0, str(ROOT))
    from tests.fake_ollama import FakeOllama
    from tests.tiny_models import build_tiny_sd3

    threads = f"CPU, {args.threads} torch threads" if args.threads else "CPU, torch's threads"
    print(f"tiny SD3.5-medium-shaped pipeline, {args.size} px, {args.steps} steps, {args.images} images, {threads}")
    rows: dict[str, list[dict[str, float]]] = {"bare diffusers": [], "refineloop": []}
    fake_server = FakeOllama(models={MODEL: ["vision"]}, default=critic_reply)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp, fake_server as fake:
        folder = build_tiny_sd3(Path(tmp) / "pipe", largest=args.size)
        base = {"folder": str(folder), "url": fake.url, "images": args.images, "steps": args.steps, "size": args.size}
        base["threads"], base["head_start"], base["final_pick"] = args.threads, args.head_start, args.final_pick
        for n in range(args.repeats):
            bare = spawn("bare", {**base, "out": f"{tmp}/bare-{n}"})
            rows["bare diffusers"].append(bare_figures(bare))
            out = Path(tmp) / f"refineloop-{n}"
            ours = spawn("refineloop", {**base, "out": str(out), "profile": args.profile})
            rows["refineloop"].append(refineloop_figures(ours, out))
            if args.timeline:
                for side, run in (("bare", bare), ("refineloop", ours)):
                    for at, text in run["lines"]:
                        print(f"  {side:<10} {at - run['started']:7.2f}s  {text[:100]}")
    print(
        f"{'':<16}{'first image':>12}{'(its CPU s)':>12}{'tail':>8}{'of which final pick calls':>27}{'exit':>7}"
        f"{'wall':>8}"
    )
    for name, runs in rows.items():
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(
            f"{name:<16}{med['first']:>11.2f}s{med['cpu']:>11.2f}s{med['tail']:>7.2f}s{med['pick']:>26.2f}s"
            f"{med['exit']:>6.2f}s{med['wall']:>7.2f}s"
        )
    keys = ("first", "cpu", "tail", "pick")
    ours_med = {key: statistics.median(r[key] for r in rows["refineloop"]) for key in keys}
    bare_med = {key: statistics.median(r[key] for r in rows["bare diffusers"]) for key in keys}
    print(
        f"first image after bare's: {ours_med['first'] - bare_med['first']:+.2f} s, "
        f"{ours_med['cpu'] - bare_med['cpu']:+.2f} CPU s   (target <= 0.3 s)"
    )
    print(f"tail beyond the final pick's calls: {ours_med['tail'] - ours_med['pick']:.2f} s   (target <= 0.3 s)")
    print(
        f"a run's own imports after torch and diffusers (LangGraph, langchain-core, LangSmith; fresh process): "
        f"{run_imports_seconds(max(3, args.repeats)):.2f} s, which the first image waits for unless drawn ahead"
    )
    ours = rows["refineloop"]
    print(
        f"refineloop's first image drawn ahead in {sum(r['ahead'] for r in ours):.0f} of {len(ours)} runs; "
        f"its generate step waited {statistics.median(r['waited'] for r in ours):.2f} s for it (median)"
    )


if __name__ == "__main__":
    main()
