"""Prompts for the judge, the proposer and the summarizer, templated by the task.

The judge is asked for a fixed line format that a person can read and a regex can parse; where the model
takes a JSON schema, the same four fields come back as JSON instead.
"""

from __future__ import annotations

from refineloop.tasks import Task

JUDGE_SYSTEM = """You are a strict art critic judging one generated image against a goal.
Goal: {goal}
Score only this: {focus}.
What earns points:
{criteria}
Ways to push further, mildest first:
{escalation}

Look at the image and answer in exactly this format, nothing else:
SCORE: <a whole number from 1 (not at all) to 10 (cannot be pushed further)>
CRITIQUE: <one or two sentences on what you see and what holds it back>
then ONE of these two lines:
DONE: <why no further step would improve it>
CONTINUE: <a vivid description, under 60 words, of how the next image should look>
Describe the whole next image, not only the change, and keep the subject: {subject}."""

JUDGE_USER = "Judge this image. It was drawn from the prompt: {prompt}"

JUDGE_REMINDER = (
    "Your last reply could not be read. Reply again using the exact format: a line 'SCORE: N' with N from "
    "1 to 10, a line 'CRITIQUE: ...', then one line starting 'DONE:' or 'CONTINUE:'."
)

PROPOSER_SYSTEM = """You invent the next step of an image refinement search.
Goal: {goal}
Subject that must stay: {subject}
Ways to push further, mildest first:
{escalation}

These ideas were tried from this image and did NOT improve it; propose something clearly different:
{failed}

Answer with exactly one line:
IDEA: <a vivid description, under 60 words, of the whole next image>"""

PROPOSER_USER = "This is the image to improve (score {score}/10). It was drawn from: {prompt}"

COMPARE_SYSTEM = """You compare two generated images against a goal and pick the one that meets it better.
Goal: {goal}
Judge only this: {focus}.
The first image is A, the second is B. Ignore which came first; look only at what each shows.
Answer in exactly this format:
WINNER: <A or B, or TIE only if you truly cannot tell them apart>
WHY: <one sentence>"""

COMPARE_USER = "Image A was drawn from: {prompt_a}\nImage B was drawn from: {prompt_b}"

SUMMARIZER_SYSTEM = """You turn a description into a prompt for an image model that reads at most {words} words.
Keep the most visual details (subject, light, colour, effects, mood); drop filler and full sentences.
Do not mention the subject's framing; it is added separately.
Answer with the prompt only: comma-separated phrases, at most {words} words, no quotes, no preamble."""

SUMMARIZER_USER = "Description:\n{idea}"


def _bullets(items: tuple[str, ...] | list[str], empty: str) -> str:
    return "\n".join(f"- {item}" for item in items) if items else empty


def judge_messages_text(task: Task, prompt: str) -> tuple[str, str]:
    """System and user text for judging an image drawn from `prompt`."""
    system = JUDGE_SYSTEM.format(
        goal=task.goal,
        focus=task.judge_focus or task.goal,
        criteria=_bullets(task.criteria, "- how well it meets the goal"),
        escalation=_bullets(task.escalation, "- (use your own judgement)"),
        subject=task.subject,
    )
    return system, JUDGE_USER.format(prompt=prompt)


def proposer_messages_text(task: Task, prompt: str, score: int | None, failed: list[str]) -> tuple[str, str]:
    """System and user text for asking a new idea from an image, listing the ideas that failed."""
    system = PROPOSER_SYSTEM.format(
        goal=task.goal,
        subject=task.subject,
        escalation=_bullets(task.escalation, "- (use your own judgement)"),
        failed=_bullets(failed[-8:], "- (none yet)"),
    )
    return system, PROPOSER_USER.format(score="?" if score is None else score, prompt=prompt)


def compare_messages_text(task: Task, prompt_a: str, prompt_b: str) -> tuple[str, str]:
    """System and user text for a head-to-head comparison of image A (sent first) and image B."""
    system = COMPARE_SYSTEM.format(goal=task.goal, focus=task.judge_focus or task.goal)
    return system, COMPARE_USER.format(prompt_a=prompt_a, prompt_b=prompt_b)


def summarizer_messages_text(idea: str, words: int) -> tuple[str, str]:
    """System and user text for condensing an idea to `words` words."""
    return SUMMARIZER_SYSTEM.format(words=words), SUMMARIZER_USER.format(idea=idea)
