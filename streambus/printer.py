"""Console subscribers: human text as it arrives, or the public JSON form one event per line.

Both buffer and write at most every ``flush_interval`` seconds (and at ``stop``): a fast stream
costs one write per interval, not one syscall per token, while a live stream still looks live.

Where things go, so that ``streambus run … > answer.txt`` keeps just the answer: the answer
text (and a refusal) on stdout; reasoning, tool-call fragments and the closing summary on
stderr. On a terminal both interleave in order, reasoning dimmed; when a stream is not a
terminal it gets plain text, no escape codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from itertools import groupby
from operator import itemgetter
from typing import IO, Final

from streambus.events import (
    Delta,
    Event,
    Stop,
    ToolDelta,
    ToolResult,
    Usage,
    encode_event,
    one_session,
)
from streambus.latency import is_content
from streambus.message import Message

__all__ = ["ConsolePrinter", "JsonlPrinter", "format_summary"]

_DIM: Final = "\x1b[2m"
_CYAN: Final = "\x1b[36m"
_YELLOW: Final = "\x1b[33m"
_RED: Final = "\x1b[31m"
_RESET: Final = "\x1b[0m"
_RESULT_WIDTH: Final = 160


def _wants_color(stream: IO[str]) -> bool:
    """A terminal, unless NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_summary(msg: Message) -> str:
    """``stop (end_turn) · 12 in / 111 out tokens · TTFT 0.31 s · 2.45 s · 45.3 tok/s``."""
    parts: list[str] = []
    if msg.stop is not None:
        stop = msg.stop
        raw = f" ({stop.raw_reason})" if stop.raw_reason and stop.raw_reason != stop.reason else ""
        parts.append(f"{stop.reason}{raw}")
    if msg.usage is not None:
        u = msg.usage
        parts.append(f"{_n(u.input_tokens)} in / {_n(u.output_tokens)} out tokens")
    if msg.ttft_s is not None:
        parts.append(f"TTFT {msg.ttft_s:.2f} s")
    if msg.duration_s is not None:
        parts.append(f"{msg.duration_s:.2f} s")
    if msg.tokens_per_second is not None:
        parts.append(f"{msg.tokens_per_second:.1f} tok/s")
    return " · ".join(parts)


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


class ConsolePrinter:
    """Prints a stream for people. Subscribe it to a bus: ``bus.subscribe(ConsolePrinter())``."""

    flush_interval: float = 0.05
    delivery_window: float = 0.005
    """Woken at most every 5 ms, taking everything published meanwhile (docs/subscribers.md)."""

    def __init__(
        self,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        *,
        color: bool | None = None,
        summary: bool = True,
    ) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.color_out = _wants_color(self.out) if color is None else color
        self.color_err = _wants_color(self.err) if color is None else color
        self.summary = summary
        # (id(stream), style, text): no object in it that the garbage collector tracks, so
        # the collector stops looking at a pending piece once it has seen it (one per token).
        self._pending: list[tuple[int, str, str]] = []
        self._streams = {id(self.out): self.out, id(self.err): self.err}
        self._mode: str | None = None  # "text", "reasoning", "refusal", "tool:N"
        self._at_line_start = {id(self.out): True, id(self.err): True}
        self._summaries: dict[str, Message] = {}  # by session, until its stop

    # -- the subscriber protocol --------------------------------------------------------------

    def on_events(self, batch: Sequence[Event]) -> None:
        self._track(batch)  # first: a stop's summary reads its session's figures
        out, pending = id(self.out), self._pending
        for event in batch:
            if type(event) is Delta:
                text = event.text
                if text and event.channel == "text" and self._mode == "text":
                    pending.append((out, "", text))  # the common case, inline: one per token
                    self._at_line_start[out] = text.endswith("\n")
                else:
                    self._on_delta(event)
            elif type(event) is ToolDelta:
                self._on_tool_delta(event)
            elif type(event) is ToolResult:
                self._on_tool_result(event)
            elif type(event) is Stop:
                self._on_stop(event)

    def _track(self, batch: Sequence[Event]) -> None:
        """Note what each session's summary needs: its first content's time, its usage and
        its stop. Not its text, which is printed as it comes (the stream keeps the message)."""
        summaries = self._summaries
        session = one_session(batch)
        if session is None:  # sessions mixed in one batch: event by event
            for event in batch:
                summary = summaries.get(event.session)
                if summary is None:
                    summary = summaries[event.session] = Message(session=event.session)
                _note(summary, event)
            return
        summary = summaries.get(session)
        if summary is None:
            summary = summaries[session] = Message(session=session)
        if summary.first_content_ns is not None and _ENDING.isdisjoint(map(type, batch)):
            return  # tokens mid-stream, the usual batch: nothing new for the summary
        for event in batch:
            _note(summary, event)

    def flush(self) -> None:
        """Write everything pending, in order: one write per run of the same stream, one
        escape sequence per run of the same style (not one per token)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        writes: list[tuple[IO[str], list[str]]] = []
        for (stream_id, style), run in groupby(pending, key=itemgetter(0, 1)):
            items = list(run)
            stream = self._streams[stream_id]
            text = self._styled(stream, style, [item[2] for item in items])
            if writes and writes[-1][0] is stream:
                writes[-1][1].append(text)
            else:
                writes.append((stream, [text]))
        for stream, parts in writes:
            stream.write("".join(parts))
            stream.flush()

    def _styled(self, stream: IO[str], style: str, parts: list[str]) -> str:
        text = "".join(parts)
        color = self.color_out if stream is self.out else self.color_err
        if not (style and color):
            return text
        body, newline = (text[:-1], "\n") if text.endswith("\n") else (text, "")
        return f"{style}{body}{_RESET}{newline}"  # the reset before a final newline

    # -- rendering ----------------------------------------------------------------------------

    def _write(self, stream: IO[str], text: str, style: str = "") -> None:
        if not text:
            return
        self._pending.append((id(stream), style, text))
        self._at_line_start[id(stream)] = text.endswith("\n")

    def _newline(self, stream: IO[str]) -> None:
        if not self._at_line_start[id(stream)]:
            self._write(stream, "\n")

    def _enter(self, mode: str, stream: IO[str], header: str = "", style: str = "") -> None:
        """Switch what we are printing; a new kind of content starts on a fresh line."""
        if self._mode == mode:
            return
        previous, self._mode = self._mode, mode
        if previous is not None:
            self._newline(self.out)
            self._newline(self.err)
        if header:
            self._write(stream, header, style)

    def _on_delta(self, event: Delta) -> None:
        if not event.text:
            return
        if event.channel == "text":
            self._enter("text", self.out)
            self._write(self.out, event.text)
        elif event.channel == "reasoning":
            self._enter("reasoning", self.err, "[thinking] ", _DIM)
            self._write(self.err, event.text, _DIM)
        else:
            self._enter("refusal", self.out, "[refusal] ", _YELLOW)
            self._write(self.out, event.text, _YELLOW)

    def _on_tool_delta(self, event: ToolDelta) -> None:
        header = f"[tool call {event.index}] {event.name or ''} "
        self._enter(f"tool:{event.index}", self.err, header, _CYAN)
        self._write(self.err, event.arguments, _CYAN)

    def _on_tool_result(self, event: ToolResult) -> None:
        """``[tool result 0] get_weather · 12 ms: {"temp": …}``, abbreviated to one line."""
        content = " ".join(event.content.split())
        if len(content) > _RESULT_WIDTH:
            content = content[: _RESULT_WIDTH - 1] + "…"
        failed = f" · {event.error}" if event.error else ""
        head = f"[tool result {event.index}] {event.name or ''} · {event.duration_ns / 1e6:.0f} ms"
        self._enter(f"result:{event.index}", self.err)
        self._write(self.err, f"{head}{failed}: {content}\n", _RED if event.error else _CYAN)

    def _on_stop(self, event: Stop) -> None:
        summary = self._summaries.pop(event.session, None)
        if summary is None:  # a second stop in one batch: the first took the summary
            summary = Message(session=event.session, stop=event)
        self._mode = None
        self._newline(self.out)
        self._newline(self.err)
        if self.summary:
            style = _RED if event.reason == "error" else _DIM
            self._write(self.err, f"[{format_summary(summary)}]\n", style)
        self.flush()


_ENDING: Final = frozenset({Usage, Stop})


def _note(summary: Message, event: Event) -> None:
    if summary.first_content_ns is None and is_content(event):
        summary.first_content_ns = event.t_ns
    if type(event) is Usage:
        summary.usage = event
    elif type(event) is Stop:
        summary.stop = event


class JsonlPrinter:
    """Prints every event in its public JSON form, one per line (``--format jsonl``)."""

    flush_interval: float = 0.05
    delivery_window: float = 0.005
    """Woken at most every 5 ms, taking everything published meanwhile (docs/subscribers.md)."""

    def __init__(self, out: IO[bytes] | None = None) -> None:
        self.out = out if out is not None else sys.stdout.buffer
        self._pending: list[bytes] = []

    def on_events(self, batch: Sequence[Event]) -> None:
        pending = self._pending
        for event in batch:
            pending.append(encode_event(event))
            if isinstance(event, Stop):
                self.flush()

    def flush(self) -> None:
        if self._pending:
            self._pending.append(b"")
            self.out.write(b"\n".join(self._pending))
            self.out.flush()
            self._pending = []
