"""Assemble a session's events back into the message they describe, with its timing.

The same assembly serves ``stream()``'s result, the differential tests against the official SDKs
and (later) ``streambus show``: one place decides what "the text" and "the tool calls" of a
stream are. Text is kept as pieces, joined in runs as it grows (:class:`_Pieces`): assembly
stays linear, and a long stream holds a few long strings, not one small object per token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

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


_RUN: Final = 64


class _Pieces:
    """A text arriving in pieces, every ``_RUN`` of them joined into one string.

    A token is a string object of ~60 bytes for ~5 characters: a 250-token stream kept
    ~16 KiB alive until its end, per concurrent stream. Joined in runs, it keeps a few strings
    about as long as its text. Each piece is copied twice at most, so assembly stays linear.
    (``io.StringIO`` would not do on CPython 3.11: it keeps the pieces too.) The builder
    appends to ``parts`` itself and calls :meth:`join_run` when a run is full: a method
    call per token would cost more than the append.
    """

    __slots__ = ("parts", "runs")

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.parts: list[str] = []

    def join_run(self) -> None:
        self.runs.append("".join(self.parts))
        self.parts.clear()

    def text(self) -> str:
        return "".join([*self.runs, *self.parts])


class MessageBuilder:
    """Feed events (in order, any batching); read :attr:`message` at any time."""

    def __init__(self) -> None:
        self._text = _Pieces()
        self._reasoning = _Pieces()
        self._refusal = _Pieces()
        self._tools: dict[int, tuple[ToolCall, _Pieces]] = {}  # by index
        self._meta = Message()

    def add(self, events: Iterable[Event]) -> None:
        meta = self._meta
        for event in events:
            meta.events += 1
            # Exact types: an isinstance() that misses costs ~0.1 µs on a msgspec struct type.
            if type(event) is Delta:
                if event.text:
                    if meta.first_content_ns is None:
                        meta.first_content_ns = event.t_ns
                    channel = event.channel
                    if channel == "text":
                        pieces = self._text
                    elif channel == "reasoning":
                        pieces = self._reasoning
                    else:
                        pieces = self._refusal
                    parts = pieces.parts
                    parts.append(event.text)
                    if len(parts) >= _RUN:
                        pieces.join_run()
            elif type(event) is ToolDelta:
                if meta.first_content_ns is None:
                    meta.first_content_ns = event.t_ns
                tool = self._tools.get(event.index)
                if tool is None:
                    tool = self._tools[event.index] = (ToolCall(event.index), _Pieces())
                call, pieces = tool
                if event.id is not None:
                    call.id = event.id
                if event.name is not None:
                    call.name = event.name
                if event.arguments:
                    parts = pieces.parts
                    parts.append(event.arguments)
                    if len(parts) >= _RUN:
                        pieces.join_run()
            elif type(event) is Start:
                meta.session, meta.provider, meta.model = event.session, event.provider, event.model
                meta.conversation, meta.turn = event.conversation, event.turn
            elif type(event) is ToolResult:
                meta.tool_results.append(event)
            elif type(event) is Usage:
                meta.usage = event
            elif type(event) is Stop:
                meta.stop = event

    @property
    def message(self) -> Message:
        meta = self._meta
        meta.text = self._text.text()
        meta.reasoning = self._reasoning.text()
        meta.refusal = self._refusal.text()
        for call, arguments in self._tools.values():
            call.arguments = arguments.text()
        meta.tool_calls = [self._tools[i][0] for i in sorted(self._tools)]
        return meta


def assemble(events: Iterable[Event]) -> Message:
    """The message a complete (or partial) sequence of one session's events describes."""
    builder = MessageBuilder()
    builder.add(events)
    return builder.message
