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

from refineloop.run_folder.safe_io import write_bytes_atomic, write_text_atomic, write_with

if TYPE_CHECKING:
    from PIL.PngImagePlugin import PngInfo

    from refineloop.state import RefineState

IMAGE_NAME = re.compile(r"^(\d+)\.png$")
THUMB = 192


def image_path(run_dir: str, iteration: int) -> Path:
    """Where image `iteration` lives: 01.png, 02.png, ... 100.png."""
    return Path(run_dir) / f"{iteration:02d}.png"


def sidecar_path(run_dir: str, iteration: int) -> Path:
    """The JSON record beside an image: prompt, seed, score, critique, decision."""
    return Path(run_dir) / f"{iteration:02d}.json"


def save_image(image: Image.Image, path: Path, info: PngInfo | None = None) -> None:
    """Save a PNG atomically, never through a symbolic link; `info` holds its text chunks (provenance:
    refineloop.run_folder.provenance.png_info)."""
    write_with(path, lambda fh: image.save(fh, format="PNG", pnginfo=info))


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
    from refineloop.run_folder.report import write_report

    written.append(write_report(run_dir, state))
    return written


def summary_text(state: RefineState) -> str:
    """The constant inputs of the run, then what happened at every iteration."""
    from refineloop.prompts import judge_messages_text, summarizer_messages_text
    from refineloop.tasks import Task

    task = Task.from_dict(state["task"])
    settings = state["settings"]
    judge_system, _ = judge_messages_text(task, "<prompt>")
    style = state.get("prompt_style") or task.prompt_style or "tags"
    summarizer_system, _ = summarizer_messages_text("<idea>", 0, style, task.keep)
    if task.prompt_style:
        style_source = f"{style}, set by the task's prompt_style"
    elif state.get("prompt_style"):
        style_source = f"{style}, read from the image model's text encoder"
    else:
        style_source = "tags shown: no prompt was condensed yet, and the image model decides"
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
        *checklist_lines(state.get("checklist")),
        f"summarizer instructions (style: {style_source}; N = the model's word budget):",
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
            *second_look_lines(record),
        ]
    best = state.get("best")
    if best:
        score = best.get("score")
        lines += [
            "",
            f"best: image {best['iteration']} ({image_path(state['run_dir'], best['iteration']).name}) scored "
            f"{score if score is not None else '?'}/10, copied to best.png",
            f"  (best means {best_rule(settings, state.get('final_pick'))})",
        ]
    else:
        lines += ["", "best: none yet"]
    from refineloop.judges.audit import audit_lines
    from refineloop.judges.final_pick import pick_lines
    from refineloop.judges.measure import run_lines

    lines += [*pick_lines(state.get("final_pick")), *audit_lines(state.get("audit")), *run_lines(dict(state))]
    lines.append(f"critic calls: {state.get('critic_calls', 0)}   working time: {state.get('seconds', 0.0):.1f} s")
    comparisons = state.get("comparisons", 0)
    if comparisons:
        flips = state.get("order_flips", 0)
        lines.append(
            f"pairwise comparisons: {comparisons}, order flips: {flips} ({flips / comparisons:.0%} of comparisons "
            "gave a different winner when the two images swapped places)"
        )
    return "\n".join(lines) + "\n"


def best_rule(settings: dict[str, Any], pick: dict[str, Any] | None = None) -> str:
    """What "best" means in this run, in words (README: the run folder, best.png); `pick` is the run's final pick."""
    if settings.get("judge") == "pairwise" and settings.get("strategy") != "greedy":
        rule = (
            "the winner of the pairwise duels: an image takes over by beating the best in both orders, or by a "
            "strictly higher score where it met no duel with the best"
        )
    else:
        rule = "the highest-scored image, the earliest on a tie; re-scored images count with their revised score"
    if pick and pick.get("winner") is not None and not pick.get("skipped"):
        return (
            "the winner of the final pick, where the best and the highest-scored images met again (the most duel "
            f"wins in both orders, then the higher mean of fresh looks); before it, the best was {rule}"
        )
    return rule


def checklist_lines(checklist: list[dict[str, Any]] | None) -> list[str]:
    """The run's checklist (--judge checklist), as summary.txt lists it among the constant inputs."""
    if not checklist:
        return []
    lines = ["checklist (every image is asked these; its score is the weighted share of yes, on 0-10):"]
    lines += [f"  {n}. {q['question']} (weight {q['weight']:g})" for n, q in enumerate(checklist, start=1)]
    return [*lines, ""]


def second_look_lines(record: dict[str, Any]) -> list[str]:
    """An image's DONE check and part in the final pick, when it had them."""
    lines = []
    confirm = record.get("confirm")
    if isinstance(confirm, dict):
        duel = confirm.get("duel")
        against = f", duel with #{duel['b']}: won {duel['wins']} of 2 orders" if isinstance(duel, dict) else ""
        outcome = "upheld" if confirm.get("upheld") else "overturned, the run went on"
        second = f"{confirm.get('sample')}/10 {confirm.get('verdict', '?')}"
        lines.append(f"     DONE {outcome} (second look: {second}{against})")
    pick = record.get("final_pick")
    if isinstance(pick, dict):
        lines.append(
            f"     final pick: rank {pick.get('rank')}, duel points {pick.get('points')} of {pick.get('most')}, "
            f"fresh looks {pick.get('samples')}"
        )
    return lines


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
