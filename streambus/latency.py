"""Latency figures of one session, computed incrementally from its events. Pure: no I/O.

The definitions are written out in docs/latency.md. In short: a *content event* is a
``delta`` with text (any channel) or a ``tool_delta``; TTFT is the first one's ``t_ns``;
ITL is every gap between consecutive content events; TPOT is (last content − TTFT) /
(output tokens − 1); tokens per second is output tokens / (last content − TTFT): the decode
phase ends with the last content, not with the usage chunk and terminator after it.

The recorder and ``streambus import`` both use :class:`LatencyTracker`, so a session's
stored figures never depend on how it entered the database.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence

import msgspec

from streambus.events import Delta, Event, Start, Stop, ToolDelta, Usage

__all__ = ["LatencyTracker", "SessionFigures", "is_content", "percentile"]


def is_content(event: Event) -> bool:
    """Whether an event carries generated content (what TTFT and ITL measure)."""
    if type(event) is Delta:
        return bool(event.text)
    return type(event) is ToolDelta


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), ``p`` in [0, 100]."""
    n = len(sorted_values)
    if n == 0:
        return None
    rank = (n - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, n - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


class SessionFigures(msgspec.Struct, kw_only=True):
    """One session's latency, in nanoseconds unless the name says otherwise."""

    ttft_ns: int | None = None
    e2e_ns: int | None = None
    content_events: int = 0
    itl_mean_ns: float | None = None
    itl_p50_ns: float | None = None
    itl_p90_ns: float | None = None
    itl_p99_ns: float | None = None
    itl_max_ns: int | None = None
    tpot_ns: float | None = None
    tokens_per_s: float | None = None


class LatencyTracker:
    """Feed one session's events in order; :meth:`add` gives each content event's ITL gap.

    It also keeps the session's ``start``, ``usage`` and ``stop`` and counts its events:
    the recorder's per-session state is a tracker, so a recorded event costs one call.
    """

    def __init__(self) -> None:
        self.events = 0
        self.start: Start | None = None
        self.usage: Usage | None = None
        self.stop: Stop | None = None
        self._first: int | None = None
        self._last: int | None = None
        # 8 bytes a gap, not a list slot and an int object (36): one per token, per session.
        self._gaps = array("q")

    def add(self, event: Event) -> int | None:
        """Account for ``event``; return its gap to the previous content event, if any."""
        self.events += 1
        gap = None
        if (type(event) is Delta and event.text) or type(event) is ToolDelta:  # is_content, inline
            t = event.t_ns
            if self._last is None:
                self._first = t
            else:
                gap = t - self._last
                self._gaps.append(gap)
            self._last = t
        elif type(event) is Usage:
            self.usage = event
        elif type(event) is Stop:
            self.stop = event
        elif type(event) is Start:
            self.start = event
        return gap

    def add_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.add(event)

    def gaps(self) -> array[int]:
        """Every ITL gap so far, in order (the tracker's own array: do not change it)."""
        return self._gaps

    def figures(self) -> SessionFigures:
        gaps = sorted(self._gaps)
        ttft = self._first
        end = None if self.stop is None else self.stop.t_ns
        tokens = None if self.usage is None else self.usage.output_tokens
        decode = self._last - ttft if self._last is not None and ttft is not None else None
        tpot = tps = None
        if decode is not None and tokens is not None and tokens >= 2 and decode > 0:
            tpot = decode / (tokens - 1)
            tps = tokens / (decode / 1e9)
        return SessionFigures(
            ttft_ns=ttft,
            e2e_ns=end,
            content_events=len(gaps) + (ttft is not None),
            itl_mean_ns=sum(gaps) / len(gaps) if gaps else None,
            itl_p50_ns=percentile(gaps, 50),
            itl_p90_ns=percentile(gaps, 90),
            itl_p99_ns=percentile(gaps, 99),
            itl_max_ns=gaps[-1] if gaps else None,
            tpot_ns=tpot,
            tokens_per_s=tps,
        )
