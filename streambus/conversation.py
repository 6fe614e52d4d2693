"""Tool-calling conversations: stream a turn, run the calls it asked for, send the results
back as the next turn, until the model answers (or ``max_steps`` turns have run).

Each turn is a session of its own, so every session keeps the plain contract (``start``
first, exactly one ``stop`` last) and records, replays and measures like any other. The
turns of one conversation share a ``conversation`` id and count ``turn`` from 0 on their
``start``; the results a turn's request carries back are published as ``tool_result``
events right after its ``start``. A replay therefore shows what ran and what came back,
and runs nothing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from streambus.bus import Bus
from streambus.client import new_session_id, open_provider, opening_events, stream
from streambus.message import Message
from streambus.providers import ProviderConfig, Request
from streambus.tools import ToolOutcome, ToolRegistry, run_calls

__all__ = ["DEFAULT_MAX_STEPS", "Conversation", "converse"]

DEFAULT_MAX_STEPS = 8


@dataclass
class Conversation:
    """The turns of one conversation, in order."""

    id: str
    turns: list[Message] = field(default_factory=list)
    max_steps: int = DEFAULT_MAX_STEPS

    @property
    def final(self) -> Message:
        return self.turns[-1]

    @property
    def exhausted(self) -> bool:
        """The last allowed turn still asked for tools: the loop stopped, not the model."""
        last = self.final.stop
        return (
            len(self.turns) >= self.max_steps and last is not None and (last.reason == "tool_calls")
        )


async def converse(
    bus: Bus,
    request: Request | str,
    tools: ToolRegistry,
    *,
    provider: ProviderConfig | str = "auto",
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    simulator: Any = None,
    **stream_options: Any,
) -> Conversation:
    """Stream ``request`` with ``tools`` offered, running the calls until the model answers.

    ``stream_options`` (``timeout``, ``retries``, ``client``) apply to every turn. A turn
    that ends for any reason but ``tool_calls`` (an answer, an error, a cancellation) ends
    the conversation; so does reaching ``max_steps`` turns (see ``Conversation.exhausted``).
    """
    if max_steps < 1:
        raise ValueError("max_steps must be at least 1")
    if isinstance(request, str):
        request = Request.from_prompt(request)
    where = {"model": model, "base_url": base_url, "api_key": api_key}
    async with open_provider(provider, simulator=simulator, **where) as config:
        return await _converse(bus, request, tools, config, max_steps, stream_options)


async def _converse(
    bus: Bus,
    request: Request,
    tools: ToolRegistry,
    config: ProviderConfig,
    max_steps: int,
    stream_options: dict[str, Any],
) -> Conversation:
    offered = tools.anthropic_tools() if config.format == "anthropic" else tools.openai_tools()
    conversation = Conversation(new_session_id(), max_steps=max_steps)
    messages = list(request.messages)
    outcomes: list[ToolOutcome] = []

    def with_messages(messages: list[dict[str, Any]]) -> Request:
        return msgspec.structs.replace(
            request, messages=messages, extra={**request.extra, "tools": offered}
        )

    async def cancelled_turn(
        turn: int, sent: list[dict[str, Any]], message: Message, outcomes: list[ToolOutcome]
    ) -> None:
        next_request = with_messages(sent + follow_up(config.format, message, outcomes))
        await _publish_cancelled_turn(bus, config, next_request, conversation.id, turn, outcomes)

    for turn in range(max_steps):
        this_turn = with_messages(messages)
        message = await stream(
            bus,
            this_turn,
            provider=config,
            conversation=conversation.id,
            turn=turn,
            tool_results=outcomes,
            **stream_options,
        )
        conversation.turns.append(message)
        stop = message.stop
        if stop is None or stop.reason != "tool_calls" or not message.tool_calls:
            break
        if turn + 1 == max_steps:
            break
        on_cancel = functools.partial(cancelled_turn, turn + 1, messages, message)
        outcomes = await run_calls(tools, message.tool_calls, on_cancel=on_cancel)
        messages = messages + follow_up(config.format, message, outcomes)
    return conversation


async def _publish_cancelled_turn(
    bus: Bus,
    config: ProviderConfig,
    request: Request,
    conversation: str,
    turn: int,
    outcomes: list[ToolOutcome],
) -> None:
    """The turn that would have carried ``outcomes``, as a session that was cancelled before
    its request went out: ``start``, the results, ``stop`` (``cancelled``), all at ``t_ns`` 0.
    Published even while cancelled, but never hanging on a stuck subscriber."""
    normalizer = config.normalizer(new_session_id(), request.model)
    events = opening_events(
        normalizer,
        config,
        config.body(request),
        conversation=conversation,
        turn=turn,
        tool_results=outcomes,
    )
    events += normalizer.cancel(0)
    with trio.CancelScope(shield=True), trio.move_on_after(bus.grace):
        await bus.publish(events)


def follow_up(fmt: str, message: Message, outcomes: list[ToolOutcome]) -> list[dict[str, Any]]:
    """The messages that carry a turn's calls and their results into the next request."""
    calls = message.tool_calls
    if fmt == "anthropic":
        blocks: list[dict[str, Any]] = []
        if message.text:
            blocks.append({"type": "text", "text": message.text})
        for call in calls:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": _input(call.arguments),
                }
            )
        results = [
            {
                "type": "tool_result",
                "tool_use_id": outcome.id,
                "content": outcome.content,
                "is_error": outcome.is_error,
            }
            for outcome in outcomes
        ]
        return [{"role": "assistant", "content": blocks}, {"role": "user", "content": results}]
    assistant = {
        "role": "assistant",
        "content": message.text or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments or "{}"},
            }
            for call in calls
        ],
    }
    tool_messages = [
        {"role": "tool", "tool_call_id": outcome.id, "content": outcome.content}
        for outcome in outcomes
    ]
    return [assistant, *tool_messages]


def _input(arguments: str) -> Any:
    """Anthropic wants the input as an object; arguments the model botched count as ``{}``
    (the tool result already tells it what was wrong)."""
    try:
        value = msgspec.json.decode(arguments or "{}")
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}
