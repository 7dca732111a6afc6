"""The collage's thumbnails: kept when each PNG is written, used only while the file is still that one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

from refineloop.run_folder import thumbnails
from refineloop.run_folder.image_files import save_image
from tests.conftest import images_in, refineloop


def picture(colour: tuple[int, int, int], size: int = 320) -> Image.Image:
    image = Image.new("RGB", (size, size), colour)
    image.paste((255, 255, 255), (0, 0, size // 2, size // 3))  # not flat, so a wrong shrink would show
    return image


def test_a_kept_thumbnail_serves_the_collage_while_the_file_is_unchanged(tmp_path):
    path = tmp_path / "01.png"
    save_image(picture((200, 40, 10)), path)
    thumbnails.keep(path, picture((10, 40, 200)))  # not what the file holds: shows which one is used
    assert thumbnails.thumbnail(path).getpixel((150, 150)) == (10, 40, 200)


def test_a_file_written_again_is_shrunk_from_disk(tmp_path):
    path = tmp_path / "01.png"
    save_image(picture((200, 40, 10)), path)
    thumbnails.keep(path, picture((200, 40, 10)))
    save_image(picture((20, 160, 60)), path)  # same size and maybe the same second: a new inode all the same
    thumb = thumbnails.thumbnail(path)
    assert thumb.size == (thumbnails.THUMB, thumbnails.THUMB) and thumb.getpixel((150, 150)) == (20, 160, 60)


def test_past_the_budget_the_oldest_are_dropped_and_made_from_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(thumbnails, "BUDGET", 2 * thumbnails.THUMB * thumbnails.THUMB * 3)
    paths = [tmp_path / f"{n:02d}.png" for n in range(1, 4)]
    for n, path in enumerate(paths):
        save_image(picture((60 * n, 0, 0)), path)
        thumbnails.keep(path, picture((0, 0, 60 * n + 1)))  # a marker colour, unlike the file's
    assert thumbnails.thumbnail(paths[0]).getpixel((150, 150)) == (0, 0, 0)  # dropped: the file's own
    assert thumbnails.thumbnail(paths[2]).getpixel((150, 150)) == (0, 0, 121)  # kept


@pytest.mark.slow
def test_the_collage_shows_each_image_on_disk(tmp_path):
    done = refineloop(
        "demo", "--goal", "a quiet blue teapot", "--seed", "5", "--max-iterations", "5", "--output-dir", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "out"
    images = images_in(run)
    collage = Image.open(run / "collage.png").convert("RGB")
    cols = math.ceil(math.sqrt(len(images)))
    side = thumbnails.THUMB
    for index, name in enumerate(images):
        x, y = (index % cols) * side, (index // cols) * side
        with Image.open(Path(run) / name) as img:
            expected = img.convert("RGB").resize((side, side))
        # Below the badge and inside the best image's frame: the tile is the image, shrunk.
        box = (8, 40, side - 8, side - 8)
        tile = collage.crop((x + box[0], y + box[1], x + box[2], y + box[3]))
        assert tile.tobytes() == expected.crop(box).tobytes(), name
