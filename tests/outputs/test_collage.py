"""collage.png: every image of the run on one sheet, whose size stays bounded however long the run."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from refineloop.cli.run_commands import start_run
from refineloop.outputs.artifacts import SHEET_SIDE
from refineloop.run_folder.thumbnails import THUMB
from tests.conftest import images_in, judge_reply


def tile_of(collage: Image.Image, index: int, cols: int, side: int, box: tuple[int, int, int, int]) -> bytes:
    x, y = (index % cols) * side, (index // cols) * side
    return collage.crop((x + box[0], y + box[1], x + box[2], y + box[3])).tobytes()


def test_a_long_runs_collage_shrinks_its_tiles_to_stay_within_the_sheet(scripted, run_settings, quiet):
    # 121 images: eleven a row would be 2112 px at full thumbnails; each tile is 2048 // 11 = 186 px instead.
    cache, _ = scripted([judge_reply(3)] * 120 + [judge_reply(6)])
    outcome = start_run(run_settings(strategy="greedy", max_iterations=121, final_pick=0), models=cache, out=quiet)
    run = Path(outcome.run_dir)
    images = images_in(run)
    assert len(images) == 121
    cols, side = 11, SHEET_SIDE // 11
    assert side < THUMB
    collage = Image.open(run / "collage.png").convert("RGB")
    assert collage.size == (cols * side, cols * side)
    box = (8, 40, side - 8, side - 8)  # below the badge and inside the best image's frame
    for index in (0, 57, 120):
        with Image.open(run / images[index]) as img:
            expected = img.convert("RGB").resize((THUMB, THUMB)).resize((side, side), Image.Resampling.BOX)
        assert tile_of(collage, index, cols, side, box) == expected.crop(box).tobytes(), images[index]
    # The best (#121, the one scored 6) is framed in gold; the others are not.
    best = collage.getpixel((10 * side + 2, 10 * side + side // 2))
    other = collage.getpixel((9 * side + 2, 10 * side + side // 2))
    assert best == (255, 200, 0) and other != (255, 200, 0)


def test_the_stop_reads_each_sidecar_once_for_its_three_files(scripted, run_settings, quiet, monkeypatch):
    # summary.txt, collage.png and report.html each read every sidecar, so each was read three times (0.27 s at
    # image 1000). Written again from the run's final state, the files are the same, and each sidecar is read once.
    import refineloop.run_folder.image_files as image_files
    from refineloop.outputs.artifacts import write_artifacts

    cache, _ = scripted([judge_reply(n) for n in (4, 6, 5, 7)])
    outcome = start_run(run_settings(strategy="greedy", max_iterations=4, final_pick=0), models=cache, out=quiet)
    run = Path(outcome.run_dir)
    names = ("summary.txt", "collage.png", "report.html")
    before = {name: (run / name).read_bytes() for name in names}
    reads: list[str] = []
    original = image_files.read_record

    def counted(path: Path) -> dict | None:
        reads.append(path.name)
        return original(path)

    monkeypatch.setattr(image_files, "read_record", counted)
    write_artifacts(outcome.values)
    assert sorted(reads) == [f"{n:02d}.json" for n in range(1, 5)]
    assert {name: (run / name).read_bytes() for name in names} == before
