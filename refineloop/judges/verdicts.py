"""Reading the judge: a JSON schema where the model takes one, a tolerant text parser everywhere.

Whatever a model says, the loop gets either a complete verdict or None (then it retries with a reminder,
and finally records an "unknown" verdict). Nothing here raises on model output, and nothing read here keeps a
control character or terminal escape (`clean_model_text`): a parser is where a reply's text enters the run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from refineloop.backends.chat.replies import JudgeReply
from refineloop.backends.chat.text_safety import clean_model_text


@dataclass(frozen=True)
class Verdict:
    """A parsed judge reply."""

    score: int
    verdict: Literal["DONE", "CONTINUE"]
    critique: str
    next_idea: str


_SCORE_LINE = re.compile(r"\bscore\b\s*[:=\-]?\s*\**\s*(\d{1,3}(?:\.\d+)?)\s*(?:/\s*10|out of 10)?", re.I)
_OUT_OF_TEN = re.compile(r"\b(\d{1,3}(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.I)
# A keyword opens a section at the start of a line, or anywhere when a colon follows it ("8/10. DONE: ...").
_KEYWORD = re.compile(
    r"^[^\w\n]*(DONE|CONTINUE|CRITIQUE|SCORE)\b[^\w\n]*|\b(DONE|CONTINUE|CRITIQUE|SCORE)\s*\**\s*:[*\s]*",
    re.I | re.M,
)


def _valid_score(raw: str) -> int | None:
    value = float(raw)
    return round(value) if 1 <= value <= 10 else None


def find_score(text: str) -> int | None:
    """The score from a 'SCORE: N' line, else from 'N/10'; None when absent or outside 1-10."""
    for pattern in (_SCORE_LINE, _OUT_OF_TEN):
        match = pattern.search(text)
        if match:
            return _valid_score(match.group(1))
    return None


def _sections(text: str) -> dict[str, str]:
    """Split the reply at DONE/CONTINUE/CRITIQUE/SCORE keywords that start a line."""
    sections: dict[str, str] = {}
    matches = list(_KEYWORD.finditer(text))
    ends = [m.start() for m in matches[1:]] + [len(text)]
    for match, end in zip(matches, ends, strict=True):
        key = (match.group(1) or match.group(2)).upper()
        sections.setdefault(key, text[match.end() : end].strip())
    return sections


def parse_judge_text(text: str) -> Verdict | None:
    """Parse a free-text judge reply; None when no valid score can be found.

    A reply holding both DONE and CONTINUE counts as CONTINUE when it offers a next idea: a critic
    that still describes an improvement has not shown the image is finished.
    """
    text = clean_model_text(text or "").strip()
    score = find_score(text)
    if score is None:
        return None
    sections = _sections(text)
    next_idea = sections.get("CONTINUE", "")
    if "CONTINUE" in sections and next_idea:
        verdict: Literal["DONE", "CONTINUE"] = "CONTINUE"
    elif "DONE" in sections:
        verdict = "DONE"
    else:
        verdict = "DONE" if score >= 10 else "CONTINUE"
    critique = sections.get("CRITIQUE") or sections.get("DONE") or _leftover_prose(text)
    return Verdict(score=score, verdict=verdict, critique=_one_line(critique), next_idea=_one_line(next_idea))


def from_structured(reply: JudgeReply) -> Verdict | None:
    """Accept a schema reply only when its score is in range."""
    if not 1 <= reply.score <= 10:
        return None
    idea = reply.next_idea.strip() if reply.verdict == "CONTINUE" else ""
    return Verdict(reply.score, reply.verdict, _one_line(reply.critique), _one_line(idea))


def parse_idea(text: str) -> str:
    """The idea from a proposer reply ('IDEA: ...'), or the whole reply when the keyword is missing."""
    text = clean_model_text(text or "")
    match = re.search(r"^\W*IDEA\W*\s*(.+)", text, re.I | re.M | re.S)
    return _one_line(match.group(1) if match else text)


_WINNER = re.compile(r"\bwinner\b\W*(A|B|TIE)\b", re.I)


def parse_winner(text: str) -> Literal["A", "B", "TIE"] | None:
    """The winner of a comparison ('WINNER: A'); None when the reply names none."""
    match = _WINNER.search(clean_model_text(text or ""))
    return match.group(1).upper() if match else None  # type: ignore[return-value]


def _leftover_prose(text: str) -> str:
    lines = [ln for ln in text.splitlines() if not _KEYWORD.match(ln) and not _SCORE_LINE.search(ln)]
    return " ".join(lines)


def _one_line(text: str) -> str:
    return " ".join(clean_model_text(text).replace("*", " ").split())
