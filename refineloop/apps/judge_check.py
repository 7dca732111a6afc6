"""`refineloop judge-check`: measure the user's own critic on real images, and recommend settings from it.

Which judging option helps depends on the critic (in one simulated world pairwise duels helped, in another they
hurt), and nobody can see their critic's habits. So this command looks at images the critic will really judge:
a run folder's images (spread over the run), or a small fresh batch drawn from the task's start prompt and its
escalation steps. On each image it asks two cold looks (does a cold score repeat?) and `--samples` warm ones (how
far do they spread?); on `--pairs` pairs of images of close score it holds duels in both orders (position flips,
ties, and whether the duel agrees with the scores); with `--audit-model` the auditor scores every image too (do
the two critics rank pairs alike?); with --draft-steps or --draft-size each fresh image's draft gets a cold look
(do drafts rank the images as the images do? the premise of --draft-walk); one checklist look shows whether the
backend returns log probabilities. It prints a table and a recommendation with the measured reason, and writes
`judge-check.json` beside the images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TextIO

from refineloop.backends.chat import critic_images
from refineloop.backends.image.protocol import ImageModel, ImageRequest
from refineloop.backends.model_cache import ModelCache
from refineloop.errors import RunFolderError
from refineloop.files.safe_io import write_text_atomic
from refineloop.judges.audit import auditor_settings
from refineloop.judges.base import Budget, Judging
from refineloop.judges.check import CheckImage, measure_critic, planned_calls
from refineloop.judges.measure import measure_rows, rates
from refineloop.progress_events import critic_phase
from refineloop.round_request import draft_request
from refineloop.run_folder.image_files import image_path, listed_images, read_sidecars, save_image
from refineloop.settings import RunSettings
from refineloop.tasks import Task

REPORT = "judge-check.json"
DRAFTS = "drafts"
"""Where a fresh batch's drafts go, inside the check's folder."""

# Thresholds of the recommendation, in the measures' own units (refineloop.judges.measure).
STEADY_REPEAT = 0.9
"""A cold score that repeats at least this often is steady."""
STEADY_SPREAD = 0.5
"""Warm samples spreading less than this (std. dev., points) are steady."""
RELIABLE_FLIPS = 0.25
"""Duels flipping position at most this often decide on the images."""
RELIABLE_TIES = 0.25
"""Duels abstaining at most this often in an order decide often enough to lean on."""
AGREEING = 0.75
"""Scores that agree with decided duels at least this often rank like them."""
SQUEEZED = 0.4
"""Different images tying on their cold score this often: the scale is squeezed, and most new images tie the best."""


def images_of_run(run_dir: str, count: int) -> list[CheckImage]:
    """Up to `count` of a run's images, spread evenly from its first to its last (qualities spread too)."""
    found = listed_images(run_dir)
    if not found:
        raise RunFolderError(f"{run_dir} holds no images yet: check a run that made some, or leave RUN_DIR out")
    sidecars = read_sidecars(run_dir)
    if len(found) > count:
        step = (len(found) - 1) / (count - 1) if count > 1 else 0
        found = [found[round(n * step)] for n in range(count)]
    return [CheckImage(it, str(path), str(sidecars.get(it, {}).get("prompt") or "")) for it, path in found]


def fresh_images(models: ModelCache, settings: RunSettings, task: Task, folder: str, count: int) -> list[CheckImage]:
    """`count` new images from the task's start prompt and escalation steps, so their qualities differ (and each
    one's draft, with --draft-steps or --draft-size)."""
    from refineloop.schedules import derive_seed

    model = models.image_model(settings)
    steps = [task.start_prompt, *task.escalation]
    made = []
    for n in range(1, count + 1):
        idea = steps[round((n - 1) * (len(steps) - 1) / max(1, count - 1))]
        prompt = f"{task.subject}, {idea}"  # the anchor first, as a run composes its prompts
        request = ImageRequest(
            prompt=prompt,
            negative_prompt=task.negative_prompt if model.traits.negative_prompt else "",
            seeds=(derive_seed(settings.seed or 0, n),),
            width=settings.width,
            height=settings.height,
            steps=settings.steps,
            guidance=settings.guidance,
            scheduler=settings.scheduler,
        )
        (image,) = model.generate(request)
        path = image_path(folder, n)
        save_image(image, path)
        made.append(CheckImage(n, str(path), prompt, draft_path=draw_draft(model, request, settings, folder, n)))
    return made


def draw_draft(model: ImageModel, request: ImageRequest, settings: RunSettings, folder: str, n: int) -> str | None:
    """With --draft-steps or --draft-size: image `n`'s draft (its request, with the draft's steps and size) in
    drafts/, for the check to judge beside it; None without drafts."""
    if not settings.drafting:
        return None
    (draft,) = model.generate(draft_request(request, settings))
    path = Path(folder) / DRAFTS / image_path(folder, n).name
    path.parent.mkdir(exist_ok=True)
    save_image(draft, path)
    return str(path)


def recommend(
    measured: dict[str, tuple[float | None, int]], logprobs: bool | None, drafts: dict[str, int] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Settings for this critic, and the measured reason for each (the thresholds above; README, judge-check).
    `drafts`: the draft flags the check measured (`draft_steps`, `draft_size`), for the walk's line."""
    repeat, spread, ties_of_scores = (measured[k][0] for k in ("cold_repeat", "warm_spread", "score_ties"))
    flips, ties, agreement = (measured[k][0] for k in ("flip_rate", "tie_rate", "agreement"))
    noisy = (repeat is not None and repeat < STEADY_REPEAT) or (spread is not None and spread >= STEADY_SPREAD)
    reliable = flips is not None and flips <= RELIABLE_FLIPS and (ties or 0) <= RELIABLE_TIES
    squeezed = ties_of_scores is not None and ties_of_scores >= SQUEEZED
    steadiness = f"cold scores repeat {_pct(repeat)}, warm samples spread {_pts(spread)}"
    chosen: dict[str, Any] = {"final_pick": RunSettings().final_pick}
    reasons: list[str] = []
    if reliable and agreement is not None and agreement < AGREEING:
        chosen["judge"] = "pairwise"
        reasons.append(
            f"--judge pairwise: duels are consistent ({_pct(flips)} position flips, {_pct(ties)} ties) while scores "
            f"agree with them only {_pct(agreement)} of the time"
        )
    elif squeezed and logprobs:
        chosen["judge"] = "checklist"
        reasons.append(
            f"--judge checklist: {_pct(ties_of_scores)} of image pairs tie on their cold score, and this critic "
            "returns log probabilities, so checklist answers tell close images apart in fine steps"
        )
    else:
        chosen["judge"] = "score"
        why = "scores rank like the duels" if reliable else "duels flip or abstain too often to lean on"
        reasons.append(f"--judge score: {why} ({_pct(flips)} flips, {_pct(ties)} ties, agreement {_pct(agreement)})")
    chosen["judge_samples"] = 3 if noisy and chosen["judge"] == "score" else 1
    if chosen["judge_samples"] > 1:
        reasons.append(f"--judge-samples 3: the score is noisy ({steadiness}); averaging cancels part of it")
    elif chosen["judge"] == "score":
        reasons.append(f"--judge-samples 1: {steadiness}, so more samples buy little")
    if squeezed and chosen["judge"] == "checklist":
        chosen.update(strategy="annealing", patience=None)
        reasons.append(
            "--strategy annealing: checklist scores seldom tie, so climbing's sideways moves seldom happen; on a "
            "squeezed scale annealing's downhill steps find more than a climb does"
        )
    else:
        chosen.update(strategy="climbing", patience=10 if noisy or squeezed else 3)
        if squeezed:
            why = (
                f"{_pct(ties_of_scores)} of image pairs tie on their cold score: climbing walks on over ties "
                "(sideways moves, each a miss), so give it more misses"
            )
        elif noisy:
            why = "a noisy judge rejects good images by chance: give it more misses"
        else:
            why = "its misses are real"
        reasons.append(f"--strategy climbing --patience {chosen['patience']}: {why}")
    if drafts:
        chosen.update(walk_line(measured, drafts, reasons))
    pick = f"--final-pick {chosen['final_pick']} (the default)"
    if flips is not None and not reliable:
        reasons.append(f"{pick}: its duels flip or tie often here, so its fresh looks break more of its ties")
    else:
        reasons.append(f"{pick}: the top images meet again before best.png is crowned")
    return chosen, reasons


def walk_line(
    measured: dict[str, tuple[float | None, int]], drafts: dict[str, int], reasons: list[str]
) -> dict[str, Any]:
    """Whether to walk on drafts like the ones checked: only when they rank pairs of images as their full images
    do (AGREEING, the bar scores must clear against duels); its reason goes into `reasons`."""
    agreement, gap = measured["draft_agreement"][0], measured["draft_gap"][0]
    flags = draft_flags(drafts)
    seen = f"drafts ({flags}) rank {_pct(agreement)} of pairs like their images, {_pts(gap)} off them on average"
    if agreement is not None and agreement >= AGREEING:
        reasons.append(f"--draft-walk {flags}: {seen}, so a search on drafts sees what the images show, for less")
        return {"draft_walk": True, **drafts}
    reasons.append(f"no --draft-walk: {seen}; a walk on them would follow what the full images do not show")
    return {}


def draft_flags(drafts: dict[str, int]) -> str:
    """The draft settings as flags (those left at 0 are off)."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in drafts.items() if v)


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.0%}"


def _pts(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} points"


def command_line(settings: dict[str, Any]) -> str:
    """The recommendation as flags."""
    flags = [f"--judge {settings['judge']}", f"--strategy {settings['strategy']}"]
    if settings["judge_samples"] > 1:
        flags.insert(1, f"--judge-samples {settings['judge_samples']}")
    if settings.get("patience") is not None:
        flags.append(f"--patience {settings['patience']}")
    if settings.get("draft_walk"):
        drafts: dict[str, int] = {k: settings[k] for k in ("draft_steps", "draft_size") if k in settings}
        flags.append(f"--draft-walk {draft_flags(drafts)}")
    return " ".join(flags)


def judge_check(
    settings: RunSettings,
    task: Task,
    run_dir: str | None,
    *,
    named: bool = True,
    images: int,
    samples: int,
    pairs: int,
    models: ModelCache,
    out: TextIO,
) -> dict[str, Any]:
    """Run the check on `run_dir`'s images (the folder held, so a running run is refused), or on a fresh batch in a
    new folder, `settings.output_dir` (`named`: the user chose it, so it may exist if empty); print and write it.
    A fresh batch's folder is removed again when the check fails."""
    from refineloop.run_folder.folder import new_run_folder
    from refineloop.run_folder.lock import locked

    if run_dir is not None:
        with locked(run_dir):
            report = _check(
                settings, task, run_dir, None, images=images, samples=samples, pairs=pairs, models=models, out=out
            )
    else:
        with new_run_folder(settings.output_dir, named=named) as claim:
            report = _check(
                settings, task, claim.path, images, images=images, samples=samples, pairs=pairs, models=models, out=out
            )
            claim.keep()
    out.write(table(report))
    return report


def _check(
    settings: RunSettings,
    task: Task,
    folder: str,
    draw: int | None,
    *,
    images: int,
    samples: int,
    pairs: int,
    models: ModelCache,
    out: TextIO,
) -> dict[str, Any]:
    """The check in `folder`, on `draw` fresh images (None: the run's own), written to judge-check.json."""
    started = time.perf_counter()
    models.chat_model(settings)  # a missing or blind critic fails before anything is drawn
    if settings.audit_model:
        models.chat_model(auditor_settings(settings))
    if draw is not None:
        out.write(f"drawing {draw} images with {settings.image_model} into {folder}\n")
        checked = fresh_images(models, settings, task, folder, draw)
    else:
        checked = images_of_run(folder, images)
    what = "a fresh batch" if draw is not None else folder
    out.write(f"judge check of {settings.eval_model}: {len(checked)} images of {what}, {samples} warm samples each\n")
    j = Judging(models, settings, task, folder, Budget(None))
    # Outside the graph no node sets the critic's working size: the check shows its critic what a run would.
    token = critic_images.WORKING_SIZE.set(settings.judge_image_size)
    try:
        drafts = any(image.draft_path for image in checked)
        total = planned_calls(
            len(checked), samples=samples, pairs=pairs, audit=bool(settings.audit_model), drafts=drafts
        )
        with critic_phase("judge check", total):
            stats, extra = measure_critic(j, checked, samples=samples, pairs=pairs, out=out)
    finally:
        critic_images.WORKING_SIZE.reset(token)
    measured = rates(stats)
    drafted = {"draft_steps": settings.draft_steps, "draft_size": settings.draft_size} if drafts else None
    chosen, reasons = recommend(measured, extra.get("logprobs"), drafted)
    report = {
        "critic": settings.eval_model,
        "auditor": settings.audit_model or None,
        "folder": folder,
        "images": [
            {"iteration": i.iteration, "cold": i.cold, "warm": i.warm, "auditor": i.audit}
            | ({"draft": i.draft, "draft_path": i.draft_path} if i.draft_path else {})
            for i in checked
        ],
        "duels": extra["duels"],
        "logprobs": extra.get("logprobs"),
        "counters": stats,
        "measures": {key: {"value": value, "basis": n} for key, (value, n) in measured.items()},
        "recommendation": {**chosen, "flags": command_line(chosen), "reasons": reasons},
        "critic_calls": j.budget.used,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_text_atomic(Path(folder) / REPORT, json.dumps(report, indent=1, ensure_ascii=False))
    return report


def table(report: dict[str, Any]) -> str:
    """The check as a person reads it: the measures, then the recommendation and its reasons."""
    measured = {key: (m["value"], m["basis"]) for key, m in report["measures"].items()}
    rows = measure_rows(measured)
    logprobs = {True: "yes: checklist answers use P(yes)", False: "no: checklist answers are plain yes/no"}
    rows.append(("log probabilities", logprobs.get(report["logprobs"], "not measured"), "1 checklist look"))
    width = max(len(label) for label, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    lines = ["", f"{'measure':<{width}}  {'value':<{value_width}}  basis"]
    lines += [f"{label:<{width}}  {value:<{value_width}}  {basis}" for label, value, basis in rows]
    recommendation = report["recommendation"]
    lines += ["", f"recommended: {recommendation['flags']}", *(f"  {reason}" for reason in recommendation["reasons"])]
    lines += [f"{report['critic_calls']} critic calls; wrote {Path(report['folder']) / REPORT}", ""]
    return "\n".join(lines)
