"""Evaluator-optimizer end to end: a scripted prompt writer and the scripted critic take turns."""

from __future__ import annotations

from pathlib import Path

from refineloop.cli.run_commands import start_run
from refineloop.files.trace import read_trace
from refineloop.prompt_text import compose_prompt
from tests.conftest import images_in, judge_reply


def eo_run(scripted, agent_model, run_settings, quiet, replies, writes, **overrides):
    """Run evaluator-optimizer with `replies` for the critic and `writes` for the prompt writer."""
    cache, critic = scripted(replies)
    writer = agent_model(writes, exhausted="searing embers, white-hot glow, heat haze")
    cache.register_chat("writer", writer)
    settings = run_settings(strategy="evaluator-optimizer", agent_model="writer", **overrides)
    return start_run(settings, models=cache, out=quiet), critic, writer


def user_text(messages) -> str:
    """The text blocks of the last (user) message of one model call."""
    return " ".join(b["text"] for b in messages[-1].content if isinstance(b, dict) and b.get("type") == "text")


def test_the_agents_take_turns_until_the_critic_says_done(scripted, agent_model, run_settings, quiet):
    replies = [
        judge_reply(4, idea="a charred sausage on glowing coals"),
        judge_reply(6),
        judge_reply(5),
        judge_reply(8, "DONE"),
    ]
    writes = [f"prompt number {n}, roaring flames, orange light" for n in range(1, 5)]
    # The first DONE stops, and no final pick follows: this test counts the agents' turns alone.
    turns = {"max_iterations": 6, "final_pick": 0, "confirm_done": False}
    outcome, critic, writer = eo_run(scripted, agent_model, run_settings, quiet, replies, writes, **turns)
    run = Path(outcome.run_dir)
    # DONE at image 4 ends the run before the cap of 6, and every image was judged, the last one too.
    assert images_in(run) == ["01.png", "02.png", "03.png", "04.png"]
    assert [h["iteration"] for h in outcome.values["history"]] == [1, 2, 3, 4]
    assert sum(c["role"] == "judge" for c in critic.calls) == 4
    assert outcome.values["stop_reason"] == "the critic said DONE at image 4"
    # The writer wrote every prompt; its second turn saw the critic's first verdict, and never a file path.
    assert len(writer.seen) == 4
    second = user_text(writer.seen[1])
    assert "scripted critique 4" in second and "a charred sausage on glowing coals" in second
    assert not any(".png" in user_text(m) for m in writer.seen)
    drawn = [r["prompt"] for r in read_trace(outcome.run_dir) if r["kind"] == "image"]
    subject = outcome.values["task"]["subject"]
    assert drawn == [compose_prompt(subject, w) for w in writes]
    assert (run / "best.png").read_bytes() == (run / "04.png").read_bytes()
    assert "[ 4/6] score  8/10" in quiet.getvalue()


def test_the_cap_ends_the_run_and_best_is_the_highest(scripted, agent_model, run_settings, quiet):
    # A DONE on an image below the best does not end the run (the rule every strategy shares).
    replies = [judge_reply(7), judge_reply(5, "DONE"), judge_reply(6)]
    outcome, critic, _ = eo_run(scripted, agent_model, run_settings, quiet, replies, [], max_iterations=3)
    run = Path(outcome.run_dir)
    assert images_in(run) == ["01.png", "02.png", "03.png"]
    assert [h["score"] for h in outcome.values["history"]] == [7, 5, 6]
    assert outcome.values["stop_reason"] == "reached --max-iterations 3"
    assert outcome.values["best"]["iteration"] == 1
    assert (run / "best.png").read_bytes() == (run / "01.png").read_bytes()
    assert (run / "summary.txt").exists() and (run / "collage.png").exists()


def test_an_unusable_writer_reply_draws_the_critics_idea(scripted, agent_model, run_settings, quiet):
    replies = [judge_reply(3, idea="a sausage wrapped in blue flames")]
    writes = ["a hot hotdog in the sun", "Sorry, I cannot help with that."]
    outcome, _, _ = eo_run(scripted, agent_model, run_settings, quiet, replies, writes, max_iterations=2)
    assert "a sausage wrapped in blue flames" in outcome.values["candidate"]["prompt"]
    warnings = [r for r in read_trace(outcome.run_dir) if r["kind"] == "warning"]
    assert warnings and "writer reply unusable" in warnings[0]["message"]


def test_the_writer_carries_the_tasks_words_to_keep(scripted, agent_model, run_settings, quiet, tmp_path):
    task = tmp_path / "lora.toml"
    fields = 'name = "lora"\ngoal = "a hot hotdog"\nsubject = "a single hotdog"\nstart_prompt = "a hotdog"\n'
    task.write_text(fields + 'keep = ["ember-punk style"]\n')
    replies = [judge_reply(4), judge_reply(5)]
    # The writer forgets the trigger words; they must still reach every drawn prompt.
    writes = ["roaring flames, orange light", "white-hot glow, heat haze"]
    settings = {"max_iterations": 2, "final_pick": 0, "task": str(task)}
    outcome, _, writer = eo_run(scripted, agent_model, run_settings, quiet, replies, writes, **settings)
    assert all('"ember-punk style"' in str(messages[0].content) for messages in writer.seen)
    drawn = [r["prompt"] for r in read_trace(outcome.run_dir) if r["kind"] == "image"]
    assert len(drawn) == 2 and all("ember-punk style" in prompt for prompt in drawn)
