"""Files in a run folder: images and their sidecars, best.png, summary.txt and collage.png.

Every write goes to a temporary file first and is renamed into place, so a crash leaves either the old
file or the new one, never half of one. File names depend only on the iteration, so a node re-run after
a crash overwrites its own output instead of adding a duplicate.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from refineloop.tools.safe_io import write_bytes_atomic, write_text_atomic, write_with

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


def save_image(image: Image.Image, path: Path) -> None:
    """Save a PNG atomically, never through a symbolic link."""
    write_with(path, lambda fh: image.save(fh, format="PNG"))


def save_json(data: dict[str, Any], path: Path) -> None:
    """Save JSON atomically, never through a symbolic link."""
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False))


def listed_images(run_dir: str) -> list[tuple[int, Path]]:
    """Every NN.png on disk, in iteration order (the collage scans files, not state, so a last image
    written just before a crash still shows)."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).iterdir() if (m := IMAGE_NAME.match(p.name))]
    return sorted(found)


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file in the run folder; None when it is missing, unreadable, not UTF-8, not JSON,
    or JSON that is not an object (a damaged or hand-edited sidecar is skipped, never a crash)."""
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def read_sidecars(run_dir: str) -> dict[int, dict[str, Any]]:
    """Sidecar records by iteration; unreadable ones are skipped."""
    records = {}
    for iteration, _ in listed_images(run_dir):
        if (record := read_record(sidecar_path(run_dir, iteration))) is not None:
            records[iteration] = record
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
    # best.png is a copy of exactly the image the state names, this folder's NN.png, the one summary.txt and
    # report.html name; with no readable best, no best.png is truer than an older best's copy.
    source = image_path(run_dir, best["iteration"]) if best else None
    if source is not None and not image_problem(str(source)):
        write_bytes_atomic(Path(run_dir) / "best.png", source.read_bytes())
        written.append(Path(run_dir) / "best.png")
    else:
        (Path(run_dir) / "best.png").unlink(missing_ok=True)
    summary = Path(run_dir) / "summary.txt"
    write_text_atomic(summary, summary_text(state))
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
    if best:
        score = best.get("score")
        lines += [
            "",
            f"best: image {best['iteration']} ({image_path(state['run_dir'], best['iteration']).name}) scored "
            f"{score if score is not None else '?'}/10, copied to best.png",
            f"  (best means {best_rule(settings)})",
        ]
    else:
        lines += ["", "best: none yet"]
    lines.append(f"critic calls: {state.get('critic_calls', 0)}   working time: {state.get('seconds', 0.0):.1f} s")
    comparisons = state.get("comparisons", 0)
    if comparisons:
        flips = state.get("order_flips", 0)
        lines.append(
            f"pairwise comparisons: {comparisons}, order flips: {flips} ({flips / comparisons:.0%} of comparisons "
            "gave a different winner when the two images swapped places)"
        )
    return "\n".join(lines) + "\n"


def best_rule(settings: dict[str, Any]) -> str:
    """What "best" means in this run, in words (README: the run folder, best.png)."""
    if settings.get("judge") == "pairwise" and settings.get("strategy") != "greedy":
        return (
            "the winner of the pairwise duels: an image takes over by beating the best in both orders, or by a "
            "strictly higher score where it met no duel with the best"
        )
    return "the highest-scored image, the earliest on a tie; re-scored images count with their revised score"


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
