"""The Recorder: sustained events/s into SQLite, and what recording adds to the pipeline.

**Sustained throughput.** 100 concurrent sessions' events (``start``, one-token OpenAI text
deltas made by the real normalizer from simulator bytes, ``usage``, ``stop``) are prepared up
front, then published straight onto a bus whose only subscriber is a ``Recorder`` into a
fresh SQLite file: interleaved, each batch holding the next event of every session (100
streams each delivering a token), with a checkpoint per batch. Timed from the first publish
until the bus has closed, i.e. until the last row is committed; the rows are counted after.
Issue 6's target: ≥ 200,000 events/s.

**SQLite's floor.** The same rows (made by the recorder's own ``event_rows``), written
with nothing else in transactions of 10,000 rows put in key order as the recorder puts
them (``streambus.db.in_key_order``), 512 rows per ``insert …
values`` statement (the fastest way through Python's ``sqlite3`` measured here: one
``executemany`` step per row is ~15 % slower), into (a) a table keyed on ``(session_id,
seq)`` and nothing else, the least a per-event store needs, and (b) the recorder's schema
(``open_db``: since schema 5 the key alone, as (a); the gap index ``stats`` read until then
made it ~30 % slower), on connections that write as ``open_db``'s do
(``streambus.db.configure``). What SQLite itself sustains here, measured in the same run:
the recorder cannot write faster than (b), and no per-event SQLite store faster than (a).

**Slowdown.** The in-process pipeline of ``bench/e2e.py`` (bulk and live reads) with no
subscriber against the same with only a ``Recorder``: the ratio of wall times is what
recording costs a stream.
"""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench._canned import MODEL, openai_body, render_openai
from bench.common import Result, cpu_seconds, measure
from bench.e2e import CONFIG, run_pipeline
from streambus import Recorder, open_bus
from streambus.client import opening_events
from streambus.db import configure, event_rows, in_key_order, open_db
from streambus.events import Event
from streambus.normalizers.openai import OpenAINormalizer
from streambus.sse import SSEDecoder

SESSIONS = 100
TARGET = 200_000


def session_events(n: int, sessions: int) -> list[list[Event]]:
    """``sessions`` sessions of ``n`` content events each (plus start, usage, stop), made by
    the OpenAI normalizer from simulator bytes, ~15 ms apart."""
    sse = SSEDecoder().feed(render_openai(n))
    out = []
    for i in range(sessions):
        normalizer = OpenAINormalizer(session=f"{i:012x}{'b' * 12}", model=MODEL)
        body = openai_body(n)
        events = opening_events(
            normalizer, CONFIG, body, conversation=None, turn=0, tool_results=()
        )
        normalizer.begin_attempt()
        for k, one in enumerate(sse):
            events += normalizer.receive([one], 200_000_000 + k * 15_000_000)
        assert normalizer.stopped
        out.append(events)
    return out


def interleave(sessions: list[list[Event]]) -> list[tuple[Event, ...]]:
    """Batch ``k`` holds event ``k`` of every session that has one."""
    longest = max(len(events) for events in sessions)
    return [tuple(events[k] for events in sessions if k < len(events)) for k in range(longest)]


async def record(batches: list[tuple[Event, ...]], path: Path) -> tuple[float, float]:
    """Wall and CPU seconds from the first publish until everything is committed."""
    recorder = Recorder(path)
    try:
        cpu, wall = cpu_seconds(), time.perf_counter()
        async with open_bus() as bus:
            bus.subscribe(recorder)
            for batch in batches:
                await bus.publish(batch)
                await trio.lowlevel.checkpoint()
        return time.perf_counter() - wall, cpu_seconds() - cpu
    finally:
        recorder.db.conn.close()


async def sustained(n: int, reps: int) -> list[Result]:
    sessions = session_events(n, SESSIONS)
    batches = interleave(sessions)
    total = sum(len(events) for events in sessions)
    samples = []
    with tempfile.TemporaryDirectory(prefix="bench-recorder-") as tmp:
        for rep in range(reps + 1):
            path = Path(tmp) / f"rec{rep}.db"
            wall, cpu = await record(batches, path)
            # Closed here: an unclosed connection is closed by the garbage collector later,
            # with the final WAL checkpoint, inside the next repetition's timed region.
            with contextlib.closing(sqlite3.connect(path)) as conn:
                (rows,) = conn.execute("select count(*) from events").fetchone()
                (done,) = conn.execute(
                    "select count(*) from sessions where status = 'ok'"
                ).fetchone()
            assert (rows, done) == (total, SESSIONS), (rows, done)
            if rep:  # the first one warms up
                samples.append((wall, cpu))
    rates = [total / wall for wall, _ in samples]
    best = statistics.median(rates)
    return [
        Result(
            "recorder: sustained writes",
            f"{SESSIONS} sessions interleaved",
            "events/s",
            best,
            min(rates),
            max(rates),
            {
                "events": total,
                "cpu_µs": statistics.median(cpu / total * 1e6 for _, cpu in samples),
                "target": f"≥{TARGET:,}",
                "met": "yes" if best >= TARGET else "NO",
            },
        )
    ]


FLOOR_TRANSACTION = 10_000
_KEYED_ONLY = (
    "create table events (session_id text, seq integer, t_ns integer, type text,"
    " payload text, gap_ns integer, primary key (session_id, seq))"
)


FLOOR_STATEMENT = 512
_FLOOR_INSERT = "insert into events values " + ", ".join(["(?, ?, ?, ?, ?, ?)"] * FLOOR_STATEMENT)


def _bare_inserts(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """``rows`` in multi-row statements: whole statements, then the rest one by one."""
    whole = len(rows) - len(rows) % FLOOR_STATEMENT
    for i in range(0, whole, FLOOR_STATEMENT):
        conn.execute(_FLOOR_INSERT, [v for row in rows[i : i + FLOOR_STATEMENT] for v in row])
    conn.executemany("insert into events values (?, ?, ?, ?, ?, ?)", rows[whole:])


def sqlite_floor(n: int, reps: int) -> list[Result]:
    """Bare inserts of the recorder's rows: keyed table only, and our schema."""
    batches = interleave(session_events(n, SESSIONS))
    rows = event_rows([event for batch in batches for event in batch], {})
    out = []
    for name in ("keyed table only", "recorder schema"):
        rates = []
        with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp:
            for rep in range(reps + 1):
                path = Path(tmp) / f"floor{rep}.db"
                if name == "recorder schema":
                    open_db(path).conn.close()
                conn = sqlite3.connect(path)
                try:
                    configure(conn)  # as open_db's connections write
                    if name == "keyed table only":
                        conn.execute(_KEYED_ONLY)
                    wall = time.perf_counter()
                    for i in range(0, len(rows), FLOOR_TRANSACTION):
                        with conn:
                            _bare_inserts(conn, in_key_order(rows[i : i + FLOOR_TRANSACTION]))
                    wall = time.perf_counter() - wall
                finally:
                    conn.close()
                if rep:
                    rates.append(len(rows) / wall)
        out.append(
            measure(
                "recorder: sustained writes",
                f"floor: bare inserts, {name}",
                "events/s",
                rates,
                events=len(rows),
            )
        )
    return out


def slowdown(results: list[Result]) -> list[Result]:
    """Per read shape: pipeline with a Recorder / pipeline with nobody, as a ratio."""
    by_name = {r.name: r for r in results}
    out = []
    for shape in ("bulk", "live"):
        base, rec = by_name[f"{shape} · none"], by_name[f"{shape} · recorder"]
        extra: dict[str, Any] = {
            "none_µs": base.median,
            "recorder_µs": rec.median,
            "added_µs": rec.median - base.median,
        }
        out.append(
            Result(
                "recorder: slowdown of the pipeline",
                f"{shape}: recorder / none",
                "×",
                rec.median / base.median,
                rec.low / base.high,
                rec.high / base.low,
                extra,
            )
        )
    return out


def run(quick: bool) -> list[Result]:
    n, reps, pipeline_n = (50, 1, 1_000) if quick else (3_000, 3, 20_000)
    results = trio.run(sustained, n, reps) + sqlite_floor(n, reps)
    group = "recorder: pipeline (in process)"
    pipeline = trio.run(run_pipeline, ("none", "recorder"), pipeline_n, reps, 1, group)
    return results + pipeline + slowdown(pipeline)
