"""A run's artifacts, made from a state: best.png, summary.txt, collage.png and report.html.

Every write goes to a temporary file first and is renamed into place, so a crash leaves either the old
file or the new one, never half of one. The images and sidecars they are made from are in
refineloop.run_folder.image_files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from refineloop.files.safe_io import write_bytes_atomic, write_text_atomic
from refineloop.outputs.report import write_report
from refineloop.run_folder.best_rule import best_rule
from refineloop.run_folder.image_files import (
    Sidecars,
    image_path,
    image_problem,
    listed_images,
    read_record,
    read_sidecars,
    save_image,
    sidecar_path,
)
from refineloop.run_folder.init_picture import improvement
from refineloop.run_folder.thumbnails import THUMB, thumbnail

if TYPE_CHECKING:
    from refineloop.state import RefineState


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
    # Read once for all three files: each read opens every image's sidecar (0.09 s apiece at image 1000).
    sidecars = read_sidecars(run_dir)
    summary = Path(run_dir) / "summary.txt"
    write_text_atomic(summary, summary_text(state, sidecars))
    written.append(summary)
    collage = make_collage(run_dir, best["iteration"] if best else None, sidecars)
    if collage is not None:
        save_image(collage, Path(run_dir) / "collage.png", compress_level=COLLAGE_LEVEL)
        written.append(Path(run_dir) / "collage.png")
    written.append(write_report(run_dir, state, sidecars=sidecars))
    return written


def summary_text(state: RefineState, sidecars: Sidecars | None = None) -> str:
    """The constant inputs of the run, then what happened at every iteration (from `sidecars` when the caller
    has read them, else from the run folder)."""
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
    if sidecars is None:
        sidecars = read_sidecars(state["run_dir"])
    for iteration, record in sorted(sidecars.items()):
        score = record.get("score")
        lines += [
            f"[{iteration:02d}] score {score if score is not None else '?'}/10  {record.get('verdict', '?')}  "
            f"{record.get('decision', 'not judged')}  "
            + (f"your picture {record.get('source')}" if iteration == 0 else f"seed {record.get('seed')}")
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
    if started := improvement(read_record(sidecar_path(state["run_dir"], 0)), best):
        lines.append(f"started from {started}")
    else:
        lines += ["", "best: none yet"]
    from refineloop.judges.audit import audit_lines
    from refineloop.judges.final_pick import pick_lines
    from refineloop.judges.measure import run_lines
    from refineloop.state import walk_lines

    lines += walk_lines(state.get("walk_finish"))
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


#: The PNG level collage.png is written at: a preview on the run's tail, which level 3 writes about 3x faster than
#: the default level for a file 20% larger.
COLLAGE_LEVEL = 3
#: The longest side of collage.png, in pixels. Up to a hundred images (ten tiles a row) keep their full
#: thumbnails; past that the tiles shrink so the sheet stays this size: unbounded, a 1000-image run's sheet was
#: 6144 px square, about 68 MB, and took 5 s to write on the run's tail (docs/bench.md).
SHEET_SIDE = 2048


def make_collage(run_dir: str, best_iteration: int | None, sidecars: Sidecars | None = None) -> Image.Image | None:
    """A near-square grid of every image on disk, each badged with its iteration and score (from `sidecars` when
    the caller has read them), at most SHEET_SIDE pixels a side."""
    images = listed_images(run_dir)
    if not images:
        return None
    if sidecars is None:
        sidecars = read_sidecars(run_dir)
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    tile = min(THUMB, SHEET_SIDE // cols)
    sheet = Image.new("RGB", (cols * tile, rows * tile), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=max(8, 18 * tile // THUMB))
    pad = max(2, 4 * tile // THUMB)  # the badge's margins and the best's frame, in step with the tile
    for index, (iteration, path) in enumerate(images):
        x, y = (index % cols) * tile, (index // cols) * tile
        try:
            picture = thumbnail(path)
        except (OSError, UnidentifiedImageError):
            continue
        if tile < THUMB:  # a box filter: a plain average of each tile's pixels, the cheapest shrink that stays sharp
            picture = picture.resize((tile, tile), Image.Resampling.BOX)
        sheet.paste(picture, (x, y))
        score = sidecars.get(iteration, {}).get("score")
        label = f"#{iteration} {score if score is not None else '?'}/10"
        _, _, right, bottom = draw.textbbox((x + 2 * pad, y + 2 * pad), label, font=font)
        draw.rectangle((x + pad, y + pad, right + pad, bottom + pad), fill=(0, 0, 0))
        draw.text((x + 2 * pad, y + 2 * pad), label, fill=(255, 255, 255), font=font)
        if iteration == best_iteration:
            draw.rectangle((x + 1, y + 1, x + tile - 2, y + tile - 2), outline=(255, 200, 0), width=pad)
    return sheet
