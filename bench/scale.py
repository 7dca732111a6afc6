"""Benchmark the Ray engine: images per second for 1, 4 and 16 concurrent runs, batching on and off.

Run from the repository root: `python bench/scale.py`. It needs the `ray` extra and PostgreSQL's server
binaries (Debian: `apt-get install postgresql`); it starts a throwaway Postgres and a local Ray, builds the tiny
random-weight SD pipeline, and runs the real engine (Serve generator, runner actors, PostgresSaver, the demo
critic). Each figure is the batch's images divided by the time from "runners ready" to "every run done",
so Ray start-up, model loading and runner start are not counted. "Batching off" is the same deployment
with `max_batch_size=1`: one pipeline call per image.

What the numbers mean on a CPU-only machine: the tiny pipeline is so cheap that a pipeline call costs
little more than its Python overhead, and the generator shares the cores with the runners and the critic.
The figures measure the engine's overhead and how well batching merges calls, not GPU throughput.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _import_path() -> None:
    # Run as a script, sys.path[0] is bench/: make `refineloop` and `tests` importable from the root.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _one(
    url: str, model_dir: str, runs: int, batching: bool, iterations: int, steps: int, workdir: Path
) -> dict[str, Any]:
    """One measured batch: `runs` goals at once, each `iterations` images."""
    from ray import serve

    from refineloop.apps.batch import plan_batch
    from refineloop.scale.ray import APP, DEPLOYMENT, EngineOptions, run_ray
    from refineloop.settings import RunSettings

    goals = workdir / f"goals-{runs}-{'on' if batching else 'off'}.jsonl"
    goals.write_text("".join(json.dumps({"goal": f"a glowing coal {n}", "seed": n}) + "\n" for n in range(runs)))
    settings = RunSettings(
        image_model=model_dir, eval_model="demo", strategy="greedy", max_iterations=iterations, steps=steps
    )
    plan = plan_batch(str(goals), settings, str(workdir / goals.stem), "postgres")
    runners = 2 if runs > 1 else 1
    options = EngineOptions(
        runners=runners, runs_per_runner=max(1, -(-runs // runners)), max_batch_size=8 if batching else 1
    )
    marks: dict[str, float] = {}

    def ready(_runners: list[Any]) -> None:
        marks["ready"] = time.perf_counter()

    handle = None
    before: dict[str, Any] = {"images": 0, "pipeline_calls": 0, "batch_sizes": []}
    if serve.status().applications.get(APP) is not None:
        handle = serve.get_deployment_handle(DEPLOYMENT, app_name=APP)
        before = handle.stats.remote().result()
    rows = run_ray(plan, url, options, out=io.StringIO(), on_ready=ready)
    seconds = time.perf_counter() - marks["ready"]
    after = serve.get_deployment_handle(DEPLOYMENT, app_name=APP).stats.remote().result()
    if after["pid"] != before.get("pid"):
        before = {"images": 0, "pipeline_calls": 0, "batch_sizes": []}  # redeployed: counters started afresh
    images = sum(r.images for r in rows)
    sizes = after["batch_sizes"][len(before["batch_sizes"]) :]
    return {
        "runs": runs,
        "batching": batching,
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "pipeline_calls": after["pipeline_calls"] - before["pipeline_calls"],
        "mean_batch": sum(sizes) / len(sizes) if sizes else 0.0,
        "all_done": all(r.status == "done" for r in rows),
    }


def main() -> None:
    """Measure and print the table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="1,4,16", help="concurrent runs to measure (default: 1,4,16)")
    parser.add_argument("--iterations", type=int, default=4, help="images per run (default: 4)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per image (default: 4)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    _import_path()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from tests.scale_fixtures import local_postgres
    from tests.tiny_models import build_tiny_sd

    counts = [int(n) for n in args.runs.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="refineloop-bench-") as tmp, local_postgres() as url:
        model_dir = str(build_tiny_sd(Path(tmp) / "tiny-sd"))
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only, as in the tests
        ray.init(
            num_cpus=os.cpu_count() or 2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
        )
        try:
            for batching in (True, False):
                # The first batch of each mode also (re)deploys the generator: run it once unmeasured.
                _one(url, model_dir, 2, batching, 1, args.steps, Path(tmp))
                for runs in counts:
                    results.append(_one(url, model_dir, runs, batching, args.iterations, args.steps, Path(tmp)))
                    r = results[-1]
                    print(
                        f"{r['runs']:>3} runs  batching {'on ' if batching else 'off'}  {r['images']:>3} images in "
                        f"{r['seconds']:5.2f}s = {r['images_per_s']:5.1f} images/s  "
                        f"({r['pipeline_calls']} pipeline calls, mean batch {r['mean_batch']:.1f})",
                        flush=True,
                    )
        finally:
            serve.shutdown()
            ray.shutdown()
    print(f"\nmachine: {os.cpu_count()} CPU cores, no GPU; tiny random-weight SD at 64 px, {args.steps} steps")
    print(f"{'runs':>4}  {'batching':<8} {'images/s':>9} {'calls/image':>11}")
    for r in results:
        print(
            f"{r['runs']:>4}  {'on' if r['batching'] else 'off':<8} {r['images_per_s']:>9.1f} "
            f"{r['pipeline_calls'] / max(1, r['images']):>11.2f}"
        )
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
