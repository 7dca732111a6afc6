"""What collage.png costs on a run's tail, by the run's length: the sheet's size, the time to make and to write it.

    python bench/collage.py [--images 10,100,300,1000]

Each image is a 192 px picture with a gradient and some grain (a rendered picture's detail compresses about as
badly; a flat one would flatter the PNG encoder), written to a fresh folder and handed to the thumbnail cache as
the PNG writer thread does in a run; then the stop step's two calls are timed: `make_collage` and the save at
the level the stop uses.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from refineloop.outputs.artifacts import COLLAGE_LEVEL, make_collage  # noqa: E402
from refineloop.run_folder import thumbnails  # noqa: E402
from refineloop.run_folder.image_files import image_path, save_image  # noqa: E402


def grainy(n: int, rng: np.random.Generator) -> Image.Image:
    ramp = np.linspace(0, 200, 192, dtype=np.uint8)
    pixels = np.stack([np.add.outer(ramp, np.full(192, n % 50, dtype=np.uint8))] * 3, axis=-1)
    return Image.fromarray(pixels + rng.integers(0, 12, pixels.shape, dtype=np.uint8))


def measure(images: int) -> tuple[tuple[int, int], float, float, float]:
    """The sheet's size, seconds to make it and to write it, and its file's MB, for a folder of `images`."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for n in range(1, images + 1):
            picture, path = grainy(n, rng), image_path(folder, n)
            picture.save(path)
            thumbnails.keep(path, picture)
        started = time.perf_counter()
        sheet = make_collage(folder, best_iteration=1)
        made = time.perf_counter()
        assert sheet is not None
        out = Path(folder) / "collage.png"
        save_image(sheet, out, compress_level=COLLAGE_LEVEL)
        return sheet.size, made - started, time.perf_counter() - made, out.stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="10,100,300,1000", help="run lengths to measure, comma-separated")
    args = parser.parse_args()
    print(f"{'images':>7}{'sheet':>12}{'make':>9}{'write':>9}{'file':>9}")
    for images in (int(n) for n in args.images.split(",")):
        (width, height), make, write, mb = measure(images)
        print(f"{images:>7}{f'{width}x{height}':>12}{make:>8.3f}s{write:>8.3f}s{mb:>6.1f} MB")


if __name__ == "__main__":
    main()
