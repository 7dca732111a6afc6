"""The graph's state: builtins only, so SQLite, Postgres and the Studio API all round-trip it.

Images live on disk in the run folder; state holds their paths as `str`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, Self

from langgraph.channels.delta import DeltaChannel
from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict

Verdict = Literal["DONE", "CONTINUE", "unknown"]


def walk_lines(finish: list[dict[str, Any]] | None) -> list[str]:
    """What summary.txt and the progress say about a walk's drafts drawn in full at the stop (--draft-walk)."""
    if not finish:
        return []
    drawn = ", ".join(f"#{f['iteration']} from draft #{f['draft']} ({score_words(f['score'])}/10)" for f in finish)
    return [f"drawn in full at the stop: {drawn}"]


def score_words(score: float | None) -> str:
    """A score as every line and prompt shows it: 8, 7.33 (at most two decimals), or ? when the judge gave none."""
    return "?" if score is None else f"{round(score, 2):g}"


def as_verdict(text: str) -> Verdict:
    """`text` as a stored verdict: DONE or CONTINUE when it says so, else unknown."""
    return "DONE" if text == "DONE" else "CONTINUE" if text == "CONTINUE" else "unknown"


Status = Literal["running", "done", "failed"]


class Candidate(TypedDict, total=False):
    """One generated image and what the critic said of it."""

    iteration: int
    """1-based index of the image; its file is `NN.png` in the run folder."""
    path: str
    """Absolute path of the image file."""
    prompt: str
    """The exact prompt sent to the image model (anchor included)."""
    idea: str
    """The free-form description this image was drawn from."""
    seed: int
    """Diffusion seed, derived from the run seed and the iteration, so the image can be remade."""
    strength: float | None
    """img2img strength used, or None for text-to-image."""
    init_image: str | None
    """Image this one started from (img2img), or None."""
    score: float | None
    """Critic score 1-10 (the mean of the samples with --judge-samples), or None when no reply parsed."""
    samples: list[float]
    """Every judge score this image got (more than one with --judge-samples, or after a re-score); a checklist
    look's score is a fraction."""
    pairwise: dict[str, Any] | None
    """Head-to-head result with --judge pairwise: {"against": image, "wins": 0-2, "ties": 0-2
    (orders that named no winner), "flipped": bool}."""
    verdict: Verdict
    """DONE (cannot get better), CONTINUE, or unknown (unparseable reply)."""
    draft: dict[str, Any]
    """With drafts: the draft this image was drawn in full from ({"path", "score", "steps", "width", "height"};
    a walk's also its "iteration")."""
    walk_draft: dict[str, Any]
    """With --draft-walk: this image is one of the walk's drafts, drawn with these {"steps", "width", "height"}
    from this "base_prompt" (absent on an image drawn in full)."""
    critique: str
    """What the critic saw."""
    next_idea: str
    """The critic's description of how the next image should look."""
    answers: list[float]
    """With --judge checklist: the chance of a yes to each question of the run's checklist, in order."""
    unmet: list[str]
    """With --judge checklist: the questions this image fails, most weighty first (the proposer's to-do list)."""
    confirm: dict[str, Any]
    """The second look a DONE got before it could stop the run (refineloop.judges.confirm)."""
    audit_score: float | None
    """With --audit-every: the auditor's own score of this image."""


def extend_history(history: list[HistoryEntry] | None, writes: Sequence[list[HistoryEntry]]) -> list[HistoryEntry]:
    """The history channel's reducer: append each write's entries in order (the same result however the writes
    are batched, as a delta channel needs when it replays them)."""
    merged = list(history or [])
    for entries in writes:
        merged.extend(entries)
    return merged


def latest(value: dict[str, Any] | None, writes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The reducer of a value that is set, not accumulated: the last write wins (however writes are batched)."""
    return writes[-1] if writes else (value or {})


def last_write(value: Any, writes: Sequence[Any]) -> Any:
    """The reducer of a `SetValue`: the last write wins, whatever its type (None included)."""
    return writes[-1] if writes else value


#: How many failed ideas the proposer is shown (the newest); older ones fall off.
FAILED_IDEAS_KEPT = 12


def recent_failures(ideas: list[str] | None, writes: Sequence[list[str]]) -> list[str]:
    """The reducer of `failed_ideas`: each write appends its ideas, an empty write clears the list, and only
    the newest FAILED_IDEAS_KEPT are kept. Keeping the tail after each write gives the same list as after all
    of them, so writes replayed in any batching agree."""
    kept = list(ideas or [])
    for added in writes:
        kept = [*kept, *added][-FAILED_IDEAS_KEPT:] if added else []
    return kept


# `DeltaChannel.checkpoint()` always answers LangGraph's "nothing stored" sentinel; this is how to recognise it
# without importing LangGraph's internals.
_NOTHING = DeltaChannel(last_write).checkpoint()


class SetValue(DeltaChannel[Any]):
    """A channel for a value that is set, not accumulated (an image record, the idea, the prompt), saved only in
    the step that writes it, instead of in every checkpoint after (SQLite stores every other channel's value at
    every step). A plain value left by a checkpoint written before the channel was one (a `LastValue` then)
    is read as it is, so old runs resume; a channel never written stays absent, as a `LastValue` does."""

    def __init__(
        self,
        reducer: Callable[[Any, Sequence[Any]], Any] = last_write,
        typ: Any = None,
        *,
        snapshot_frequency: int = 10,
    ) -> None:
        super().__init__(reducer, typ, snapshot_frequency=snapshot_frequency)

    def from_checkpoint(self, checkpoint: Any) -> Self:
        if checkpoint is _NOTHING:
            return self._empty()
        if checkpoint is None:  # a LastValue that held None wrote it as a plain value
            channel = self._empty()
            channel.value = None
            return channel
        return super().from_checkpoint(checkpoint)

    def replay_writes(self, writes: Sequence[Any]) -> None:
        if writes and self.value is _NOTHING:  # no snapshot before them: the writes start from nothing
            self.value = None
        super().replay_writes(writes)

    def update(self, values: Sequence[Any]) -> bool:
        if not values:
            return False
        self.value = self.reducer(None if self.value is _NOTHING else self.value, list(values))
        return True

    def _empty(self) -> Self:
        channel = self.__class__(self.reducer, self.typ, snapshot_frequency=self.snapshot_frequency)
        channel.key = self.key
        return channel


class HistoryEntry(TypedDict, total=False):
    """A small per-iteration record."""

    iteration: int
    """The image this entry is about."""
    score: float | None
    """Its score."""
    verdict: Verdict
    """Its verdict."""
    decision: str
    """accepted, rejected, sideways (climbing onto an image level with the best) or accepted-worse (annealing's
    downhill move)."""
    best_iteration: int | None
    """Which image was best after this decision."""
    best_score: float | None
    """The best score after this decision."""
    temperature: float | None
    """Annealing temperature at this step, if any."""
    draw: float | None
    """Annealing's seeded uniform draw, when it decided a downhill move."""
    round: int
    """With drafts: the round this image was drawn in (rounds that ended at their drafts have no entry)."""


def add_counts(left: dict[str, float] | None, right: dict[str, float] | None) -> dict[str, float]:
    """Counters from two places added up (a missing counter counts 0)."""
    total = dict(left or {})
    for key, value in (right or {}).items():
        total[key] = total.get(key, 0) + value
    return total


def add_all_counts(total: dict[str, float] | None, writes: Sequence[dict[str, float]]) -> dict[str, float]:
    """The reducer of `judge_stats`: the counters of every write add up (in any batching, the same sums)."""
    summed = dict(total or {})
    for counts in writes:
        summed = add_counts(summed, counts)
    return summed


# Field docstrings become the descriptions of Studio's input form.
@with_config(ConfigDict(use_attribute_docstrings=True))
class RunInput(TypedDict, total=False):
    """What a run starts from: the graph's input (Studio's input form). Every knob is in the context form
    (refineloop.settings.RunSettings); the setup node builds the first state from these and that form."""

    goal: str
    """The image to make, in one sentence (e.g. `a cosy cabin in snow`); when given it replaces the goal and
    task of the settings. Empty: the settings' goal or task."""
    settings: dict[str, Any]
    """The run's settings (RunSettings fields) as a dict, in place of the context form; the refineloop CLI
    hands in the settings it resolved. Empty: the context form."""
    task: dict[str, Any]
    """A task already resolved (subject, start prompt, negative prompt, criteria, ...) as a dict, which the
    refineloop CLI hands in; empty: the settings' task or goal is resolved."""


class RefineState(TypedDict, total=False):
    """Everything the loop needs to continue after a crash.

    SQLite stores every plain channel's value at every step (several per image), so whatever is larger than a
    number or grows with the run is a delta channel, saved in the step that writes it: the history, the image
    records, the idea and prompt, the failed ideas, the checklist and the judge's counters. What a checkpoint
    carries is then the same at image 1000 as at image 10. (Each delta channel adds its counters to every
    checkpoint's metadata, so what is written only at the stop, the final pick and the audit, stays plain.)"""

    settings: Annotated[dict[str, Any], DeltaChannel(latest)]
    """RunSettings as a dict (runtime context is not checkpointed, so knobs live here). Written once, so a
    delta channel keeps it out of every later checkpoint."""
    task: Annotated[dict[str, Any], DeltaChannel(latest)]
    """The resolved Task as a dict: subject anchor, negative prompt, judging criteria, escalation."""
    run_dir: str
    """Folder holding the images, trace and artifacts of this run."""
    iteration: int
    """How many images have been made so far."""
    idea: Annotated[str, SetValue()]
    """The free-form description the next image should follow."""
    prompt: Annotated[str, SetValue()]
    """The idea condensed to the image model's budget (without the subject anchor)."""
    candidate: Annotated[Candidate | None, SetValue()]
    """The newest image (the best-judged of its round), waiting for evaluation and acceptance."""
    batch: Annotated[list[Candidate], SetValue()]
    """Every image of the current round (more than one with --candidates)."""
    drafts: Annotated[list[Candidate], SetValue()]
    """With --draft-steps/--draft-size: the round's drafts waiting to be judged (empty once they are)."""
    draft_winner: Annotated[Candidate | None, SetValue()]
    """With drafts: the round's best draft, which reached the best's score, waiting to be drawn in full."""
    draft_missed: bool
    """With drafts: whether the round just judged ended at its drafts (none reached the best's score: a miss)."""
    draft_rounds: Annotated[int, operator.add]
    """With drafts: rounds drawn so far (a round whose drafts all fall short makes no image, yet is a round)."""
    current: Annotated[Candidate | None, SetValue()]
    """Where the walk stands (annealing and greedy may hold a worse image than best)."""
    best: Annotated[Candidate | None, SetValue()]
    """The highest-scored image so far; becomes best.png."""
    failed_ideas: Annotated[list[str], SetValue(recent_failures)]
    """Ideas whose images were rejected, handed to the proposer so it tries something else: the newest
    FAILED_IDEAS_KEPT. A write appends (an empty one clears), so a checkpoint keeps one idea, not the list."""
    misses: int
    """Rejections in a row since the last new best (climbing and img2img stop at patience)."""
    decision: str
    """The last acceptance decision: accepted, rejected, sideways or accepted-worse."""
    status: Status
    """running until the stop node finishes; done afterwards (an empty `next` is not proof)."""
    stop_reason: str
    """Why the run stopped, in words."""
    history: Annotated[list[HistoryEntry], DeltaChannel(extend_history)]
    """One small entry per round, appended by the accept node. Checkpoints keep only each round's new entry
    (a delta channel, with a full snapshot every 100 rounds), so they grow with the run, not with its square."""
    started_at: float
    """Unix time the run began, for elapsed-time display."""
    critic_calls: Annotated[int, operator.add]
    """Critic model calls so far (judge samples and retries, comparisons, proposals, summaries)."""
    seconds: Annotated[float, operator.add]
    """Working time so far, summed over the model-calling nodes (a resume does not count the pause)."""
    comparisons: Annotated[int, operator.add]
    """Pairwise comparisons made (each is two calls, one per image order)."""
    order_flips: Annotated[int, operator.add]
    """Comparisons whose two orders disagreed: the judge's position bias, reported in summary.txt."""
    prompt_style: str
    """How the condense step writes prompts in this run (tags or sentences: the task's choice, else the image
    model's), recorded by summarize so summary.txt can show which instructions ran."""
    checklist: Annotated[list[dict[str, Any]], SetValue()]
    """With --judge checklist: the run's weighted yes/no questions ({"question", "weight"}), written once by the
    critic (or taken from the task's `checklist`), editable at --review."""
    judge_stats: Annotated[dict[str, float], DeltaChannel(add_all_counts)]
    """How the judge behaved, counted in passing (sample spread, duel flips and ties, score-duel agreement);
    refineloop.judges.measure turns it into lines of summary.txt and the report."""
    final_pick: dict[str, Any] | None
    """The final pick at the stop: the images that met again, their samples and duel points, the winner."""
    walk_finish: list[dict[str, Any]] | None
    """With --draft-walk: the full images the stop drew from the walk's best drafts, each {"iteration",
    "draft" (the draft's number), "score"} (refineloop.nodes.walk)."""
    audit: dict[str, Any] | None
    """With --audit-model: the independent critic's verdict on whether the run improved on its first image."""
