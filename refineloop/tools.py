"""The tools agent mode's router may call: one per graph step it can choose.

In LangGraph code "tools" are the functions a model calls. Here the router's choice is the tool's name; the
graph, not the tool, does the work, so each tool takes only an optional reason, which goes to the trace.
"""

from __future__ import annotations

from typing import Any

#: Each route tool and what it tells the router. They are sent in OpenAI function format, which every
#: tool-calling LangChain chat model accepts.
ROUTE_TOOL_DESCRIPTIONS = {
    "generate": "Draw the next image from the current prompt. Only when the newest image has been judged.",
    "evaluate": "Have the vision critic score the newest image. Only when an image waits for judging.",
    "summarize": "Turn the critic's latest description into the prompt for the next image.",
    "stop": "End the run and keep the best image. Use when the critic says DONE or more images will not help.",
}


def route_tools() -> list[dict[str, Any]]:
    """The four route tools; each takes an optional reason, which goes to the trace."""
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {"reason": {"type": "string", "description": "Why this step, in a few words."}},
                    "required": [],
                },
            },
        }
        for name, description in ROUTE_TOOL_DESCRIPTIONS.items()
    ]
