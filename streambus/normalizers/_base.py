"""What every provider normalizer shares: numbering, stop-reason mapping, the end of a session.

A normalizer is a pure state machine for one session: decoded SSE events and the time they
arrived go in, typed streambus events come out. It owns ``seq`` so numbering has no gaps, and it
guarantees the session's contract: ``start`` first, exactly one ``stop`` last, nothing after.
It never reads a clock: the caller passes ``t_ns``.

One session may take several HTTP attempts (retries). The caller announces each with
:meth:`begin_attempt`; an attempt that failed before any content published nothing, so the next
one starts from the same ``seq`` as if the failure never happened, and ``stop`` counts them.
"""

from __future__ import annotations

from typing import Any, Final

from streambus.errors import LocalProtocolError
from streambus.events import (
    Channel,
    Delta,
    ErrorKind,
    Event,
    Start,
    Stop,
    StopReason,
    ToolDelta,
    ToolResult,
    Usage,
)
from streambus.sse import ServerSentEvent

__all__ = ["Normalizer", "describe_error", "normalize_stop_reason"]

_STOP_REASONS: Final[dict[str, StopReason]] = {
    # OpenAI
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    # Anthropic
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def normalize_stop_reason(raw: str | None) -> StopReason:
    """Map a provider's finish/stop reason onto ours; an unknown one counts as a normal stop."""
    if raw is None:
        return "stop"
    return _STOP_REASONS.get(raw, "stop")


def describe_error(provider: str, message: str | None, kind: str | None, code: object) -> str:
    """One line naming a provider's in-stream error: ``openai stream error: msg (type, code)``."""
    tags = ", ".join(str(t) for t in (kind, code) if t not in (None, ""))
    return f"{provider} stream error: {message or 'no message'}" + (f" ({tags})" if tags else "")


class Normalizer:
    """Base class: subclasses implement :meth:`_receive_one` for their provider's events."""

    provider_format: str = ""
    terminator: str = ""

    def __init__(self, *, session: str, provider: str, model: str) -> None:
        self.session = session
        self.provider = provider
        self.model = model
        self._seq = 0
        self._started = False
        self._stopped = False
        self._raw_reason: str | None = None
        self._in_tokens: int | None = None
        self._out_tokens: int | None = None
        self._cached_tokens: int | None = None
        self._reasoning_tokens: int | None = None
        self._have_usage = False
        self._attempts = 0
        self._attempt_seq = 0
        self._content = 0  # content events (delta, tool_delta) emitted, across attempts
        self.provider_error: frozenset[str] = frozenset()
        """The ``type`` and ``code`` of an in-stream provider error that ended the session."""

    # -- the session's life cycle -------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """True once ``stop`` was emitted; the normalizer accepts nothing more."""
        return self._stopped

    @property
    def content_seen(self) -> bool:
        """True once a ``delta`` or ``tool_delta`` was emitted: from then on, never retry."""
        return self._content > 0

    @property
    def content_events(self) -> int:
        """How many ``delta`` and ``tool_delta`` events were emitted so far."""
        return self._content

    @property
    def attempts(self) -> int:
        """How many times :meth:`begin_attempt` was called."""
        return self._attempts

    def begin_attempt(self) -> None:
        """A new HTTP attempt begins: forget the last one, and count it for ``stop.attempts``."""
        if not self._started:
            raise LocalProtocolError("begin_attempt() before start()")
        self._rewind()
        self._attempts += 1

    def abandon_attempt(self) -> None:
        """Forget the current attempt without starting another (its events were never
        published): the session is open again, so a cancellation can still end it."""
        if self._attempts:
            self._rewind()

    def _rewind(self) -> None:
        """Forget whatever the current attempt said (the caller published none of it).

        Allowed only while no content was emitted: what a failed attempt produced before
        content (at most a ``usage`` and an error ``stop``) is discarded by the caller, so the
        numbering continues from where the first attempt began, without a gap.
        """
        if self._content:
            raise LocalProtocolError("cannot retry a session after content was emitted")
        if self._attempts == 0:
            self._attempt_seq = self._seq
        self._seq = self._attempt_seq
        self._stopped = False
        self._raw_reason = None
        self._in_tokens = self._out_tokens = self._cached_tokens = self._reasoning_tokens = None
        self._have_usage = False
        self.provider_error = frozenset()
        self._reset_attempt()

    def start(
        self,
        *,
        host: str | None = None,
        started_at: str | None = None,
        request: dict[str, Any] | None = None,
        conversation: str | None = None,
        turn: int = 0,
    ) -> Start:
        """The session's first event, at ``t_ns`` 0: the moment the request is sent.

        The caller supplies what a pure object cannot know: where, when, and what was sent.
        """
        if self._started:
            raise LocalProtocolError("start() called twice")
        self._started = True
        return Start(
            session=self.session,
            seq=self._next(),
            t_ns=0,
            provider=self.provider,
            model=self.model,
            host=host,
            started_at=started_at,
            request=request,
            conversation=conversation,
            turn=turn,
        )

    def tool_result(
        self,
        t_ns: int,
        *,
        index: int,
        id: str | None,
        name: str | None,
        content: str,
        error: str | None,
        duration_ns: int,
    ) -> ToolResult:
        """A ``tool_result`` of this session (published by the caller right after ``start``)."""
        if not self._started or self._stopped or self._attempts:
            raise LocalProtocolError("tool results belong after start, before any attempt")
        return ToolResult(
            session=self.session,
            seq=self._next(),
            t_ns=t_ns,
            index=index,
            id=id,
            name=name,
            content=content,
            error=error,
            duration_ns=duration_ns,
        )

    def receive(self, events: list[ServerSentEvent], t_ns: int) -> list[Event]:
        """Normalize everything one network read produced. Events after ``stop`` are dropped."""
        if not self._started:
            raise LocalProtocolError("receive() before start()")
        out: list[Event] = []
        for sse in events:
            if self._stopped:
                break
            self._receive_one(sse, t_ns, out)
        return out

    def end_of_stream(self, t_ns: int, *, mid_event: bool = False) -> list[Event]:
        """The body ended. Without the terminator that is an error: the stream was cut.

        ``mid_event``: the SSE decoder still held part of an event (``SSEDecoder.truncated``).
        """
        if self._stopped:
            return []
        where = "mid-event, before" if mid_event else "before"
        error = f"stream ended {where} {self.terminator}"
        return self._finish("error", t_ns, error=error, error_kind="truncated")

    def fail(self, error: str, t_ns: int, kind: ErrorKind) -> list[Event]:
        """End the session with reason ``error`` (transport failure, bad bytes, timeout)."""
        if self._stopped:
            return []
        return self._finish("error", t_ns, error=error, error_kind=kind)

    def cancel(self, t_ns: int) -> list[Event]:
        """End the session with reason ``cancelled`` (Ctrl-C, a cancel scope, a stop button)."""
        if self._stopped:
            return []
        return self._finish("cancelled", t_ns)

    # -- helpers for subclasses ---------------------------------------------------------------

    def _receive_one(self, sse: ServerSentEvent, t_ns: int, out: list[Event]) -> None:
        raise NotImplementedError

    def _reset_attempt(self) -> None:
        """Subclasses forget their per-stream state here (nothing of it was published)."""

    def _next(self) -> int:
        seq = self._seq
        self._seq = seq + 1
        return seq

    def _delta(
        self, text: str, t_ns: int, channel: Channel = "text", signature: str | None = None
    ) -> Delta:
        self._content += 1
        return Delta(
            session=self.session,
            seq=self._next(),
            t_ns=t_ns,
            text=text,
            channel=channel,
            signature=signature,
        )

    def _tool_delta(
        self, index: int, t_ns: int, *, id: str | None, name: str | None, arguments: str
    ) -> ToolDelta:
        self._content += 1
        return ToolDelta(
            session=self.session,
            seq=self._next(),
            t_ns=t_ns,
            index=index,
            id=id,
            name=name,
            arguments=arguments,
        )

    def _set_usage(
        self,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_tokens: int | None = None,
        reasoning_tokens: int | None = None,
    ) -> None:
        """Remember the newest counts; one ``usage`` event goes out just before ``stop``."""
        self._have_usage = True
        if input_tokens is not None:
            self._in_tokens = input_tokens
        if output_tokens is not None:
            self._out_tokens = output_tokens
        if cached_tokens is not None:
            self._cached_tokens = cached_tokens
        if reasoning_tokens is not None:
            self._reasoning_tokens = reasoning_tokens

    def _finish(
        self,
        reason: StopReason,
        t_ns: int,
        *,
        raw_reason: str | None = None,
        error: str | None = None,
        error_kind: ErrorKind | None = None,
    ) -> list[Event]:
        """Emit the pending usage (so a cut stream keeps it) and the one final ``stop``."""
        out: list[Event] = []
        if self._have_usage:
            out.append(
                Usage(
                    session=self.session,
                    seq=self._next(),
                    t_ns=t_ns,
                    input_tokens=self._in_tokens,
                    output_tokens=self._out_tokens,
                    cached_tokens=self._cached_tokens,
                    reasoning_tokens=self._reasoning_tokens,
                )
            )
        out.append(
            Stop(
                session=self.session,
                seq=self._next(),
                t_ns=t_ns,
                reason=reason,
                raw_reason=raw_reason if raw_reason is not None else self._raw_reason,
                error=error,
                error_kind=error_kind,
                attempts=max(self._attempts, 1),
            )
        )
        self._stopped = True
        return out
