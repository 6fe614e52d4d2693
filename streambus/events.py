"""The one event vocabulary every part of streambus speaks.

Provider streams are normalized into five event types. Their JSON form (one object per event,
tagged by ``"type"``) is public API: ``streambus run --format jsonl`` prints it, recordings
store it, replay publishes it. See ``docs/events.md``.

Every event carries ``session`` (the id of the stream it belongs to), ``seq`` (0, 1, 2, … within
that session, no gaps) and ``t_ns`` (integer nanoseconds since the request was sent, from a
monotonic clock). A session is always ``start`` first and exactly one ``stop`` last.

Events are frozen: one batch is shared by every subscriber, so nobody may mutate it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal, TypeAlias, get_args

import msgspec

__all__ = [
    "ERROR_KINDS",
    "STOP_REASONS",
    "Channel",
    "Delta",
    "ErrorKind",
    "Event",
    "Start",
    "Stop",
    "StopReason",
    "ToolDelta",
    "ToolResult",
    "Usage",
    "decode_event",
    "encode_event",
    "one_session",
]

Channel: TypeAlias = Literal["text", "reasoning", "refusal"]
StopReason: TypeAlias = Literal[
    "stop", "length", "tool_calls", "content_filter", "cancelled", "error"
]
STOP_REASONS: Final = ("stop", "length", "tool_calls", "content_filter", "cancelled", "error")
ErrorKind: TypeAlias = Literal[
    "connect_timeout",
    "first_token_timeout",
    "idle_timeout",
    "stall_timeout",
    "total_timeout",
    "connection",
    "http",
    "provider",
    "protocol",
    "truncated",
    "internal",
]
ERROR_KINDS: Final[tuple[str, ...]] = get_args(ErrorKind)


class _Base(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="type"):
    """Fields every event has. Not itself an event type."""

    session: str
    seq: int
    t_ns: int


class Start(_Base, frozen=True, kw_only=True, tag="start"):
    """The request was sent. Always the first event of a session, at ``t_ns`` 0.

    ``host`` is the provider's host (and port), ``started_at`` the wall-clock time in UTC
    (ISO 8601), ``request`` the JSON body that was sent. Credentials travel in headers and
    are never part of it. All three are ``None`` when unknown (a hand-made event stream).
    """

    provider: str
    model: str
    host: str | None = None
    started_at: str | None = None
    request: dict[str, Any] | None = None
    conversation: str | None = None
    """Set when this session is one turn of a tool-calling conversation: its id."""
    turn: int = 0
    """Which turn of the conversation (0, 1, …); each turn is a session of its own."""


class Delta(_Base, frozen=True, kw_only=True, gc=False, tag="delta"):
    """A piece of generated text.

    ``channel`` keeps the answer apart from reasoning (OpenAI-compatible ``reasoning_content``,
    Anthropic thinking) and from an OpenAI refusal. An Anthropic thinking block's signature
    arrives as a ``reasoning`` delta with empty ``text`` and ``signature`` set.
    """

    text: str
    channel: Channel = "text"
    signature: str | None = None


class ToolDelta(_Base, frozen=True, kw_only=True, gc=False, tag="tool_delta"):
    """A fragment of a tool call.

    ``index`` counts tool calls within the turn from 0, whatever the provider's own indexing.
    The first fragment of a call carries ``id`` and ``name``; the ``arguments`` of all fragments
    with one index concatenate to the call's JSON arguments.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Usage(_Base, frozen=True, kw_only=True, gc=False, tag="usage"):
    """Token counts as the provider reported them. Cumulative: a later one supersedes."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class ToolResult(_Base, frozen=True, kw_only=True, gc=False, tag="tool_result"):
    """What a tool call of the previous turn returned: the input this turn's request carries.

    Published right after ``start``, one per call, in call order. ``content`` is exactly
    what the model was sent; ``error`` names a failure (``timeout``, ``exception``, …) or is
    ``None``; ``duration_ns`` is how long the tool ran. Replays publish these as recorded
    and run nothing.
    """

    index: int
    id: str | None = None
    name: str | None = None
    content: str = ""
    error: str | None = None
    duration_ns: int = 0


class Stop(_Base, frozen=True, kw_only=True, gc=False, tag="stop"):
    """The session ended. Exactly one per session, always last: also on error and cancellation.

    ``reason`` is normalized; ``raw_reason`` is what the provider said (``end_turn``,
    ``tool_calls``, …) or ``None`` when it said nothing; ``error`` explains reason ``error``
    in one line and ``error_kind`` classifies it for code (which timeout fired, a broken
    connection, an HTTP error…). ``attempts`` counts the HTTP requests sent for this session:
    more than 1 when retries happened before any content arrived.
    """

    reason: StopReason
    raw_reason: str | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    attempts: int = 1


Event: TypeAlias = Start | Delta | ToolDelta | ToolResult | Usage | Stop

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """The public JSON form of one event (no trailing newline)."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> Event:
    """Parse the public JSON form back into a typed event (validates every field)."""
    event: Event = _decoder.decode(data)
    return event


def one_session(batch: Sequence[Event]) -> str | None:
    """The session all of ``batch`` belongs to, if it is one (not empty, none mixed in).

    A stream publishes its own events only, so a subscriber checking this once per batch
    can take the batch whole instead of sorting it event by event.
    """
    if not batch:
        return None
    session = batch[0].session
    for event in batch:
        if event.session != session:
            return None
    return session
