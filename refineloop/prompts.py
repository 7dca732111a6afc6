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
{unmet}
Answer with exactly one line:
IDEA: <a vivid description, under 60 words, of the whole next image>"""

PROPOSER_UNMET = """
A checklist says this image still fails these points (the weightiest first); fix them in the next image:
{unmet}
"""

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
Do not mention the subject's framing; it is added separately.{keep}
Answer with the prompt only: comma-separated phrases, at most {words} words, no quotes, no preamble."""

#: The same job for a model whose text encoder (T5, an LLM) reads language rather than keywords.
SUMMARIZER_SENTENCES_SYSTEM = """You rewrite a description as an image prompt that has at most {words} words.
Its text encoder understands plain language: write one or two clear, concrete sentences, as a caption would.
Keep the most visual details (subject, light, colour, effects, mood) and how they relate; drop filler.
Do not mention the subject's framing; it is added separately.{keep}
Answer with the prompt only: at most {words} words, no quotes, no preamble."""

#: Appended to the summarizer's and the proposer's instructions when the task lists words to keep.
KEEP_LINE = "\nThese words must appear in your answer exactly as written here: {keep}"

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


def proposer_messages_text(
    task: Task, prompt: str, score: float | None, failed: list[str], unmet: list[str] | tuple[str, ...] = ()
) -> tuple[str, str]:
    """System and user text for asking a new idea from an image, listing the ideas that failed and, with a
    checklist judge, the questions the image still fails (what to fix next)."""
    system = PROPOSER_SYSTEM.format(
        goal=task.goal,
        subject=task.subject,
        escalation=_bullets(task.escalation, "- (use your own judgement)"),
        failed=_bullets(failed[-8:], "- (none yet)"),
        unmet=PROPOSER_UNMET.format(unmet=_bullets(list(unmet)[:10], "")) if unmet else "",
    )
    if task.keep:
        # Before the answer format, which must stay the last line (small models follow the last thing said).
        head, marker, tail = system.rpartition("\nAnswer with exactly one line:")
        system = f"{head}{keep_line(task.keep)}\n{marker}{tail}" if marker else system + keep_line(task.keep)
    return system, PROPOSER_USER.format(score="?" if score is None else score, prompt=prompt)


def compare_messages_text(task: Task, prompt_a: str, prompt_b: str) -> tuple[str, str]:
    """System and user text for a head-to-head comparison of image A (sent first) and image B."""
    system = COMPARE_SYSTEM.format(goal=task.goal, focus=task.judge_focus or task.goal)
    return system, COMPARE_USER.format(prompt_a=prompt_a, prompt_b=prompt_b)


def keep_line(keep: tuple[str, ...] | list[str]) -> str:
    """The instruction to carry the task's `keep` words verbatim; "" when there are none."""
    return KEEP_LINE.format(keep="; ".join(f'"{word}"' for word in keep)) if keep else ""


def with_kept(prompt: str, keep: tuple[str, ...] | list[str], subject: str = "") -> str:
    """`prompt` with every `keep` phrase that neither it nor the subject anchor carries put in front, verbatim
    (in front: trigger words lead a prompt, and the budget cuts from the end)."""
    missing = [word for word in keep if word not in prompt and word not in subject]
    return ", ".join([*missing, prompt] if prompt else missing)


def summarizer_messages_text(
    idea: str, words: int, style: str = "tags", keep: tuple[str, ...] | list[str] = ()
) -> tuple[str, str]:
    """System and user text for condensing an idea to `words` words, as tags or as sentences (the image model's
    prompt style), carrying the `keep` words verbatim."""
    template = SUMMARIZER_SENTENCES_SYSTEM if style == "sentences" else SUMMARIZER_SYSTEM
    return template.format(words=words, keep=keep_line(keep)), SUMMARIZER_USER.format(idea=idea)


# --- The checklist judge (refineloop.judges.checklist). The writer's marker is `QUESTION:` and the asker's `Q1:`,
# so the demo critic and the tests' scripted critics tell the two roles apart from every other prompt.

CHECKLIST_WRITER_SYSTEM = """You turn an image goal into a checklist that anyone can answer by looking at one image.
Goal: {goal}
Subject that must stay: {subject}
What earns points:
{criteria}

Write {least} to {most} questions. Each must be answered yes or no from the image alone, and yes must always mean
the image is closer to the goal. Cover the subject staying intact as well as the goal itself, and go from what
any decent image has to what only an outstanding one has. Weigh each: 3 for what matters most, 1 for details.
Answer with one line per question and nothing else:
QUESTION: <the question> | WEIGHT: <1, 2 or 3>"""

CHECKLIST_WRITER_USER = "Write the checklist for this goal: {goal}"

CHECKLIST_ASK_SYSTEM = """You check one generated image against a list of yes/no questions about it.
Look only at the image. Answer every question in order, each with the single word yes or no; when unsure, no.
Answer with exactly one line per question and nothing else, like this:
Q1: yes
Q2: no"""

CHECKLIST_ASK_USER = "The image was drawn from the prompt: {prompt}\nQuestions:\n{questions}"

CHECKLIST_REMINDER = (
    "Your last reply could not be read. Answer again with one line per question, 'Q1: yes' or 'Q1: no', "
    "for every question in order."
)


def checklist_writer_text(task: Task, least: int, most: int) -> tuple[str, str]:
    """System and user text for turning the task's goal into weighted yes/no questions."""
    system = CHECKLIST_WRITER_SYSTEM.format(
        goal=task.goal,
        subject=task.subject,
        criteria=_bullets(task.criteria, "- how well it meets the goal"),
        least=least,
        most=most,
    )
    return system, CHECKLIST_WRITER_USER.format(goal=task.goal)


def checklist_ask_text(questions: list[str], prompt: str) -> tuple[str, str]:
    """System and user text for asking the checklist of an image drawn from `prompt`."""
    numbered = "\n".join(f"Q{n}. {question}" for n, question in enumerate(questions, start=1))
    return CHECKLIST_ASK_SYSTEM, CHECKLIST_ASK_USER.format(prompt=prompt, questions=numbered)
