"""The five ways a stream can take too long, each with its own budget and its own name.

- ``connect``: opening the connection (TCP and TLS).
- ``first_token``: from sending the request to the first content event (``delta`` or
  ``tool_delta``). Generous by default: reasoning models think for minutes before they speak.
- ``idle``: no bytes at all for this long, in any phase (waiting for the headers included).
- ``stall``: once content has begun, no content event for this long. Keep-alive comments and
  ``ping`` events are bytes but not content, so they do not reset it: a stream kept "alive" by
  pings ends here instead of hanging for hours.
- ``total``: the whole session, every attempt and back-off included.

``None`` turns a budget off. Each one that fires ends the session with a ``stop`` of reason
``error`` whose ``error_kind`` names it (``connect_timeout``, ``first_token_timeout``, …).

:class:`Watchdog` turns idle, first-token and stall into one cancel scope's deadline, moved as
bytes and content arrive: no extra task, no timer per chunk.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import msgspec
import trio

from streambus.events import ErrorKind

__all__ = ["DEFAULT_TIMEOUTS", "Timeouts", "Watchdog"]


class Timeouts(msgspec.Struct, frozen=True, kw_only=True):
    """Seconds for each budget; ``None`` for no limit. See the module docstring."""

    connect: float | None = 10.0
    first_token: float | None = 600.0
    idle: float | None = 600.0
    stall: float | None = 120.0
    total: float | None = None

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"the {name} timeout must be a positive number of seconds")


DEFAULT_TIMEOUTS: Final = Timeouts()


def _limit(value: float | None) -> float:
    return math.inf if value is None else value


class Watchdog:
    """One attempt's idle, first-token and stall deadlines as one cancel scope's deadline.

    The caller runs the attempt inside :attr:`scope` and reports what arrives: :meth:`on_bytes`
    for every network read, :meth:`on_content` when a read held content. When the scope's
    deadline passes, :meth:`fired` says which budget ran out, in one line.

    Moving a trio deadline costs more than the rest of a read's bookkeeping, so the exact
    deadlines are plain floats and the scope's is moved only when they overtake it: armed a
    little late (by at most 5 % of the smallest budget, and 0.25 s), never early.
    """

    __slots__ = (
        "_armed",
        "_content_at",
        "_first_token",
        "_idle",
        "_idle_at",
        "_slack",
        "_stall",
        "content_seen",
        "host",
        "scope",
        "timeouts",
    )

    def __init__(self, timeouts: Timeouts, host: str, now: float) -> None:
        """``now`` is when the attempt began: the request is about to be sent."""
        self.timeouts = timeouts
        self.host = host
        self.content_seen = False
        self._idle = _limit(timeouts.idle)
        self._first_token = _limit(timeouts.first_token)
        self._stall = _limit(timeouts.stall)
        self._slack = min(0.25, 0.05 * min(self._idle, self._first_token, self._stall))
        self._idle_at = now + self._idle
        self._content_at = now + self._first_token
        self._armed = math.inf
        self.scope = trio.CancelScope()
        self._arm()

    def _arm(self) -> None:
        self._armed = min(self._idle_at, self._content_at) + self._slack
        self.scope.deadline = self._armed

    def on_bytes(self, now: float) -> None:
        """Bytes arrived (any bytes: a keep-alive counts here, nowhere else)."""
        self._idle_at = now + self._idle
        if self._idle_at > self._armed and self._content_at > self._armed:
            self._arm()

    def on_content(self, now: float) -> None:
        """A content event arrived: the stall budget starts again."""
        self.content_seen = True
        self._content_at = content_at = now + self._stall
        exact = min(self._idle_at, content_at)
        if exact > self._armed or exact + self._slack < self._armed:  # stall < first token
            self._arm()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No budget runs while the block runs (publishing to a slow subscriber: that is not
        the server's silence); the deadlines move by however long it took."""
        started = trio.current_time()
        self.scope.deadline = math.inf
        try:
            yield
        finally:
            took = trio.current_time() - started
            self._idle_at += took
            self._content_at += took
            self._arm()

    def fired(self) -> tuple[ErrorKind, str]:
        """Which budget ran out (the earlier deadline), as an error kind and a message."""
        t = self.timeouts
        if self._idle_at <= self._content_at:
            return "idle_timeout", f"idle timeout: {self.host} sent no bytes for {t.idle:g} s"
        if self.content_seen:
            return (
                "stall_timeout",
                f"stall timeout: no content from {self.host} for {t.stall:g} s "
                "(keep-alives do not count)",
            )
        return (
            "first_token_timeout",
            f"first-token timeout: no content from {self.host} within {t.first_token:g} s "
            "of the request",
        )
