"""Pictures of recorded sessions: token arrival over time, and the ITL distribution.

What is drawn is computed by :func:`trace` and :func:`histogram_bins`, which are pure. Only
:func:`draw` needs matplotlib, an optional extra (``pip install 'streambus[plot]'``): it is
imported there, on first use, so ``import streambus`` never pays for it, and the figure is
rendered by the Agg canvas (files only; no display, no pyplot global state).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

import msgspec

from streambus.db import read_events
from streambus.events import Event, Start
from streambus.latency import is_content

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["FORMATS", "INSTALL_HINT", "Trace", "draw", "histogram_bins", "load", "trace"]

FORMATS: Final = (".png", ".svg")
INSTALL_HINT: Final = (
    "plotting needs matplotlib, which is not installed: pip install 'streambus[plot]'"
)
_BINS: Final = 40
_LOG_RATIO: Final = 100.0  # gaps spanning more than this factor get a log axis


class Trace(msgspec.Struct, frozen=True, kw_only=True):
    """One session as drawn: when each content event arrived, and the gaps between them."""

    session: str
    label: str
    arrivals_s: list[float]
    """Seconds since the request, per content event (docs/latency.md)."""
    gaps_ms: list[float]


def trace(session: str, events: Iterable[Event]) -> Trace:
    """The arrival times and ITL gaps of one session's events."""
    model = None
    times: list[int] = []
    for event in events:
        if type(event) is Start:
            model = event.model
        elif is_content(event):
            times.append(event.t_ns)
    return Trace(
        session=session,
        label=f"{model or '?'} {session[:12]}",
        arrivals_s=[t / 1e9 for t in times],
        gaps_ms=[(b - a) / 1e6 for a, b in itertools.pairwise(times)],
    )


def load(db: sqlite_utils.Database, sessions: Sequence[str]) -> list[Trace]:
    """Traces of recorded sessions (full ids: resolve prefixes with ``db.find_session``)."""
    return [trace(session, read_events(db, session)) for session in sessions]


def histogram_bins(gaps_ms: Sequence[float]) -> tuple[list[float], bool]:
    """Bin edges for the gaps, and whether the axis is logarithmic.

    Log when the positive gaps span more than a factor of 100 (a stall among 10 ms gaps would
    otherwise squeeze everything into one bar); gaps of 0 (one network read) then go in the
    first bin.
    """
    positive = [g for g in gaps_ms if g > 0]
    if not positive:
        return [-0.5, 0.5], False
    low, high = min(positive), max(positive)
    if high / low > _LOG_RATIO:
        ratio = high / low
        return [low * ratio ** (i / _BINS) for i in range(_BINS + 1)], True
    low = min(gaps_ms)
    if high - low < 1e-3:  # one value: a bar of 1 µs around it
        low, high = low - 5e-4, high + 5e-4
    return [low + (high - low) * i / _BINS for i in range(_BINS + 1)], False


def draw(traces: Sequence[Trace], path: str | os.PathLike[str]) -> None:
    """Write the two-panel figure to ``path`` (.png or .svg). Raises ImportError without
    matplotlib (its message says how to install it), ValueError for another format."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot write {suffix or 'a file without extension'}: .png or .svg")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc

    figure = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    arrival, spread = figure.subplots(1, 2)
    colors = []
    for t in traces:
        xs = [0.0, *t.arrivals_s]
        ys = list(range(len(xs)))
        (line,) = arrival.step(xs, ys, where="post", label=t.label)
        colors.append(line.get_color())
    arrival.set_title("Token arrival")
    arrival.set_xlabel("seconds since the request")
    arrival.set_ylabel("content events received")
    arrival.set_xlim(left=0)
    arrival.set_ylim(bottom=0)
    arrival.yaxis.set_major_locator(MaxNLocator(integer=True))
    arrival.grid(alpha=0.3)
    if 1 < len(traces) <= 10:
        arrival.legend(fontsize="small", loc="lower right")  # curves rise to the upper left
    elif len(traces) == 1:
        arrival.set_title(f"Token arrival · {traces[0].label}")

    gaps = [g for t in traces for g in t.gaps_ms]
    spread.set_title(f"Inter-token latency ({len(gaps)} gaps)")
    spread.set_xlabel("gap between content events (ms)")
    spread.set_ylabel("gaps")
    spread.yaxis.set_major_locator(MaxNLocator(integer=True))
    spread.grid(alpha=0.3)
    if not gaps:
        spread.text(0.5, 0.5, "no gaps: fewer than two content events", ha="center", va="center")
    else:
        edges, log = histogram_bins(gaps)
        zeros = sum(g <= 0 for g in gaps)
        for t, color in zip(traces, colors, strict=True):
            if t.gaps_ms:
                values = [max(g, edges[0]) for g in t.gaps_ms] if log else t.gaps_ms
                spread.hist(values, bins=edges, color=color, alpha=0.45, histtype="stepfilled")
                spread.hist(values, bins=edges, color=color, histtype="step")
        if log:
            spread.set_xscale("log")
            if zeros:
                zero = "gaps of 0 ms (one network read) are" if zeros > 1 else "gap of 0 ms is"
                spread.set_xlabel(
                    f"gap between content events (ms, log; {zeros} {zero} in the first bar)"
                )
    figure.savefig(path, dpi=120)
