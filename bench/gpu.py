"""refineloop against bare diffusers on the same images: per image, batched, first image, memory, --compile.

    python bench/gpu.py [--model sdxl|sd3|both] [--size 1024] [--steps 20] [--images 6]

Pipelines are built from configs with random weights (no download): on CUDA the real shapes of SDXL base
(UNet 320/640/1280, transformer layers 1/2/10, CLIP-L + bigG: 3.47 B parameters) and of SD3.5 medium (MMDiT-X,
24 layers, 2 CLIP + T5-XXL), in bf16; without CUDA the tiny test pipelines at 64 px, and the output says so,
because then the figures show the wiring, not diffusion speed.

Each side runs in a process of its own, so "first image" is measured from process start, imports included:
- refineloop: `refineloop run` (climbing, one image a round, the offline demo critic), then `--candidates 4`,
  then `--compile`;
- bare diffusers: a plain loop over the very prompts and seeds refineloop drew (read back from its trace),
  saving a PNG per image as the seed's scripts do, then the same in batches of 4.
Per image is the steady state (the first image, which pays for warm-up, is left out).
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------- pipelines


def build(kind: str, folder: Path, cuda: bool) -> Path:
    """Save a random-weight pipeline of `kind` (sdxl or sd3) into `folder`: real shapes on CUDA, tiny otherwise."""
    if not cuda:
        sys.path.insert(0, str(ROOT))
        from tests.tiny_models import build_tiny_sd, build_tiny_sd3

        return build_tiny_sd(folder) if kind == "sdxl" else build_tiny_sd3(folder)
    import torch

    torch.manual_seed(0)
    with torch.device("cuda"):
        pipe = _sdxl() if kind == "sdxl" else _sd3()
    with torch.no_grad():
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                # Random weights at full scale overflow bf16 activations in deep stacks; halved they do not.
                for parameter in module.parameters():
                    parameter.mul_(0.5)
    pipe.to(torch.bfloat16).save_pretrained(str(folder))
    return folder


def _tokenizer() -> Any:
    sys.path.insert(0, str(ROOT))
    from tests.tiny_models import _clip_tokenizer  # a small written vocab: the weights are random anyway

    return _clip_tokenizer()


def _clip(tokenizer: Any, hidden: int, layers: int, heads: int, projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        projection_dim=hidden,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _vae(latent: int, scaling: float, shift: float | None) -> Any:
    from diffusers import AutoencoderKL

    extra = {"shift_factor": shift} if shift is not None else {}
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=latent,
        sample_size=1024,
        scaling_factor=scaling,
        **extra,
    )


def _sdxl() -> Any:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tokenizer, tokenizer_2 = _tokenizer(), _tokenizer()
    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    with torch.device("cpu"):  # schedulers keep their tables on the CPU, whatever device the models are built on
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        )
    return StableDiffusionXLPipeline(
        vae=_vae(4, 0.13025, None),
        text_encoder=_clip(tokenizer, 768, 12, 12, projection=False),
        text_encoder_2=_clip(tokenizer_2, 1280, 32, 20, projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


def _sd3() -> Any:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5Config, T5EncoderModel

    sys.path.insert(0, str(ROOT))
    from tests.tiny_models import _t5_tokenizer

    tokenizer, tokenizer_2, tokenizer_3 = _tokenizer(), _tokenizer(), _t5_tokenizer(256)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_3),
            d_model=4096,
            d_ff=10240,
            d_kv=64,
            num_layers=24,
            num_heads=64,
            feed_forward_proj="gated-gelu",
            pad_token_id=tokenizer_3.pad_token_id,
            eos_token_id=tokenizer_3.eos_token_id,
        )
    )
    transformer = SD3Transformer2DModel(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=24,
        attention_head_dim=64,
        num_attention_heads=24,
        joint_attention_dim=4096,
        caption_projection_dim=1536,
        pooled_projection_dim=2048,
        pos_embed_max_size=384,
        dual_attention_layers=tuple(range(13)),
        qk_norm="rms_norm",
    )
    with torch.device("cpu"):
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=_vae(16, 1.5305, 0.0609),
        text_encoder=_clip(tokenizer, 768, 12, 12, projection=True),
        tokenizer=tokenizer,
        text_encoder_2=_clip(tokenizer_2, 1280, 32, 20, projection=True),
        tokenizer_2=tokenizer_2,
        text_encoder_3=t5,
        tokenizer_3=tokenizer_3,
    )


# --------------------------------------------------------------------------------------------- the two sides


def _peak_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def child_bare(job: dict[str, Any], started: float) -> dict[str, Any]:
    """Load the pipeline and draw the given prompts and seeds one by one (then in batches), saving PNGs."""
    import torch
    from diffusers import AutoPipelineForText2Image

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    pipe = AutoPipelineForText2Image.from_pretrained(job["folder"], torch_dtype=dtype).to("cuda" if cuda else "cpu")
    pipe.set_progress_bar_config(disable=True)
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    knobs = {"num_inference_steps": job["steps"], "guidance_scale": job["guidance"]}
    if job.get("size"):
        knobs.update(width=job["size"], height=job["size"])
    times, first = [], None
    for n, (prompt, seed) in enumerate(job["draws"], start=1):
        begun = time.perf_counter()
        generator = torch.Generator("cpu").manual_seed(seed)
        image = pipe(prompt=prompt, generator=generator, **knobs).images[0]
        image.save(out / f"{n:02d}.png")
        times.append(time.perf_counter() - begun)
        if first is None:
            first = time.time() - started
    batch_times = []
    draws = job["draws"]
    for start in range(0, len(draws) - len(draws) % 4, 4):
        group = draws[start : start + 4]
        begun = time.perf_counter()
        generators = [torch.Generator("cpu").manual_seed(seed) for _, seed in group]
        images = pipe(prompt=[p for p, _ in group], generator=generators, **knobs).images
        for k, image in enumerate(images):
            image.save(out / f"batch-{start + k:02d}.png")
        batch_times.append((time.perf_counter() - begun) / len(group))
    return {
        "per_image": statistics.median(times[1:] or times),
        "batch_per_image": statistics.median(batch_times) if batch_times else None,
        "first_image": first,
        "peak_gib": _peak_gib(),
    }


def child_refineloop(job: dict[str, Any], started: float) -> dict[str, Any]:
    """`refineloop run` in this process; the figures come back from its trace."""
    sys.path.insert(0, str(ROOT))
    from refineloop.cli.main import main

    code = main(job["argv"])
    if code != 0:
        raise SystemExit(f"refineloop exited with {code}")
    trace = [json.loads(line) for line in (Path(job["out"]) / "trace.jsonl").read_text().splitlines()]
    rounds = [r for r in trace if r.get("kind") == "image"]
    stamps = [r["time"] for r in rounds]
    made = sum(len(r["images"]) for r in rounds)
    steady = (stamps[-1] - stamps[0]) / max(1, made - len(rounds[0]["images"])) if len(stamps) > 1 else None
    return {
        "per_image": steady,
        "first_image": stamps[0] - started if stamps else None,
        "peak_gib": _peak_gib(),
        "draws": [(r["prompt"], seed) for r in rounds for seed in r["seeds"]],
        "images": made,
    }


def run_child(mode: str, job: dict[str, Any]) -> dict[str, Any]:
    """One side in a fresh process; its figures as a dict."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(job, fh)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--job", fh.name], capture_output=True, text=True, env=env
    )
    os.unlink(fh.name)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- report


def bench(kind: str, folder: Path, work: Path, args: argparse.Namespace, cuda: bool) -> list[tuple[str, str]]:
    size = args.size if cuda else None
    common = ["--image-model", str(folder), "--eval-model", "demo", "--seed", "7", "--steps", str(args.steps)]
    common += ["--guidance", str(args.guidance), "--goal", "a single hotdog, as visually hot as possible"]
    common += ["--strategy", "climbing", "--patience", str(args.images)]
    if size:
        common += ["--width", str(size), "--height", str(size)]

    def refine(name: str, *extra: str) -> dict[str, Any]:
        out = work / f"{kind}-{name}"
        argv = ["run", *common, *extra, "--output-dir", str(out)]
        return run_child("refineloop", {"argv": argv, "out": str(out)})

    ours = refine("one", "--max-iterations", str(args.images))
    job = {"folder": str(folder), "steps": args.steps, "guidance": args.guidance, "size": size, "draws": ours["draws"]}
    bare = run_child("bare", {**job, "out": str(work / f"{kind}-bare")})
    four = refine("four", "--max-iterations", str(max(2, args.images // 4)), "--candidates", "4")
    rows = [
        ("bare diffusers, per image", f"{bare['per_image']:.3f} s"),
        ("refineloop, per image (climbing)", f"{ours['per_image']:.3f} s"),
        ("ratio (target <= 1.03)", f"{ours['per_image'] / bare['per_image']:.3f} x"),
        ("time outside the models, per image", f"{(ours['per_image'] - bare['per_image']) * 1000:.0f} ms"),
    ]
    if bare["batch_per_image"]:
        rows += [
            ("bare batch of 4, per image", f"{bare['batch_per_image']:.3f} s"),
            ("refineloop --candidates 4, per image", f"{four['per_image']:.3f} s"),
            ("ratio (target <= 1.05)", f"{four['per_image'] / bare['batch_per_image']:.3f} x"),
        ]
    rows += [
        ("first image from process start: bare", f"{bare['first_image']:.1f} s"),
        ("first image from process start: refineloop", f"{ours['first_image']:.1f} s  (target <= bare + 1 s)"),
    ]
    if cuda:
        rows += [("peak GPU memory: bare / refineloop", f"{bare['peak_gib']:.1f} / {ours['peak_gib']:.1f} GiB")]
    if args.compile:
        compiled = refine("compiled", "--max-iterations", str(args.images), "--compile")
        rows += [
            ("--compile: first image (compiles)", f"{compiled['first_image']:.1f} s"),
            ("--compile: per image", f"{compiled['per_image']:.3f} s"),
            ("--compile: steady-state speed-up", f"{ours['per_image'] / compiled['per_image']:.2f} x"),
            (
                "--compile: compile seconds (first image, extra)",
                f"{compiled['first_image'] - ours['first_image']:.1f} s",
            ),
        ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("sdxl", "sd3", "both"), default="both")
    parser.add_argument("--size", type=int, default=1024, help="image side on CUDA (tiny pipelines use 64 px)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--images", type=int, default=6, help="images per run (the first is warm-up)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        started = time.time()
        job = json.loads(Path(args.job).read_text())
        figures = child_bare(job, started) if args.child == "bare" else child_refineloop(job, started)
        print(json.dumps(figures))
        return 0

    import torch

    cuda = torch.cuda.is_available()
    where = torch.cuda.get_device_name(0) if cuda else "CPU (no CUDA: tiny pipelines at 64 px; wiring, not speed)"
    print(f"device: {where}; {args.steps} steps, guidance {args.guidance}, {args.images} images per run")
    kinds = ["sdxl", "sd3"] if args.model == "both" else [args.model]
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for kind in kinds:
            began = time.perf_counter()
            folder = build(kind, Path(tmp) / f"{kind}-pipeline", cuda)
            shaped = {"sdxl": "SDXL", "sd3": "SD3.5-medium"}[kind]
            label = (
                f"{shaped}-shaped" if cuda else f"tiny {'SD' if kind == 'sdxl' else 'SD3'} (standing in for {shaped})"
            )
            print(f"\n{label} pipeline built and saved in {time.perf_counter() - began:.1f} s")
            for name, value in bench(kind, folder, Path(tmp), args, cuda):
                print(f"  {name:<48} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
