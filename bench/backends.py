"""Benchmark the diffusers backend: batching, loading once, and what the img2img twin costs in memory.

Run from the repository root: `python bench/backends.py` (tiny random-weight SD built on the fly), or
`python bench/backends.py --model PATH_OR_HUB_ID` for a real pipeline. Prints figures only; nothing here
asserts on timings, which depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red cat on the sea, small house, dark sky"


def _import_path() -> None:
    # Run as a script, sys.path[0] is bench/: make `refineloop` and `tests` importable from the root.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls (the median shrugs off one slow outlier)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM from /proc on Linux, else getrusage."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kB, macOS bytes.
    return peak if sys.platform == "darwin" else peak * 1024


def _unique_param_bytes(*pipes: Any) -> int:
    """Bytes of the distinct tensors behind these pipelines: shared weights count once."""
    import torch

    seen: set[int] = set()
    total = 0
    for pipe in pipes:
        for module in pipe.components.values():
            if not isinstance(module, torch.nn.Module):
                continue
            for tensor in [*module.parameters(), *module.buffers()]:
                ptr = tensor.data_ptr()
                if ptr in seen:
                    continue
                seen.add(ptr)
                total += tensor.numel() * tensor.element_size()
    return total


def _request(seeds: tuple[int, ...], steps: int, size: int | None, init: str | None = None) -> Any:
    from refineloop.backends.image.protocol import ImageRequest

    return ImageRequest(
        prompt=PROMPT,
        negative_prompt="blurry",
        seeds=seeds,
        steps=steps,
        width=size,
        height=size,
        init_image=init,
        strength=0.6 if init else None,
    )


# ------------------------------------------------------------------------------------------ child runs


def child(mode: str, spec: str, device: str, steps: int, size: int | None) -> dict[str, Any]:
    """One memory measurement in a fresh process, so each peak is its own (VmHWM cannot be reset)."""
    _import_path()
    import torch

    from refineloop.backends.image.diffusers import load_diffusers

    model = load_diffusers(spec, device=device)
    pipes: list[Any] = [model.pipe]
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    first = model.generate(_request((1,), steps, size))[0]
    if mode == "from_pipe":
        # The backend's own img2img path: the twin made once with from_pipe, sharing every module.
        pipes.append(model.img2img_pipe)
        with tempfile.TemporaryDirectory() as tmp:
            init = str(Path(tmp) / "init.png")
            first.save(init)
            model.generate(_request((2,), steps, size, init=init))
    elif mode == "second_load":
        # The naive way: a second full copy of the weights for img2img.
        from diffusers import AutoPipelineForImage2Image

        i2i = AutoPipelineForImage2Image.from_pretrained(spec, dtype=model.pipe.dtype).to(device)
        i2i.set_progress_bar_config(disable=True)
        pipes.append(i2i)
        i2i(prompt=PROMPT, image=first, strength=0.6, num_inference_steps=steps)
    return {
        "rss": _peak_rss_bytes(),
        "params": _unique_param_bytes(*pipes),
        "cuda_peak": torch.cuda.max_memory_allocated() if cuda else None,
    }


def _run_child(mode: str, spec: str, device: str, steps: int, size: int | None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--model", spec, "--device", device]
    cmd += ["--steps", str(steps)] + (["--size", str(size)] if size else [])
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ benches


def bench_speed(spec: str, device: str, steps: int, size: int | None, repeats: int) -> list[tuple[str, str]]:
    """Sequential vs batched generation, and load-once vs load-per-call."""
    _import_path()
    from refineloop.backends.image.diffusers import load_diffusers

    start = time.perf_counter()
    model = load_diffusers(spec, device=device)
    first_load = time.perf_counter() - start
    warm_load = _median_seconds(lambda: load_diffusers(spec, device=device), repeats)
    n = 4
    seeds = tuple(range(1, n + 1))
    # Warm-up for both batch shapes: the first call at a new shape pays lazy initialisation (kernel
    # selection, oneDNN primitive creation), which would otherwise land in one side's figures.
    model.generate(_request((0,), steps, size))
    model.generate(_request(seeds, steps, size))

    def sequential() -> None:
        for s in seeds:
            model.generate(_request((s,), steps, size))

    def batched() -> None:
        model.generate(_request(seeds, steps, size))

    seq = _median_seconds(sequential, repeats)
    bat = _median_seconds(batched, repeats)
    one = seq / n
    load_once = warm_load + seq
    load_each = n * (warm_load + one)
    return [
        ("placement", model.placement),
        ("first load (incl. lazy imports)", f"{first_load * 1000:8.1f} ms"),
        ("warm load_diffusers", f"{warm_load * 1000:8.1f} ms"),
        (f"per image, {n} sequential calls", f"{one * 1000:8.1f} ms"),
        (f"per image, one batched call of {n}", f"{bat / n * 1000:8.1f} ms  ({seq / bat:.2f}x faster)"),
        (f"{n} images, load once", f"{load_once * 1000:8.1f} ms"),
        (f"{n} images, load per call", f"{load_each * 1000:8.1f} ms  ({load_each / load_once:.2f}x slower)"),
    ]


def bench_memory(spec: str, device: str, steps: int, size: int | None) -> list[tuple[str, str]]:
    """Peak memory of text-to-image alone vs with the img2img twin (shared) vs a second load."""
    runs = {mode: _run_child(mode, spec, device, steps, size) for mode in ("t2i", "from_pipe", "second_load")}
    base = runs["t2i"]
    rows: list[tuple[str, str]] = []
    labels = {
        "t2i": "text-to-image alone",
        "from_pipe": "+ img2img via from_pipe",
        "second_load": "+ img2img loaded again",
    }
    for mode, label in labels.items():
        r = runs[mode]
        rows.append(
            (
                f"weights, {label}",
                f"{r['params'] / 1e6:8.2f} MB  (ratio {r['params'] / base['params']:.3f})",
            )
        )
    for mode, label in labels.items():
        r = runs[mode]
        rows.append((f"peak RSS, {label}", f"{r['rss'] / 1e6:8.1f} MB  (ratio {r['rss'] / base['rss']:.3f})"))
    if base["cuda_peak"]:
        for mode, label in labels.items():
            r = runs[mode]
            ratio = r["cuda_peak"] / base["cuda_peak"]
            rows.append((f"CUDA max allocated, {label}", f"{r['cuda_peak'] / 1e6:8.1f} MB  (ratio {ratio:.3f})"))
    shared = runs["from_pipe"]["params"] / base["params"]
    verdict = "ok" if shared <= 1.05 else "OVER TARGET"
    rows.append(("from_pipe weight ratio vs target 1.05", f"{shared:.3f}  {verdict}"))
    return rows


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}")
    print("-" * (width + 40))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="pipeline folder or hub id (default: a tiny random SD built now)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per image")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is shown")
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["t2i", "from_pipe", "second_load"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.model, args.device or "cpu", args.steps, args.size)))
        return 0

    _import_path()
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        spec = args.model
        if spec is None:
            from tests.tiny_models import build_tiny_sd

            start = time.perf_counter()
            spec = str(build_tiny_sd(Path(tmp) / "tiny-sd"))
            print(f"built tiny SD in {time.perf_counter() - start:.2f} s: {spec}")
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            size = f"{args.size}px" if args.size else "default size"
            title = f"{device}: speed ({args.steps} steps, {size}, median of {args.repeats})"
            _print_table(title, bench_speed(spec, device, args.steps, args.size, args.repeats))
            _print_table(f"{device}: memory", bench_memory(spec, device, args.steps, args.size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
