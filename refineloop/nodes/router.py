"""Agent mode: a tool-calling chat model picks every next step; code keeps the caps and the rules.

    START -> setup -> router <-> generate | evaluate -> accept_agent | summarize | propose -> summarize
                        '-> stop -> END

After every step the router shows the model a compact text view of the run and binds four route tools
(generate, evaluate, summarize, stop). The model's pick is checked before it is followed:

- a route to generate at the image cap goes to stop, so a run never makes more than `image_cap()` images;
- an unknown tool, a reply without a tool call, or a move that is impossible now (evaluate with no new
  image, generate or stop while an image waits for judging) falls back to the fixed route, which is the
  greedy graph's own order (`route_after_accept` after a judgement);
- at most `agent_router_calls` model calls are made per image; past that the fixed route decides.

A model that cannot call tools (the demo critic, an Ollama model without the `tools` capability) is noted
once in the trace, and the fixed route decides every step. Each model call is written to trace.jsonl with
what the model said and where the run went.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from refineloop.backends.chat.invoke import bounded_invoke, build_messages
from refineloop.backends.chat.text_safety import clean_model_text
from refineloop.backends.model_cache import models_for
from refineloop.files.trace import append_trace
from refineloop.prompts_agents import router_messages_text
from refineloop.settings import RunSettings
from refineloop.state import RefineState
from refineloop.stopping import route_after_accept, stop_reason
from refineloop.tasks import Task
from refineloop.tools import route_tools

Route = Literal["generate", "evaluate", "summarize", "propose", "stop"]
#: What the model may call; `propose` is reached only by the fixed route, when the critic gave no idea.
MODEL_ROUTES = ("generate", "evaluate", "summarize", "stop")


class AgentState(RefineState, total=False):
    """The refinement state plus the router's own bookkeeping (checkpointed, so a resume keeps it)."""

    agent_step: str
    """The step the router last sent the run to; empty before the first."""
    router_calls: int
    """Model calls the router has made for image `router_image`."""
    router_image: int
    """The image (iteration) `router_calls` counts for; a new image starts a fresh budget."""
    router_off: str
    """Why the model is no longer asked (it cannot call tools); empty while it is."""


def unjudged(state: RefineState) -> bool:
    """Whether the newest image still waits for the critic (accept appends its history entry)."""
    candidate = state.get("candidate")
    if not candidate:
        return False
    history = state.get("history") or []
    return not history or history[-1]["iteration"] != candidate["iteration"]


def last_step(state: AgentState) -> str:
    """The last node that ran before the router; propose always runs summarize after itself."""
    step = state.get("agent_step") or ""
    return "summarize" if step == "propose" else step


def fixed_route(state: AgentState) -> Route:
    """The deterministic order: generate, evaluate (+ accept), then the greedy graph's own router."""
    if unjudged(state):
        return "evaluate"
    if state["iteration"] == 0:
        return "generate"
    if last_step(state) == "evaluate":
        return route_after_accept(state)
    return "stop" if stop_reason(state) else "generate"


def allowed_routes(state: AgentState) -> tuple[str, ...]:
    """The model's picks that would be followed as given now."""
    if unjudged(state):
        return ("evaluate",)
    if state["iteration"] >= RunSettings.from_state(state["settings"]).image_cap():
        # No image can follow, so neither can a new prompt for one.
        return ("stop",)
    allowed = ["generate"]
    if last_step(state) != "summarize":
        # Condensing the same idea twice changes nothing, so a second summarize in a row is refused.
        allowed.append("summarize")
    if state["iteration"] > 0:
        # Stopping before any image would leave nothing to keep.
        allowed.append("stop")
    return tuple(allowed)


def check_route(state: AgentState, name: str) -> tuple[Route, str | None]:
    """Where the model's pick leads and, when it is not followed as given, why."""
    cap = RunSettings.from_state(state["settings"]).image_cap()
    if name not in MODEL_ROUTES:
        return fixed_route(state), f"unknown tool '{name}'"
    if name == "generate" and state["iteration"] >= cap and not unjudged(state):
        # The cap is code's, not the model's: a wish for one more image ends the run instead.
        return "stop", f"generate at the image cap ({cap} images)"
    if name not in allowed_routes(state):
        return fixed_route(state), f"'{name}' is not possible now ({_why_not(state, name)})"
    return cast(Route, name), None  # one of MODEL_ROUTES, checked above


def _why_not(state: AgentState, name: str) -> str:
    if unjudged(state):
        return f"image {state['iteration']} has not been judged"
    if name == "evaluate":
        return "no new image to judge"
    if state["iteration"] >= RunSettings.from_state(state["settings"]).image_cap():
        return "the image cap is reached"
    if name == "summarize":
        return "the prompt was just summarized"
    return "no image has been made yet"


def state_view(state: AgentState, settings: RunSettings) -> dict[str, Any]:
    """The compact text view of the run the model routes from."""
    candidate = state.get("candidate") or {}
    best = state.get("best")
    cap = settings.image_cap()
    waiting = unjudged(state)
    if not candidate:
        newest = "none yet"
    elif waiting:
        newest = f"#{candidate['iteration']}, not judged yet"
    else:
        score = "?" if candidate.get("score") is None else candidate["score"]
        newest = f"#{candidate['iteration']}, score {score}/10, verdict {candidate.get('verdict', 'unknown')}"
    # Only a judgement brings a new idea; until summarize runs, the prompt still describes the old one.
    stale = last_step(state) == "evaluate" and state.get("idea") != state.get("prompt")
    return {
        "made": state["iteration"],
        "cap": cap,
        "cap_note": " (the cap is reached: no more images)" if state["iteration"] >= cap else "",
        "newest": newest,
        "critique": (candidate.get("critique") or "(none)") if candidate and not waiting else "(none)",
        "best": f"#{best['iteration']} at {best['score']}/10" if best and best.get("score") is not None else "none",
        "idea": state.get("idea", ""),
        "prompt": state.get("prompt", ""),
        "prompt_note": " (not yet updated from the idea)" if stale else "",
        "last": state.get("agent_step") or "none (the run just started)",
        "allowed": ", ".join(allowed_routes(state)),
    }


def _tool_capable(model: BaseChatModel) -> tuple[Any | None, str]:
    """The model with the route tools bound, or None and why it cannot call tools."""
    from refineloop.backends.chat.ollama import ollama_capabilities

    caps = ollama_capabilities(model)
    if caps is not None and "tools" not in caps:
        # Ollama would reject the request; knowing it up front keeps the run on the fixed route instead.
        return None, "the Ollama model lacks the 'tools' capability"
    try:
        return model.bind_tools(route_tools()), ""
    except NotImplementedError:
        return None, f"{type(model).__name__} cannot call tools"


def router(state: AgentState, config: RunnableConfig) -> Command[Route]:
    """Ask the model for the next step, check it, and go there."""
    settings = RunSettings.from_state(state["settings"])
    image = state["iteration"]
    calls = state.get("router_calls", 0) if state.get("router_image") == image else 0
    update: dict[str, Any] = {"router_image": image, "router_calls": calls}
    if state.get("router_off"):
        route: Route = fixed_route(state)
    elif calls >= settings.agent_router_calls:
        route = fixed_route(state)
        append_trace(
            state["run_dir"],
            {
                "kind": "route",
                "iteration": image,
                "asked": False,
                "route": route,
                "fallback": f"router call budget spent ({settings.agent_router_calls} per image)",
            },
        )
    else:
        # Temperature 0 before binding: the bound wrapper no longer exposes the model's fields.
        bound, off = _tool_capable(models_for(config).agent_model(settings, 0.0))
        if bound is None:
            route = fixed_route(state)
            update["router_off"] = off
            append_trace(
                state["run_dir"],
                {"kind": "route", "iteration": image, "asked": False, "route": route, "fallback": off, "note": "once"},
            )
        else:
            route, extra = _ask(state, settings, bound)
            update["router_calls"] = calls + 1
            update.update(extra)
    update["agent_step"] = route
    return Command(goto=route, update=update)


def _ask(state: AgentState, settings: RunSettings, bound: Any) -> tuple[Route, dict[str, Any]]:
    """One model call: the view in, one tool call out; logged whatever happens."""
    task = Task.from_dict(state["task"])
    system, user = router_messages_text(task, state_view(state, settings))
    reply, seconds, _ = bounded_invoke(
        bound,
        build_messages(system, user),
        run_dir=state["run_dir"],
        role="router",
        iteration=state["iteration"],
        settings=settings,
    )
    tool_calls = list(getattr(reply, "tool_calls", None) or [])
    extra: dict[str, Any] = {}
    fallback: str | None
    if not tool_calls:
        route, fallback = fixed_route(state), "no tool call in the reply"
    else:
        # One step per turn: a second call in the same reply is only logged.
        call = tool_calls[0]
        reason = clean_model_text(str((call.get("args") or {}).get("reason") or ""))
        route, fallback = check_route(state, str(call.get("name")))
        if route == "stop" and fallback is None:
            # The stop node prefers a DONE or cap reason; this one says the agent chose to end.
            extra["stop_reason"] = f"the agent stopped after image {state['iteration']}" + (
                f": {reason}" if reason else ""
            )
    append_trace(
        state["run_dir"],
        {
            "kind": "route",
            "iteration": state["iteration"],
            "asked": True,
            "sent": {"system": system, "user": user},
            "received": reply.content,
            "tool_calls": [{"name": c.get("name"), "args": c.get("args")} for c in tool_calls],
            "route": route,
            "fallback": fallback,
            "seconds": round(seconds, 4),
        },
    )
    return route, extra
