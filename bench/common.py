"""What every benchmark shares: repetitions, medians with their spread, the result table.

Every comparison is measured in the same process run, on the same bytes, so ratios mean
something on a noisy machine. A figure is the median of several repetitions; min and max show
the spread.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["Result", "arepeat", "machine", "measure", "repeat", "table"]


@dataclasses.dataclass
class Result:
    """One figure: ``median`` (with ``low``/``high``, the min and max over repetitions) in
    ``unit``; ``extra`` holds whatever else a reader needs (events, ratios, notes)."""

    group: str
    name: str
    unit: str
    median: float
    low: float
    high: float
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def measure(group: str, name: str, unit: str, samples: Iterable[float], **extra: Any) -> Result:
    values = list(samples)
    return Result(
        group, name, unit, statistics.median(values), min(values), max(values), dict(extra)
    )


def repeat(fn: Callable[[], Any], reps: int = 5, warmup: int = 1) -> list[float]:
    """Wall seconds of ``fn()`` for each of ``reps`` runs, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


async def arepeat(fn: Callable[[], Awaitable[Any]], reps: int = 5, warmup: int = 1) -> list[float]:
    """:func:`repeat` for a coroutine function, inside the caller's trio run."""
    for _ in range(warmup):
        await fn()
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - start)
    return out


def cpu_seconds() -> float:
    """This process's CPU time (user + system, every thread), for CPU-per-work figures.

    ``time.process_time`` rather than ``os.times``: the latter counts in clock ticks (10 ms),
    too coarse for the sub-second runs of ``--quick``."""
    return time.process_time()


def machine() -> dict[str, Any]:
    """Where the numbers were measured: docs/performance.md quotes it with every table."""
    versions = {}
    packages = (
        "streambus",
        "trio",
        "httpx2",
        "msgspec",
        "openai",
        "anthropic",
        "httpx-sse",
        "aiohttp",
    )
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def table(results: list[Result]) -> str:
    """A plain-text table, grouped, for the terminal and docs/performance.md."""
    lines = []
    for group in dict.fromkeys(r.group for r in results):
        lines.append(f"\n{group}")
        rows = [r for r in results if r.group == group]
        width = max(len(r.name) for r in rows)
        for r in rows:
            note = ", ".join(f"{k}={_fmt(v)}" for k, v in r.extra.items())
            lines.append(
                f"  {r.name:<{width}}  {_fmt(r.median):>10} {r.unit:<10} "
                f"[{_fmt(r.low)} – {_fmt(r.high)}]" + (f"  {note}" if note else "")
            )
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 100_000:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)
