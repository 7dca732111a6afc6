"""report.html: one self-contained page per run folder, opened straight from disk (file://, no server).

The page shows the run's goal, strategy, status and stop reason, an inline SVG plot of every image's score
and the best score so far, then every image in iteration order with what the critic said of it. Images are
linked by relative name (`01.png`), so the folder can be moved or zipped whole. A few lines of inline script
(no libraries) record on `<body>` how many images decoded, which lets a headless browser prove the page
renders; the page reads the same without it.
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refineloop.files.safe_io import write_text_atomic
from refineloop.run_folder.best_rule import best_rule
from refineloop.run_folder.image_files import Sidecars, listed_images, read_sidecars
from refineloop.run_folder.init_picture import improvement

if TYPE_CHECKING:
    from refineloop.state import RefineState

REPORT_NAME = "report.html"
LIVE_REFRESH = 5
"""Seconds between reloads of the page of a running run: often enough to follow it, rare enough to read it."""

# Plot geometry (SVG user units; the SVG scales to the page width).
PLOT_W, PLOT_H = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 44, 16, 14, 40
SCORE, BEST = "#d9480f", "#e0a100"

CSS = """
:root { --ink: #1d1d1f; --muted: #6b6b70; --line: #e3e3e8; --bg: #f6f6f8; --best: #e0a100;
  --ok: #1a7f37; --no: #b42318; --worse: #b54708; --score: #d9480f; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; }
.panel { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px; }
.top { display: flex; gap: 20px; align-items: flex-start; flex-wrap: wrap; }
.top .facts { flex: 1 1 420px; }
.top figure { margin: 0; text-align: center; }
.top figure img { width: 200px; height: auto; border: 4px solid var(--best); border-radius: 8px; display: block; }
.top figcaption { font-size: 13px; color: var(--muted); margin-top: 4px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; margin: 12px 0 0; }
dt { color: var(--muted); }
dd { margin: 0; }
.files { margin-top: 10px; font-size: 13px; color: var(--muted); }
a { color: #0b57d0; }
svg { width: 100%; height: auto; display: block; }
svg text { font: 12px system-ui, "DejaVu Sans", sans-serif; fill: var(--muted); }
.legend { font-size: 13px; color: var(--muted); margin-top: 6px; }
.legend span { margin-right: 16px; white-space: nowrap; }
.key { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 5px; }
.card { display: flex; gap: 18px; background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 14px; margin-bottom: 14px; flex-wrap: wrap; }
.card.best { border: 3px solid var(--best); box-shadow: 0 0 0 4px rgba(224, 161, 0, .15); }
.card > a img { width: 256px; height: 256px; object-fit: contain; background: #222; border-radius: 6px;
  display: block; }
.card .text { flex: 1 1 360px; min-width: 0; }
.card h3 { margin: 0 0 8px; font-size: 16px; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
.score { font-size: 20px; font-weight: 700; }
.tag { font-size: 12px; font-weight: 600; padding: 2px 8px; border-radius: 999px; background: #eee; color: #333; }
.tag.accepted { background: #dcf5e3; color: var(--ok); }
.tag.rejected { background: #fde4e1; color: var(--no); }
.tag.sideways { background: #e8eefc; color: #2b4a8b; }
.tag.accepted-worse { background: #fdecd8; color: var(--worse); }
.tag.best { background: var(--best); color: #fff; }
.tag.DONE { background: #1d1d1f; color: #fff; }
.card p { margin: 6px 0; }
.label { color: var(--muted); font-size: 13px; display: block; }
.prompt { display: block; font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px;
  background: var(--bg); padding: 6px 8px; border-radius: 6px; overflow-wrap: anywhere; }
.kicker { color: var(--muted); font-size: 13px; text-transform: uppercase; letter-spacing: .06em; }
.meta { color: var(--muted); font-size: 13px; }
"""

# Counts what really rendered, for headless checks: decoded images with a size on screen, and plot points.
SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.offsetWidth > 0; });
  var plot = document.getElementById("score-plot");
  var box = plot ? plot.getBoundingClientRect() : { width: 0 };
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = ok.length;
  document.body.dataset.plotPoints = plot ? plot.querySelectorAll("[data-iteration]").length : 0;
  document.body.dataset.plotWidth = Math.round(box.width);
});
"""


def write_report(
    run_dir: str | Path, state: RefineState | dict[str, Any], *, live: bool = False, sidecars: Sidecars | None = None
) -> Path:
    """Write report.html in the run folder (atomically) and return its path.

    `live` (the accept nodes, after every judged image) makes the page reload itself every LIVE_REFRESH seconds,
    so a browser left open on it follows the run; the page written when the run stops (or is interrupted) has no
    reload, so it stays still once nothing changes. A live write costs one page of text (no collage, no best.png).
    `sidecars` are the run's records when the caller has read them already; else they are read here.
    """
    path = Path(run_dir) / REPORT_NAME
    page = report_html(str(run_dir), state, live=live, sidecars=sidecars)
    write_text_atomic(path, page)
    return path


#: The live report may take this share of a run's time at most: a page grows with the run (one card per image),
#: so rewriting it after every image would cost a long, fast run time in the square of its length.
LIVE_SHARE = 0.05
_last_live: dict[str, tuple[float, float]] = {}
"""run folder -> (when its live report was last written, what writing it cost), in this process."""


def refresh_live_report(run_dir: str | Path, state: RefineState | dict[str, Any]) -> bool:
    """Rewrite the live report after an image, unless that would spend more than LIVE_SHARE of the time since
    the last rewrite; True when it was written. With real models (seconds per image) that is every image; a
    run that makes images in milliseconds gets a fresh page every few of them. The page written at the stop is
    always complete."""
    key = str(run_dir)
    now = time.monotonic()
    last = _last_live.get(key)
    if last is not None and now - last[0] < last[1] / LIVE_SHARE:
        return False
    write_report(run_dir, state, live=True)
    done = time.monotonic()
    _last_live[key] = (done, done - now)
    return True


def _rows(run_dir: str, sidecars: Sidecars | None) -> list[dict[str, Any]]:
    """One row per image on disk, merged with its sidecar (an image without one still shows)."""
    if sidecars is None:
        sidecars = read_sidecars(run_dir)
    rows = []
    best_so_far: float | None = None
    for iteration, path in listed_images(run_dir):
        record = dict(sidecars.get(iteration, {}))
        score = record.get("score")
        score = score if isinstance(score, int | float) and not isinstance(score, bool) else None
        if score is not None:
            best_so_far = score if best_so_far is None else max(best_so_far, score)
        recorded_best = record.get("best_score")
        if isinstance(recorded_best, int | float) and not isinstance(recorded_best, bool):
            best_so_far = recorded_best
        rows.append({**record, "iteration": iteration, "file": path.name, "score": score, "best_so_far": best_so_far})
    return rows


def _fmt(value: Any) -> str:
    return "?" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def report_html(
    run_dir: str, state: RefineState | dict[str, Any], *, live: bool = False, sidecars: Sidecars | None = None
) -> str:
    """The whole page as a string; `live` adds the self-reload of a running run (see write_report)."""
    rows = _rows(run_dir, sidecars)
    settings = state.get("settings") or {}
    task = state.get("task") or {}
    best = state.get("best") or None
    best_iteration = best.get("iteration") if best else None
    if best_iteration is None and rows:
        best_iteration = rows[-1].get("best_iteration")
    best_row = next((r for r in rows if r["iteration"] == best_iteration), None)
    status = state.get("status") or "running"
    heading = task.get("goal") or Path(run_dir).name
    title = f"refineloop: {heading}"

    facts = [
        ("strategy", settings.get("strategy") or "?"),
        ("status", f"{status} (this page reloads every {LIVE_REFRESH} s until the run stops)" if live else status),
        ("stop reason", state.get("stop_reason") or "-"),
        ("images", str(len(rows))),
        ("best", f"image {best_iteration} scored {_fmt(best_row['score'])}/10" if best_row else "none yet"),
        ("best means", best_rule(settings, state.get("final_pick"))),
        *([("started from", started)] if (started := improvement(rows[0] if rows else None, best)) else []),
        ("models", f"{settings.get('image_model', '?')} / critic {settings.get('eval_model', '?')}"),
        ("seed", _fmt(settings.get("seed"))),
        ("folder", run_dir),
    ]
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in facts)
    files = " · ".join(
        f'<a href="{name}">{name}</a>'
        for name in ("best.png", "collage.png", "summary.txt", "trace.jsonl")
        if (Path(run_dir) / name).exists()
    )
    hero = ""
    if best_row:
        name = escape(best_row["file"])
        hero = (
            f'<figure><a href="{name}"><img src="{name}" alt="best image, #{best_iteration}"></a>'
            f"<figcaption>best: #{best_iteration}, {escape(_fmt(best_row['score']))}/10</figcaption></figure>"
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{LIVE_REFRESH}">' if live else "",
        f"<title>{escape(title)}</title><style>{CSS}</style></head>",
        "<body><main>",
        '<section class="panel top"><div class="facts">',
        f'<div class="kicker">refineloop run · {escape(Path(run_dir).name)}</div>',
        f"<h1>{escape(heading)}</h1><dl>{dl}</dl>",
        f'<div class="files">{files}</div></div>{hero}</section>',
        "<h2>Score per image</h2>",
        f'<section class="panel">{score_plot(rows, best_iteration)}',
        '<div class="legend"><span><i class="key" style="background:var(--score)"></i>score of each image</span>'
        '<span><i class="key" style="background:var(--best)"></i>best so far</span>'
        "<span>× score unknown (no parseable reply)</span></div></section>",
        judging_panel(state),
        "<h2>Images</h2>",
        *(_card(row, row["iteration"] == best_iteration) for row in rows),
        "" if rows else '<p class="panel">No images yet.</p>',
        f"</main><script>{SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _card(row: dict[str, Any], is_best: bool) -> str:
    iteration, name = row["iteration"], escape(row["file"])
    decision = row.get("decision") or "not judged"
    verdict = row.get("verdict") or "unknown"
    tags = [f'<span class="tag {escape(decision)}">{escape(decision)}</span>']
    if verdict == "DONE":
        tags.append('<span class="tag DONE">critic: DONE</span>')
    if is_best:
        tags.append('<span class="tag best">★ best</span>')
    meta = [f"seed {_fmt(row.get('seed'))}"]
    strength = row.get("strength")
    meta.append(f"img2img strength {strength:.2f}" if isinstance(strength, int | float) else "text-to-image")
    meta.append(f"verdict {verdict}")
    if row.get("temperature") is not None:
        meta.append(f"temperature {_fmt(row['temperature'])}")
    if row.get("draw") is not None:
        meta.append(f"draw {_fmt(row['draw'])}")
    if row.get("best_score") is not None:
        meta.append(f"best after this: #{_fmt(row.get('best_iteration'))} ({_fmt(row['best_score'])}/10)")
    duel = row.get("pairwise")
    if isinstance(duel, dict) and duel.get("against") is not None:
        meta.append(f"duel with #{_fmt(duel['against'])}: won {_fmt(duel.get('wins'))} of 2 orders")
    if row.get("first_score") is not None:
        meta.append(f"re-scored: first {_fmt(row['first_score'])}/10, now {_fmt(row['score'])}/10")
    meta += _draft_meta(row)
    meta += _judging_meta(row)
    text = [
        f'<h3>#{iteration} <span class="score">{escape(_fmt(row["score"]))}/10</span>{"".join(tags)}</h3>',
        f'<p><span class="label">critique</span>{escape(str(row.get("critique") or "-"))}</p>',
        f'<p><span class="label">next idea</span>{escape(str(row["next_idea"]))}</p>' if row.get("next_idea") else "",
        f'<p><span class="label">prompt sent</span><span class="prompt">{escape(str(row.get("prompt") or "-"))}'
        "</span></p>",
        f'<p class="meta">{escape("  ·  ".join(meta))}</p>',
    ]
    return (
        f'<article class="card{" best" if is_best else ""}" id="image-{iteration}">'
        f'<a href="{name}"><img src="{name}" alt="image {iteration}" width="256" height="256"></a>'
        f'<div class="text">{"".join(text)}</div></article>'
    )


def score_plot(rows: list[dict[str, Any]], best_iteration: int | None = None) -> str:
    """Inline SVG: score per image (gaps and × markers where unknown) and a step line of best so far.

    Every image has exactly one element carrying `data-iteration` (a circle, or a × group when unknown).
    """
    n = max(len(rows), 1)
    inner_w, inner_h = PLOT_W - LEFT - RIGHT, PLOT_H - TOP - BOTTOM

    def x(index: int) -> float:
        return LEFT + (inner_w / 2 if n == 1 else inner_w * index / (n - 1))

    def y(score: float) -> float:
        return TOP + inner_h * (10 - min(max(score, 1), 10)) / 9

    out = [
        f'<svg id="score-plot" viewBox="0 0 {PLOT_W} {PLOT_H}" role="img" '
        'aria-label="score of each image and best so far, on a 1 to 10 scale" xmlns="http://www.w3.org/2000/svg">'
    ]
    for score in range(1, 11):
        out.append(
            f'<line x1="{LEFT}" x2="{PLOT_W - RIGHT}" y1="{y(score):.1f}" y2="{y(score):.1f}" '
            f'stroke="{"#c9c9cf" if score in (1, 10) else "#ececf0"}"/>'
            f'<text x="{LEFT - 8}" y="{y(score) + 4:.1f}" text-anchor="end">{score}</text>'
        )
    step = max(1, round(n / 20))
    for index, row in enumerate(rows):
        if index % step == 0 or index == n - 1:
            out.append(
                f'<text x="{x(index):.1f}" y="{TOP + inner_h + 18}" text-anchor="middle">{row["iteration"]}</text>'
            )
    out.append(f'<text x="{LEFT + inner_w / 2:.1f}" y="{PLOT_H - 4}" text-anchor="middle">image</text>')

    # Best so far: a step line (holds level until the next improvement).
    best_points: list[str] = []
    level: float | None = None
    for index, row in enumerate(rows):
        if row["best_so_far"] is None:
            continue
        if level is not None:
            best_points.append(f"{x(index):.1f},{level:.1f}")
        level = y(row["best_so_far"])
        best_points.append(f"{x(index):.1f},{level:.1f}")
    if best_points:
        out.append(
            f'<polyline class="best-line" points="{" ".join(best_points)}" fill="none" stroke="{BEST}" '
            'stroke-width="2.5" stroke-dasharray="6 4"/>'
        )

    # Score: one polyline per run of known scores, so an unknown score leaves a gap.
    segment: list[str] = []
    segments: list[list[str]] = []
    for index, row in enumerate(rows):
        if row["score"] is None:
            segments.append(segment)
            segment = []
        else:
            segment.append(f"{x(index):.1f},{y(row['score']):.1f}")
    segments.append(segment)
    for seg in segments:
        if len(seg) > 1:
            out.append(
                f'<polyline class="score-line" points="{" ".join(seg)}" fill="none" stroke="{SCORE}" stroke-width="2"/>'
            )
    for index, row in enumerate(rows):
        it, score = row["iteration"], row["score"]
        if score is None:
            cx, cy = x(index), TOP + inner_h
            out.append(
                f'<g class="point unknown" data-iteration="{it}" data-score="unknown" stroke="#8a8a90" '
                f'stroke-width="2"><title>#{it}: score unknown</title>'
                f'<line x1="{cx - 5:.1f}" y1="{cy - 5:.1f}" x2="{cx + 5:.1f}" y2="{cy + 5:.1f}"/>'
                f'<line x1="{cx - 5:.1f}" y1="{cy + 5:.1f}" x2="{cx + 5:.1f}" y2="{cy - 5:.1f}"/></g>'
            )
            continue
        best = it == best_iteration
        out.append(
            f'<circle class="point{" best" if best else ""}" data-iteration="{it}" data-score="{_fmt(score)}" '
            f'cx="{x(index):.1f}" cy="{y(score):.1f}" r="{7 if best else 4.5}" fill="{SCORE}" '
            f'stroke="{BEST if best else "#fff"}" stroke-width="{3 if best else 1.5}">'
            f"<title>#{it}: {_fmt(score)}/10 ({escape(str(row.get('decision') or 'not judged'))})</title></circle>"
        )
    out.append("</svg>")
    return "".join(out)


def _draft_meta(row: dict[str, Any]) -> list[str]:
    """A card's notes on drafts: a walk's draft and how it was drawn (--draft-walk), or the draft an image was
    drawn in full from (screened drafts, or a walk's crowned draft)."""
    walked, drawn_from = row.get("walk_draft"), row.get("draft")
    if isinstance(walked, dict):
        steps = walked.get("steps")
        size = f"{walked['width']}x{walked['height']}" if walked.get("width") and walked.get("height") else None
        how = ", ".join(part for part in (f"{steps} steps" if steps else "", size or "") if part)
        return [f"a draft of the walk ({how})" if how else "a draft of the walk"]
    if isinstance(drawn_from, dict):
        number, path = drawn_from.get("iteration"), str(drawn_from.get("path") or "?")
        origin = f"#{number}" if number is not None else f"drafts/{Path(path).name}"
        return [f"drawn in full from draft {origin} ({_fmt(drawn_from.get('score'))}/10)"]
    return []


def _judging_meta(row: dict[str, Any]) -> list[str]:
    """A card's notes from the judges package: the DONE check, the final pick, the auditor's score."""
    notes = []
    confirm = row.get("confirm")
    if isinstance(confirm, dict):
        outcome = "upheld" if confirm.get("upheld") else "overturned"
        duel = confirm.get("duel")
        against = ""
        if isinstance(duel, dict):
            against = f", duel with #{_fmt(duel.get('b'))} won {_fmt(duel.get('wins'))} of 2"
        notes.append(f"DONE {outcome} by a second look ({_fmt(confirm.get('sample'))}/10{against})")
    pick = row.get("final_pick")
    if isinstance(pick, dict):
        notes.append(
            f"final pick: rank {_fmt(pick.get('rank'))}, duel points {_fmt(pick.get('points'))} of "
            f"{_fmt(pick.get('most'))}, fresh looks mean {_fmt(pick.get('mean'))}"
        )
    if row.get("audit_score") is not None:
        notes.append(f"the auditor scored it {_fmt(row['audit_score'])}/10")
    return notes


def judging_panel(state: RefineState | dict[str, Any]) -> str:
    """The final pick, the audit, the checklist and the judge's measured behaviour, when the run has any."""
    from refineloop.judges.audit import audit_lines
    from refineloop.judges.final_pick import pick_lines, pick_places
    from refineloop.judges.measure import measure_rows, rates

    parts = []
    pick = pick_lines(state.get("final_pick"))
    if pick:
        items = "".join(f"<li>{escape(place)}</li>" for place in pick_places(state.get("final_pick")))
        parts.append(f'<p id="final-pick"><b>{escape(pick[0])}</b></p>' + (f"<ol>{items}</ol>" if items else ""))
    audit = audit_lines(state.get("audit"))
    if audit:
        parts.append(f'<p id="audit">{"<br>".join(escape(line.strip()) for line in audit)}</p>')
    checklist = state.get("checklist") or []
    if checklist:
        items = "".join(f"<li>{escape(q['question'])} (weight {q['weight']:g})</li>" for q in checklist)
        parts.append(f'<p>Checklist every image was asked:</p><ol id="checklist">{items}</ol>')
    measured = rates(state.get("judge_stats") or {}, state.get("comparisons", 0), state.get("order_flips", 0))
    rows = measure_rows(measured)
    if rows:
        cells = "".join(
            f"<dt>{escape(label)}</dt><dd>{escape(value)} ({escape(basis)})</dd>" for label, value, basis in rows
        )
        parts.append(f'<p>The judge, measured in passing:</p><dl id="judge-measures">{cells}</dl>')
    if not parts:
        return ""
    return f'<h2>Judging</h2><section class="panel" id="judging">{"".join(parts)}</section>'
