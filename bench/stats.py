"""How long ``streambus stats`` takes over a large recordings database.

A wrapper of ``bench/stats_bench.py`` for the runner: its ``build`` makes a database of
synthetic sessions of 100 events (full: 100,000 sessions, 10 million events, which takes
minutes to build; quick: 200 sessions; ``BENCH_STATS_SESSIONS`` overrides the full size),
then each of its ``CASES`` (the aggregations the CLI runs: everything, ``--by model``,
``--by provider``, one provider, every status) is timed by its ``timed``, repeatedly,
interleaved. Quick mode also runs its ``check`` (pooled ITL percentiles against a full sort).
Issue 6's target: under 10 s over 10 million events.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Result
from bench.stats_bench import CASES, build, check, timed
from streambus.db import open_db

EVENTS = 100
TARGET_S = 10.0


def run(quick: bool) -> list[Result]:
    sessions = 200 if quick else int(os.environ.get("BENCH_STATS_SESSIONS", 100_000))
    reps = 3
    group = "stats over recordings"
    times: dict[str, list[float]] = {label: [] for label, _, _ in CASES}
    with tempfile.TemporaryDirectory(prefix="bench-stats-") as tmp:
        path = Path(tmp) / "stats.db"
        began = time.perf_counter()
        build(path, sessions, EVENTS)
        built = time.perf_counter() - began
        size_mb = path.stat().st_size / 1e6
        db = open_db(path)
        with contextlib.redirect_stdout(sys.stderr):  # its progress lines, not our table
            for _ in range(reps):
                for label, selection, by in CASES:
                    times[label].append(timed(label, db, selection, by))
            if quick:
                check(db)
        db.conn.close()
    total = sessions * EVENTS
    results = [
        Result(
            group,
            "build (executemany)",
            "s",
            built,
            built,
            built,
            {"sessions": sessions, "events": total, "db_MB": round(size_mb)},
        )
    ]
    for label, values in times.items():
        median = statistics.median(values)
        # The target is for 10M events; scale it to the size measured.
        budget = TARGET_S * total / 10_000_000
        extra = {"events": total, "µs/event": median / total * 1e6}
        if not quick:
            extra.update(target=f"<{budget:.3g} s", met="yes" if median < budget else "NO")
        results.append(Result(group, label, "s", median, min(values), max(values), extra))
    return results
