"""The reply schemas sent to chat backends that hold a model to a JSON schema (Ollama's `format`, OpenAI's
`response_format`). They live beside the backends that send them; the judges read what comes back."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class JudgeReply(BaseModel):
    """The judge's answer, as a JSON schema for models with structured output."""

    score: int = Field(description="How well the image meets the goal, 1 (not at all) to 10 (cannot improve).")
    critique: str = Field(description="One or two sentences on what the image shows and what holds it back.")
    verdict: Literal["DONE", "CONTINUE"] = Field(description="DONE if no further step would improve it.")
    next_idea: str = Field(description="If CONTINUE: a vivid description of the whole next image, under 60 words.")
