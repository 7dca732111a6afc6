"""One duel and one budget for every judge: a duel's two orders claim their calls together, run at once, and are
applied in a fixed order whichever answers first; the budget stays exact from any number of threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from PIL import Image

from refineloop.backends.chat.invoke import message_text
from refineloop.backends.model_cache import ModelCache
from refineloop.cli.run_commands import start_run
from refineloop.judges.base import Budget, Judging
from refineloop.judges.duel import duel
from refineloop.tasks import resolve_task
from tests.conftest import ScriptedCritic
from tests.judges.test_final_pick import DUELS, LOOKS, LOOP


class LeaningReferee(ScriptedCritic):
    """A referee that always names the image shown first (pure position lean). It holds back its answer to the
    order that shows the prompt `held` first until another order has been answered, and notes the first-shown
    prompt of each answer in the order the answers leave."""

    held: str = ""
    gate: Any = None
    answered: list[str] = []

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        if "WINNER:" not in str(messages[0].content):
            return super()._generate(messages, stop, run_manager, **kw)
        shown_first = message_text(messages[-1]).split("Image A was drawn from: ")[1].split("\n")[0]
        if shown_first == self.held:
            self.gate.wait(5)  # released by the other order's answer; 5 s only if the orders ran one at a time
        self.answered.append(shown_first)
        self.gate.set()
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="WINNER: A"))])


def image(folder: Path, iteration: int, prompt: str) -> dict[str, Any]:
    path = folder / f"{iteration:02d}.png"
    Image.new("RGB", (32, 32), (40 * iteration, 90, 160)).save(path)
    return {"iteration": iteration, "path": str(path), "prompt": prompt}


def test_a_duels_orders_run_at_once_and_apply_in_a_fixed_order_whichever_answers_first(tmp_path, run_settings):
    settings = run_settings(critic_concurrency=2, output_dir=str(tmp_path))
    referee = LeaningReferee(judge=[], calls=[], held="a hotdog, first", gate=threading.Event(), answered=[])
    cache = ModelCache()
    cache.register_chat("scripted", referee)
    j = Judging(cache, settings, resolve_task(settings.task, settings.goal), str(tmp_path), Budget(None))
    a, b = image(tmp_path, 1, "a hotdog, first"), image(tmp_path, 2, "a hotdog, second")
    met = duel(j, a, b, label="final-duel")
    # The order (b, a) answered first, yet the winners read (a, b)'s winner first: the lean shows as a flip of
    # image 1 then image 2, never the other way round.
    assert referee.answered == ["a hotdog, second", "a hotdog, first"]
    assert met is not None and met.winners == (1, 2) and met.flipped and met.wins(1) == met.wins(2) == 1
    assert j.budget.used == 2 and j.stats["flips"] == 1 and j.stats["duels"] == 1


def test_a_duel_the_budget_cannot_finish_is_never_begun(scripted, run_settings, quiet):
    # The loop's 3 scores and the final pick's 6 fresh looks leave one call of 10: a duel needs two, so none
    # is asked (a duel of one order would carry the position bias it exists to cancel), and the call is left.
    cache, critic = scripted(LOOP + LOOKS, compare_replies=list(DUELS))
    settings = run_settings(strategy="climbing", max_iterations=3, max_critic_calls=10, confirm_done=False)
    outcome = start_run(settings, models=cache, out=quiet)
    assert outcome.values["critic_calls"] == len(critic.calls) == 9
    assert not [c for c in critic.calls if c["role"] == "compare"]
    assert outcome.values["final_pick"]["duels"] == [] and outcome.values["final_pick"]["winner"] == 2


def test_a_duel_with_one_call_left_makes_none(tmp_path, run_settings):
    referee = LeaningReferee(judge=[], calls=[], gate=threading.Event(), answered=[])
    cache = ModelCache()
    cache.register_chat("scripted", referee)
    settings = run_settings(output_dir=str(tmp_path))
    j = Judging(cache, settings, resolve_task(settings.task, settings.goal), str(tmp_path), Budget(1))
    assert duel(j, image(tmp_path, 1, "one"), image(tmp_path, 2, "two")) is None
    assert j.budget.used == 0 and referee.answered == [] and j.budget.take()


def test_duels_from_many_threads_never_pass_the_budget_nor_ask_half_a_duel(tmp_path, run_settings):
    gate = threading.Event()
    gate.set()  # no order is held back here
    referee = LeaningReferee(judge=[], calls=[], gate=gate, answered=[])
    cache = ModelCache()
    cache.register_chat("scripted", referee)
    settings = run_settings(critic_concurrency=2, output_dir=str(tmp_path))
    j = Judging(cache, settings, resolve_task(settings.task, settings.goal), str(tmp_path), Budget(7))
    a, b = image(tmp_path, 1, "one"), image(tmp_path, 2, "two")
    start = threading.Barrier(8)
    results: list[Any] = []

    def meet() -> None:
        start.wait()
        results.append(duel(j, a, b))

    threads = [threading.Thread(target=meet) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = [r for r in results if r is not None]
    # Seven calls fund three whole duels; the seventh call is never spent on half of a fourth.
    assert len(held) == 3 and len(referee.answered) == 6 == j.budget.used
    assert all(r.winners == (1, 2) for r in held) and j.stats["duels"] == 3


def test_a_claim_takes_all_its_calls_or_none():
    budget = Budget(3)
    assert budget.claim(2) and not budget.claim(2) and budget.used == 2
    assert budget.affords(1) and budget.take() and not budget.take() and budget.used == 3
    unlimited = Budget(None)
    assert unlimited.claim(50) and unlimited.affords(10**6) and unlimited.used == 50
