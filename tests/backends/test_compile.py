"""`--compile` through the CLI on the tiny pipeline: the denoiser goes through torch.compile and images come out.

The tests trace with torch.compile's `eager` backend (REFINELOOP_COMPILE_BACKEND): the same dynamo capture and
module wrapping as on a GPU, without a minute of kernel generation on this CPU. bench/gpu.py measures the real
thing (inductor) where a GPU is lent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import cli_env, images_in, refineloop

pytestmark = pytest.mark.slow


def test_compile_runs_the_tiny_pipeline_and_says_so(tmp_path: Path, tiny_sd_dir: Path) -> None:
    flags = ["run", "--image-model", str(tiny_sd_dir), "--eval-model", "demo", "--max-iterations", "2"]
    flags += ["--steps", "2", "--seed", "4", "--strategy", "greedy", "--goal", "a quiet blue teapot"]
    env = {**cli_env(), "REFINELOOP_COMPILE_BACKEND": "eager"}
    compiled = subprocess.run(
        [sys.executable, "-m", "refineloop", *flags, "--compile", "--output-dir", "c"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert "--compile: the denoiser compiles during the first image" in compiled.stdout
    assert images_in(tmp_path / "c") == ["01.png", "02.png"]
    with Image.open(tmp_path / "c" / "01.png") as first:
        assert first.size == (64, 64)


def test_compile_with_the_sketch_painter_is_one_line(tmp_path: Path) -> None:
    result = refineloop("demo", "--compile", "--output-dir", "x", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--compile needs a diffusers image model" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()
    assert os.environ.get("REFINELOOP_COMPILE_BACKEND") is None
