"""Incremental, sans-I/O decoder for Server-Sent Events (``text/event-stream``).

Bytes go in through :meth:`SSEDecoder.feed`, finished events come out; there are no sockets,
clocks or tasks here, so the same object serves trio, tests and replays. The rules are WHATWG
HTML's "event stream interpretation". Why it is shaped this way:

* UTF-8 is decoded by one incremental decoder, so a character split between two network reads
  (Korean text) survives. A BOM is dropped only if it is the very first character decoded.
* Lines end in LF, CR or CRLF. Only those: ``str.splitlines`` would also split on U+2028 and
  friends. A CR that ends one chunk is remembered, so an LF that starts the next one is not a
  second line ending.
* The work is per chunk and per line, with ``str`` methods that run in C (``split``,
  ``partition``, ``replace`` only when the chunk holds a CR); there is no per-character loop.
  An unfinished line is kept as a list of pieces and joined once, when it ends.
* Memory is bounded: a line (finished or not) plus the data its event already holds may not
  exceed ``max_event_size`` UTF-8 bytes, so an endless line fails once it passes the limit.
* Errors follow h11: the peer's fault is :class:`~streambus.errors.RemoteProtocolError` and the
  decoder stays broken; a caller's misuse is :class:`~streambus.errors.LocalProtocolError`.
  Events that were complete before the offending byte are still returned first; the error is
  then raised by the next call. So how the bytes were split never changes what comes out.
"""

from __future__ import annotations

import codecs
from typing import Final, Literal

import msgspec

from streambus.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["SSEDecoder", "ServerSentEvent"]

_MIB: Final = 1024 * 1024
_utf8_decode: Final = codecs.utf_8_decode
_RETRY_DIGITS: Final = 18  # retry values with more significant digits are ignored


class ServerSentEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched event."""

    event: str = "message"
    """The ``event:`` field, or ``"message"`` when none (or an empty one) was given."""
    data: str = ""
    """The ``data:`` lines of the event, joined with ``"\\n"``."""
    id: str | None = None
    """The last event ID in force at dispatch: ``id:`` persists across events, per spec."""
    retry: int | None = None
    """The ``retry:`` value (milliseconds) set within this event's block, if any."""


def _format_size(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _measure(size: int, unmeasured: list[str]) -> int:
    """Swap the estimate (4 bytes a character) of ``unmeasured`` in ``size`` for the truth."""
    for value in unmeasured:
        size += len(value.encode()) - (len(value) << 2)
    unmeasured.clear()
    return size


class SSEDecoder:
    """Turns the bytes of an event stream into :class:`ServerSentEvent` objects.

    Call :meth:`feed` with each chunk as it arrives and :meth:`close` at the end of input.
    With ``errors="strict"`` invalid UTF-8 is a :class:`RemoteProtocolError`; with
    ``"replace"`` it becomes U+FFFD, as the spec says. An event too big for
    ``max_event_size`` is a :class:`RemoteProtocolError` too. Once raised, every later call
    raises it again; if the chunk also completed earlier events, those are returned first
    and the next call raises.
    """

    __slots__ = (
        "_at_start",
        "_closed",
        "_comments",
        "_cr",
        "_data",
        "_data_size",
        "_error",
        "_errors",
        "_event_id",
        "_event_retry",
        "_event_type",
        "_in_block",
        "_last_event_id",
        "_limit",
        "_limit_message",
        "_offset",
        "_partial",
        "_partial_size",
        "_pending",
        "_retry",
        "_truncated",
        "_unmeasured",
    )

    def __init__(
        self,
        *,
        max_event_size: int = 16 * _MIB,
        errors: Literal["strict", "replace"] = "strict",
    ) -> None:
        if max_event_size < 1:
            raise ValueError(f"max_event_size must be positive, not {max_event_size}")
        if errors not in ("strict", "replace"):
            raise ValueError(f"errors must be 'strict' or 'replace', not {errors!r}")
        self._limit = max_event_size
        self._limit_message = f"SSE event exceeds the {_format_size(max_event_size)} limit"
        self._errors = errors
        self._pending = b""  # the start of a UTF-8 sequence the last chunk cut in two
        self._offset = 0  # bytes fed so far, for error messages
        self._at_start = True  # nothing decoded yet: a BOM may still come
        self._cr = False  # the text so far ended in CR: an LF that comes next is not a line
        self._partial: list[str] = []  # pieces of the unfinished line
        self._partial_size = 0  # its size in UTF-8 bytes
        self._data: list[str] = []  # data lines of the current event
        # UTF-8 size of the data lines joined with "\n". Encoding a non-ASCII line just to
        # count it is slow, so such lines count 4 bytes a character (an upper bound) and are
        # measured, once each, only when that estimate reaches the limit.
        self._data_size = 0
        self._unmeasured: list[str] = []
        self._event_type = ""
        self._event_retry: int | None = None
        self._event_id: str | None = None  # the spec's "last event ID buffer"
        self._in_block = False  # a field line was seen since the last blank line
        self._last_event_id: str | None = None
        self._retry: int | None = None
        self._comments = 0
        self._error: str | None = None  # set once the peer broke the rules; then we stay broken
        self._closed = False
        self._truncated = False

    @property
    def truncated(self) -> bool:
        """After :meth:`close`: whether input ended in the middle of an event (it was cut)."""
        return self._truncated

    @property
    def last_event_id(self) -> str | None:
        """The last event ID as of the last blank line (what a reconnect would send)."""
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The last valid ``retry:`` value seen in the stream, in milliseconds."""
        return self._retry

    @property
    def comments(self) -> int:
        """How many comment lines (``: keep-alive``) were seen: proof the peer is alive."""
        return self._comments

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Decode a chunk; return every event it completed, in order."""
        if self._error is not None or self._closed:
            self._raise_if_unusable()
        pending = self._pending
        chunk = pending + data if pending else data
        try:
            # codecs' C function, not the incremental decoder: its wrapper is Python code
            text, used = _utf8_decode(chunk, self._errors, False)
        except UnicodeDecodeError as exc:
            # Keep what came before the bad byte, so its events are not lost.
            offset = self._offset - len(pending) + exc.start
            text = chunk[: exc.start].decode()
            self._offset += len(data)
            events = self._receive(text) if text else []
            if self._error is None:
                self._error = f"invalid UTF-8 in event stream at byte offset {offset}"
        else:
            self._pending = chunk[used:] if used != len(chunk) else b""
            self._offset += len(data)
            if not text:
                return []
            events = self._receive(text)
        if self._error is not None and not events:
            raise RemoteProtocolError(self._error)
        return events

    def close(self) -> list[ServerSentEvent]:
        """Mark the end of input.

        An event not ended by a blank line is discarded (per spec), so this returns ``[]``;
        :attr:`truncated` tells whether that happened. Closing twice is harmless.
        """
        if self._error is not None:
            raise RemoteProtocolError(self._error)
        if not self._closed:
            self._closed = True
            self._truncated = self._in_block or bool(self._partial) or bool(self._pending)
            self._partial = []
            self._data = []
            self._unmeasured = []
        return []

    def _raise_if_unusable(self) -> None:
        if self._error is not None:
            raise RemoteProtocolError(self._error)
        if self._closed:
            raise LocalProtocolError("cannot feed an SSE decoder after close()")

    def _receive(self, text: str) -> list[ServerSentEvent]:
        """Split decoded text into lines and interpret the complete ones."""
        if self._at_start:
            self._at_start = False
            if text[0] == "\ufeff":
                text = text[1:]
        if self._cr:
            self._cr = False
            if text[:1] == "\n":
                text = text[1:]
        if "\r" in text:
            self._cr = text[-1] == "\r"
            text = text.replace("\r\n", "\n")
            if "\r" in text:
                text = text.replace("\r", "\n")
        lines = text.split("\n")
        tail = lines.pop()
        if not lines:  # no line ended in this chunk
            if tail:
                self._partial.append(tail)
                self._partial_size += _utf8_len(tail)
                self._check_size()
            return []
        if self._partial:
            lines[0] = "".join(self._partial) + lines[0]
            self._partial = []
        events = self._interpret(lines)
        if tail and self._error is None:
            self._partial.append(tail)
            self._partial_size = _utf8_len(tail)
            self._check_size()
        else:
            self._partial_size = 0
        return events

    def _check_size(self) -> None:
        if self._partial_size + self._data_size > self._limit:
            self._data_size = _measure(self._data_size, self._unmeasured)
            if self._partial_size + self._data_size > self._limit:
                self._error = self._limit_message

    def _interpret(self, lines: list[str]) -> list[ServerSentEvent]:
        """Apply the field rules to complete lines; stop at the first oversize one."""
        events: list[ServerSentEvent] = []
        limit = self._limit
        data = self._data
        data_size = self._data_size
        unmeasured = self._unmeasured
        event_type = self._event_type
        event_retry = self._event_retry
        event_id = self._event_id
        in_block = self._in_block
        comments = self._comments
        for line in lines:
            if not line:  # blank line: dispatch
                if data:
                    joined = data[0] if len(data) == 1 else "\n".join(data)
                    events.append(
                        ServerSentEvent(event_type or "message", joined, event_id, event_retry)
                    )
                    data = []
                    data_size = 0
                    unmeasured.clear()
                event_type = ""
                event_retry = None
                in_block = False
                self._last_event_id = event_id
                continue
            # The line was once the unfinished line: hold it to the same limit, whatever the
            # chunking. Cheap estimate first (a character is at most 4 bytes).
            if (len(line) << 2) + data_size > limit:
                data_size = _measure(data_size, unmeasured)
                if _utf8_len(line) + data_size > limit:
                    self._error = self._limit_message
                    break
            if line[:6] == "data: ":  # nearly every line: no partition, one copy fewer
                name = "data"
                value = line[6:]
            elif line[0] == ":":
                comments += 1
                continue
            else:
                name, _, value = line.partition(":")
                if value[:1] == " ":
                    value = value[1:]
            in_block = True
            if name == "data":
                if data:
                    data_size += 1
                if value.isascii():
                    data_size += len(value)
                else:
                    data_size += len(value) << 2
                    unmeasured.append(value)
                data.append(value)  # within the limit: the line holding it was
            elif name == "event":
                event_type = value
            elif name == "id":
                if "\0" not in value:
                    event_id = value
            elif (
                name == "retry"
                and value.isascii()
                and value.isdigit()
                and len(value.lstrip("0")) <= _RETRY_DIGITS  # else int() is slow, pointless
            ):
                event_retry = self._retry = int(value)
        self._data = data
        self._data_size = data_size
        self._event_type = event_type
        self._event_retry = event_retry
        self._event_id = event_id
        self._in_block = in_block
        self._comments = comments
        return events
