"""Files in a run folder: images and their sidecars, best.png, summary.txt and collage.png.

Every write goes to a temporary file first and is renamed into place, so a crash leaves either the old
file or the new one, never half of one. File names depend only on the iteration, so a node re-run after
a crash overwrites its own output instead of adding a duplicate.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

if TYPE_CHECKING:
    from refineloop.state import RefineState

IMAGE_NAME = re.compile(r"^(\d+)\.png$")
THUMB = 192


def image_path(run_dir: str, iteration: int) -> Path:
    """Where image `iteration` lives: 01.png, 02.png, ... 100.png."""
    return Path(run_dir) / f"{iteration:02d}.png"


def sidecar_path(run_dir: str, iteration: int) -> Path:
    """The JSON record beside an image: prompt, seed, score, critique, decision."""
    return Path(run_dir) / f"{iteration:02d}.json"


def _replace_with(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_image(image: Image.Image, path: Path) -> None:
    """Save a PNG atomically."""
    _replace_with(path, lambda tmp: image.save(tmp, format="PNG"))


def save_json(data: dict[str, Any], path: Path) -> None:
    """Save JSON atomically."""
    _replace_with(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), "utf-8"))


def listed_images(run_dir: str) -> list[tuple[int, Path]]:
    """Every NN.png on disk, in iteration order (the collage scans files, not state, so a last image
    written just before a crash still shows)."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).iterdir() if (m := IMAGE_NAME.match(p.name))]
    return sorted(found)


def read_sidecars(run_dir: str) -> dict[int, dict[str, Any]]:
    """Sidecar records by iteration; unreadable ones are skipped."""
    records = {}
    for iteration, _ in listed_images(run_dir):
        try:
            records[iteration] = json.loads(sidecar_path(run_dir, iteration).read_text("utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
    return records


def image_problem(path: str) -> str | None:
    """None when the image opens, else a short reason (missing, unreadable)."""
    try:
        with Image.open(path) as img:
            img.verify()
    except FileNotFoundError:
        return "is missing"
    except (OSError, UnidentifiedImageError, SyntaxError):
        return "is not a readable PNG"
    return None


def write_artifacts(state: RefineState) -> list[Path]:
    """Write best.png, summary.txt and collage.png from a state; return what was written."""
    run_dir = state["run_dir"]
    written = []
    best = state.get("best")
    if best and not image_problem(best["path"]):
        shutil.copyfile(best["path"], Path(run_dir) / ".best.png.tmp")
        os.replace(Path(run_dir) / ".best.png.tmp", Path(run_dir) / "best.png")
        written.append(Path(run_dir) / "best.png")
    summary = Path(run_dir) / "summary.txt"
    _replace_with(summary, lambda tmp: tmp.write_text(summary_text(state), "utf-8"))
    written.append(summary)
    collage = make_collage(run_dir, best["iteration"] if best else None)
    if collage is not None:
        save_image(collage, Path(run_dir) / "collage.png")
        written.append(Path(run_dir) / "collage.png")
    from refineloop.tools.report import write_report

    written.append(write_report(run_dir, state))
    return written


def summary_text(state: RefineState) -> str:
    """The constant inputs of the run, then what happened at every iteration."""
    from refineloop.prompts import judge_messages_text, summarizer_messages_text
    from refineloop.tasks import Task

    task = Task.from_dict(state["task"])
    settings = state["settings"]
    judge_system, _ = judge_messages_text(task, "<prompt>")
    summarizer_system, _ = summarizer_messages_text("<idea>", 0)
    lines = [
        f"refineloop run: {state['run_dir']}",
        f"goal: {task.goal}",
        f"status: {state.get('status', 'running')}"
        + (f" ({state['stop_reason']})" if state.get("stop_reason") else ""),
        "",
        "settings:",
        *(f"  {key} = {value}" for key, value in settings.items()),
        "",
        f"subject anchor: {task.subject}",
        f"negative prompt: {task.negative_prompt}",
        "",
        "judge instructions:",
        *(f"  {ln}" for ln in judge_system.splitlines()),
        "",
        "summarizer instructions (N = the model's word budget):",
        *(f"  {ln}" for ln in summarizer_system.replace(" 0 words", " N words").splitlines()),
        "",
        "iterations:",
    ]
    for iteration, record in sorted(read_sidecars(state["run_dir"]).items()):
        score = record.get("score")
        lines += [
            f"[{iteration:02d}] score {score if score is not None else '?'}/10  {record.get('verdict', '?')}  "
            f"{record.get('decision', 'not judged')}  seed {record.get('seed')}"
            + (f"  strength {record['strength']:.2f}" if record.get("strength") is not None else ""),
            f"     prompt:   {record.get('prompt', '')}",
            f"     critique: {record.get('critique', '')}",
            f"     next:     {record.get('next_idea', '')}",
        ]
    best = state.get("best")
    lines += ["", f"best: {best['path']} (score {best['score']}/10)" if best else "best: none yet"]
    lines.append(f"critic calls: {state.get('critic_calls', 0)}   working time: {state.get('seconds', 0.0):.1f} s")
    comparisons = state.get("comparisons", 0)
    if comparisons:
        flips = state.get("order_flips", 0)
        lines.append(
            f"pairwise comparisons: {comparisons}, order flips: {flips} ({flips / comparisons:.0%} of comparisons "
            "gave a different winner when the two images swapped places)"
        )
    return "\n".join(lines) + "\n"


def make_collage(run_dir: str, best_iteration: int | None) -> Image.Image | None:
    """A near-square grid of every image on disk, each badged with its iteration and score."""
    images = listed_images(run_dir)
    if not images:
        return None
    sidecars = read_sidecars(run_dir)
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    sheet = Image.new("RGB", (cols * THUMB, rows * THUMB), (24, 24, 24))
    font = ImageFont.load_default(size=18)
    for index, (iteration, path) in enumerate(images):
        x, y = (index % cols) * THUMB, (index // cols) * THUMB
        try:
            with Image.open(path) as img:
                sheet.paste(img.convert("RGB").resize((THUMB, THUMB)), (x, y))
        except (OSError, UnidentifiedImageError):
            continue
        score = sidecars.get(iteration, {}).get("score")
        label = f"#{iteration} {score if score is not None else '?'}/10"
        draw = ImageDraw.Draw(sheet)
        draw.rectangle((x + 4, y + 4, x + 14 + 11 * len(label), y + 30), fill=(0, 0, 0))
        draw.text((x + 9, y + 7), label, fill=(255, 255, 255), font=font)
        if iteration == best_iteration:
            draw.rectangle((x + 1, y + 1, x + THUMB - 2, y + THUMB - 2), outline=(255, 200, 0), width=4)
    return sheet
