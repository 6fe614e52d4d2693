"""Assemble a session's events back into the message they describe, with its timing.

The same assembly serves ``stream()``'s result, the differential tests against the official SDKs
and (later) ``streambus show``: one place decides what "the text" and "the tool calls" of a
stream are. Text is kept as a list of parts and joined once, so assembly stays linear.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streambus.events import Delta, Event, Start, Stop, ToolDelta, ToolResult, Usage

__all__ = ["Message", "MessageBuilder", "ToolCall", "assemble"]


@dataclass
class ToolCall:
    """One tool call, its argument fragments joined (a JSON string, as the model sent it)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class Message:
    """What one session produced, and when."""

    session: str | None = None
    provider: str | None = None
    model: str | None = None
    text: str = ""
    reasoning: str = ""
    refusal: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)
    """What the previous turn's tool calls returned (this turn's request carried them)."""
    conversation: str | None = None
    turn: int = 0
    usage: Usage | None = None
    stop: Stop | None = None
    events: int = 0
    first_content_ns: int | None = None
    """``t_ns`` of the first text, reasoning, refusal or tool-call event: time to first token."""

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_content_ns is None else self.first_content_ns / 1e9

    @property
    def duration_s(self) -> float | None:
        return None if self.stop is None else self.stop.t_ns / 1e9

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens over the time from the first token to the stop (decode speed)."""
        if self.usage is None or not self.usage.output_tokens or self.stop is None:
            return None
        if self.first_content_ns is None:
            return None
        span = (self.stop.t_ns - self.first_content_ns) / 1e9
        return self.usage.output_tokens / span if span > 0 else None


class MessageBuilder:
    """Feed events (in order, any batching); read :attr:`message` at any time."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._refusal: list[str] = []
        self._calls: dict[int, ToolCall] = {}
        self._arguments: dict[int, list[str]] = {}
        self._meta = Message()

    def add(self, events: Iterable[Event]) -> None:
        meta = self._meta
        for event in events:
            meta.events += 1
            if isinstance(event, Delta):
                if event.text:
                    if meta.first_content_ns is None:
                        meta.first_content_ns = event.t_ns
                    if event.channel == "text":
                        self._text.append(event.text)
                    elif event.channel == "reasoning":
                        self._reasoning.append(event.text)
                    else:
                        self._refusal.append(event.text)
            elif isinstance(event, ToolDelta):
                if meta.first_content_ns is None:
                    meta.first_content_ns = event.t_ns
                call = self._calls.get(event.index)
                if call is None:
                    call = self._calls[event.index] = ToolCall(event.index)
                    self._arguments[event.index] = []
                if event.id is not None:
                    call.id = event.id
                if event.name is not None:
                    call.name = event.name
                if event.arguments:
                    self._arguments[event.index].append(event.arguments)
            elif isinstance(event, Start):
                meta.session, meta.provider, meta.model = event.session, event.provider, event.model
                meta.conversation, meta.turn = event.conversation, event.turn
            elif isinstance(event, ToolResult):
                meta.tool_results.append(event)
            elif isinstance(event, Usage):
                meta.usage = event
            elif isinstance(event, Stop):
                meta.stop = event

    @property
    def message(self) -> Message:
        meta = self._meta
        meta.text = "".join(self._text)
        meta.reasoning = "".join(self._reasoning)
        meta.refusal = "".join(self._refusal)
        for index, call in self._calls.items():
            call.arguments = "".join(self._arguments[index])
        meta.tool_calls = [self._calls[i] for i in sorted(self._calls)]
        return meta


def assemble(events: Iterable[Event]) -> Message:
    """The message a complete (or partial) sequence of one session's events describes."""
    builder = MessageBuilder()
    builder.add(events)
    return builder.message
