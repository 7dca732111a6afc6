"""`demo`: an offline heuristic vision critic, written as a LangChain chat model. NOT a real model.

It reads the image it is sent (base64 content block), measures what a heat-minded eye would notice
(warm pixels, white-hot spots, light haze, contrast), adds seeded noise the way a real judge wobbles, and
answers in the same text format a real vision model is asked for. Because it is a chat model, every node
talks to it exactly as it talks to Ollama.

It recognises its roles by the format each prompt requests: `WINNER:` (pairwise comparison), `SCORE:`
(judge), `QUESTION:` (checklist writer), `Q1:` (checklist answers, with token log probabilities the way Ollama
returns them, so the P(yes) path runs offline too), `IDEA:` (proposer), and anything else (summarizer).
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import random
import re
import threading
import time
from typing import Any, cast

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image
from pydantic import PrivateAttr

from refineloop.backends.chat.invoke import call_kind, message_text

_CALLS_LOCK = threading.Lock()


def _image_of(message: BaseMessage) -> bytes | None:
    if isinstance(message.content, str):
        return None
    for block in message.content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "image" and block.get("base64"):
            return base64.b64decode(block["base64"])
        if block.get("type") == "image_url":
            url = block["image_url"]["url"] if isinstance(block["image_url"], dict) else block["image_url"]
            return base64.b64decode(url.split(",", 1)[1])
    return None


def _images_of(message: BaseMessage) -> list[bytes]:
    if isinstance(message.content, str):
        return []
    return [base64.b64decode(b["base64"]) for b in message.content if isinstance(b, dict) and b.get("base64")]


def heat_features(png: bytes) -> dict[str, float]:
    """Fractions of warm, white-hot and hazy pixels, and the mean warmth, on a 64 px thumbnail."""
    img = Image.open(io.BytesIO(png)).convert("RGB").resize((64, 64))
    pixels = cast("list[tuple[int, int, int]]", list(img.get_flattened_data()))
    n = len(pixels)
    warm = sum(r > 150 and r > 1.25 * g and r > 1.6 * b for r, g, b in pixels) / n
    hot = sum(r > 235 and g > 190 and b < 200 for r, g, b in pixels) / n
    haze = sum(min(r, g, b) > 190 and max(r, g, b) - min(r, g, b) < 30 for r, g, b in pixels) / n
    warmth = sum((r - b) for r, g, b in pixels) / (255 * n)
    return {"warm": warm, "hot": hot, "haze": haze, "warmth": warmth}


def heat_score(features: dict[str, float]) -> float:
    """A 1-10 reading of how hot the picture looks (before noise)."""
    raw = 2.2 * features["warm"] + 6.0 * features["hot"] + 1.2 * features["haze"] + 1.5 * max(0, features["warmth"])
    return 1.0 + 9.0 * min(1.0, raw / 5.0)


def _ladder(system: str) -> list[str]:
    """The escalation steps listed in the prompt under 'Ways to push further'."""
    match = re.search(r"Ways to push further[^\n]*\n((?:- .*\n?)+)", system)
    return [line[2:].strip() for line in match.group(1).splitlines()] if match else []


def _failed(system: str) -> list[str]:
    match = re.search(r"did NOT improve it[^\n]*\n((?:- .*\n?)+)", system)
    return [line[2:].strip() for line in match.group(1).splitlines()] if match else []


def _kind_from_words(system: str) -> str:
    """What a call made outside refineloop's critic calls asks (someone invoking the critic by hand), read from
    the answer format its instructions ask for; refineloop's own calls say it in their metadata."""
    for marker, kind in (("WINNER:", "compare"), ("SCORE:", "judge"), ("QUESTION:", "checklist-write")):
        if marker in system:
            return kind
    return "checklist" if "Q1:" in system else "propose" if "IDEA:" in system else "summarize"


class DemoCritic(BaseChatModel):
    """Heuristic judge, proposer and summarizer for the offline demo and tests."""

    seed: int = 0
    """Seeds the judge's noise and the proposer's choices."""
    temperature: float = 0.0
    """0 gives the steadiest proposals; higher values jump further along the escalation ladder."""
    noise: float = 0.8
    """Standard deviation, in score points, of the judge's wobble between images."""
    delay: float = 0.0
    """Seconds each call waits before answering, standing in for a slow model (`demo:delay=1`)."""
    _calls: dict[str, int] = PrivateAttr(default_factory=dict)
    """Warm judge calls per image, so each sample draws fresh noise (shared by temperature copies)."""

    @property
    def _llm_type(self) -> str:
        return "refineloop-demo-critic"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay:
            time.sleep(self.delay)
        system = "\n".join(message_text(m) for m in messages if m.type == "system")
        humans = [m for m in messages if m.type == "human"]
        # A retry appends a reminder after the message that carries the image, so look back for it.
        png = next((img for m in reversed(humans) if (img := _image_of(m)) is not None), None)
        kind = call_kind(run_manager) or _kind_from_words(system)
        if kind == "compare":
            text = self._compare([img for m in humans for img in _images_of(m)])
        elif kind == "judge":
            text = self._judge(system, png)
        elif kind == "checklist-write":
            text = self._write_checklist(system)
        elif kind == "checklist":
            return self._answer_checklist(message_text(humans[0]), png)
        elif kind == "propose":
            text = self._propose(system, message_text(humans[0]), png)
        else:
            text = self._summarize(system, message_text(humans[-1]))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _next_call(self, digest: str) -> int:
        """Count a warm call about this image (calls may arrive at once from several threads)."""
        with _CALLS_LOCK:
            self._calls[digest] = self._calls.get(digest, 0) + 1
            return self._calls[digest]

    def _rng(self, *parts: object) -> random.Random:
        digest = hashlib.sha256(repr((self.seed, *parts)).encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def _judge(self, system: str, png: bytes | None) -> str:
        if png is None:
            return "I cannot see any image in your message."
        ladder = _ladder(system) or ["more intense", "far more dramatic"]
        base = heat_score(heat_features(png))
        digest = hashlib.sha256(png).hexdigest()
        # A cold judge gives an image the same score every time; different images wobble around their heat.
        wobble = self._rng(digest).gauss(0, self.noise)
        if self.temperature > 0:
            # Warm sampling adds a fresh error per call, which averaging several samples can cancel.
            wobble = 0.5 * wobble + self._rng(digest, self._next_call(digest)).gauss(
                0, self.noise * self.temperature * 3
            )
        score = max(1, min(10, round(base + wobble)))
        step = min(len(ladder) - 1, int((score - 1) / 9 * len(ladder)))
        if score >= 9 and step == len(ladder) - 1:
            return f"SCORE: {score}\nCRITIQUE: Heat everywhere; it reads as {ladder[-1]}.\nDONE: nothing hotter fits."
        wanted = ", ".join(ladder[step : step + 2])
        return (
            f"SCORE: {score}\nCRITIQUE: I see heat at the level of '{ladder[step]}', no more.\n"
            f"CONTINUE: The same subject, now with {wanted}, dramatic lighting, intense and vivid."
        )

    def _write_checklist(self, system: str) -> str:
        """Questions from the criteria the prompt lists, the first ones weighing most."""
        match = re.search(r"What earns points:\n((?:- .*\n?)+)", system)
        criteria = [line[2:].strip() for line in match.group(1).splitlines()] if match else ["the goal"]
        lines = [f"QUESTION: Does the image show {c}? | WEIGHT: {3 if n == 0 else 2}" for n, c in enumerate(criteria)]
        lines.append("QUESTION: Does the image look hotter than anything a kitchen could make? | WEIGHT: 1")
        return "\n".join(lines)

    def _answer_checklist(self, human: str, png: bytes | None) -> ChatResult:
        """Answer each question by the heat it sees: question k of n asks for more heat than question k-1 (the
        demo cannot read the questions), with a per-image wobble; the reply carries each answer's log
        probabilities as `response_metadata["logprobs"]`, in Ollama's shape."""
        count = max(1, len(re.findall(r"^Q\d+\.", human, re.M)))
        heat = heat_score(heat_features(png)) if png else 1.0
        digest = hashlib.sha256(png or b"").hexdigest()
        rng = self._rng("checklist", digest)
        if self.temperature > 0:
            # A warm look wobbles afresh each time, like the judge's warm samples.
            rng = self._rng("checklist", digest, self._next_call(digest))
        lines, tokens = [], []
        for k in range(count):
            threshold = 2.0 + 7.0 * (k + 1) / (count + 1)
            chance = 1 / (1 + math.exp(-(heat + rng.gauss(0, self.noise * 0.5) - threshold) / 0.7))
            chance = min(0.999, max(0.001, chance))
            word = "yes" if chance >= 0.5 else "no"
            lines.append(f"Q{k + 1}: {word}")
            options = [{"token": "yes", "logprob": math.log(chance)}, {"token": "no", "logprob": math.log(1 - chance)}]
            chosen = options[0] if word == "yes" else options[1]
            tokens += [{"token": f"Q{k + 1}", "logprob": -0.01}, {"token": ":", "logprob": -0.01}]
            tokens.append({**chosen, "token": f" {word}", "top_logprobs": options})
        message = AIMessage(content="\n".join(lines), response_metadata={"logprobs": tokens})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _compare(self, images: list[bytes]) -> str:
        """Pick the hotter of two images, with the wobble of a real judge and a slight lean to the first."""
        if len(images) < 2:
            return "I need two images to compare."
        a, b = (heat_score(heat_features(png)) for png in images[:2])
        rng = self._rng("compare", hashlib.sha256(images[0] + images[1]).hexdigest())
        lean = a + 0.3 + rng.gauss(0, self.noise * 0.5) - (b + rng.gauss(0, self.noise * 0.5))
        return f"WINNER: {'A' if lean >= 0 else 'B'}\nWHY: it shows more heat."

    def _propose(self, system: str, human: str, png: bytes | None) -> str:
        ladder = _ladder(system) or ["more intense"]
        failed = " ".join(_failed(system)).lower()
        score = heat_score(heat_features(png)) if png else 1.0
        rng = self._rng("propose", human, failed)
        reach = 1 + int(round(rng.random() * self.temperature * 2))
        start = min(len(ladder) - 1, int((score - 1) / 9 * len(ladder)) + reach - 1)
        options = [s for s in ladder[start:] if s.lower() not in failed] or ladder[start:]
        choice = options[min(len(options) - 1, int(rng.random() * (1 + self.temperature * 2)))]
        return f"IDEA: The subject with {choice}, {ladder[max(0, start - 1)]}, bold warm light."

    def _summarize(self, system: str, human: str) -> str:
        match = re.search(r"at most (\d+) words", system)
        budget = int(match.group(1)) if match else 30
        idea = human.split("Description:", 1)[-1]
        filler = {"the", "a", "an", "now", "with", "of", "and", "same", "subject", "is", "that", "this"}
        words = [w for w in re.findall(r"[\w-]+|,", idea) if w.lower() not in filler]
        phrase = " ".join(words).replace(" ,", ",").strip(", ")
        return " ".join(phrase.split()[:budget]).rstrip(",")
