"""How long ``streambus stats`` takes over a large recordings database.

Builds a database of synthetic sessions (default 100,000 sessions of 100 events: 10 million
events, 9.6 million ITL gaps) straight through ``executemany`` (the bus would take hours),
with figures computed by the definitions in docs/latency.md, then times the statistics the
CLI computes: everything, grouped by model, and one provider's sessions.

    python bench/stats_bench.py                     # 100k sessions, temporary directory
    python bench/stats_bench.py --sessions 10000 --keep /tmp/stats.db
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree, not an install

from streambus.db import GAPS, open_db, pack_gaps
from streambus.latency import percentile
from streambus.stats import Selection, aggregate

PROVIDERS = {
    "openai": ["gpt-4o-mini", "gpt-4.1"],
    "anthropic": ["claude-sonnet-4-5", "claude-haiku-4-5"],
    "sim": ["sim-1"],
}
MODELS = [(p, m) for p, models in PROVIDERS.items() for m in models]
# Real payloads are JSON of about this size; stats never reads them, but they fill pages.
PAYLOAD = '{"type":"delta","session":"000000000000000000000000","seq":0,"t_ns":0,"text":"tok"}'


def session_rows(
    rng: random.Random, index: int, events: int
) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """One synthetic session: start, ``events - 3`` content deltas, usage, stop."""
    sid = f"{index:012x}{rng.getrandbits(48):012x}"
    provider, model = MODELS[index % len(MODELS)]
    content = events - 3
    ttft = int(rng.lognormvariate(19.3, 0.4))  # ~240 ms
    gaps = [int(rng.lognormvariate(16.5, 0.5)) for _ in range(content - 1)]  # ~15 ms
    if rng.random() < 0.02:  # a few sessions stall
        gaps[rng.randrange(len(gaps))] += 1_500_000_000
    rows: list[tuple[Any, ...]] = [(sid, 0, 0, "start", PAYLOAD, None)]
    t = ttft
    rows.append((sid, 1, t, "delta", PAYLOAD, None))
    for seq, gap in enumerate(gaps, start=2):
        t += gap
        rows.append((sid, seq, t, "delta", PAYLOAD, gap))
    end = t + 2_000_000
    tokens = content + rng.randrange(0, 20)
    rows.append((sid, content + 1, end, "usage", PAYLOAD, None))
    rows.append((sid, content + 2, end, "stop", PAYLOAD, None))
    status = rng.choices(["ok", "error", "cancelled"], [0.94, 0.04, 0.02])[0]
    ordered = sorted(gaps)
    started = 1_790_000_000 + index * 5
    session = {
        "id": sid,
        "provider": provider,
        "model": model,
        "host": "bench",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
        "status": status,
        "stop_reason": {"ok": "stop"}.get(status, status),
        "input_tokens": 20,
        "output_tokens": tokens,
        "events": events,
        "ttft_ns": ttft,
        "e2e_ns": end,
        "content_events": content,
        "itl_mean_ns": sum(gaps) / len(gaps),
        "itl_p50_ns": percentile(ordered, 50),
        "itl_p90_ns": percentile(ordered, 90),
        "itl_p99_ns": percentile(ordered, 99),
        "itl_max_ns": ordered[-1],
        "tpot_ns": (t - ttft) / (tokens - 1),  # decode: first to last content
        "tokens_per_s": tokens / ((t - ttft) / 1e9),
        GAPS: pack_gaps(ordered),  # what the recorder writes at a stop, in session_gaps
    }
    return session, rows


def build(path: Path, sessions: int, events: int, seed: int = 0) -> None:
    db = open_db(path)
    conn = db.conn
    conn.execute("pragma synchronous = off")
    rng = random.Random(seed)
    columns: list[str] = []
    for start in range(0, sessions, 2000):
        batch = [session_rows(rng, i, events) for i in range(start, min(start + 2000, sessions))]
        columns = columns or [c for c in batch[0][0] if c != GAPS]
        with conn:
            conn.executemany(
                f"insert into sessions ({', '.join(columns)}) "
                f"values ({', '.join('?' for _ in columns)})",
                [[s[c] for c in columns] for s, _ in batch],
            )
            conn.executemany(
                "insert into session_gaps (session_id, gaps_ns) values (?, ?)",
                [(s["id"], s[GAPS]) for s, _ in batch],
            )
            conn.executemany(
                "insert into events (session_id, seq, t_ns, type, payload, gap_ns) "
                "values (?, ?, ?, ?, ?, ?)",
                [row for _, rows in batch for row in rows],
            )
    conn.execute("analyze")
    conn.close()


CASES: list[tuple[str, Selection, str | None]] = [
    ("stats (status ok)", Selection(), None),
    ("stats --by model", Selection(), "model"),
    ("stats --by provider", Selection(), "provider"),
    ("stats --provider anthropic", Selection(provider="anthropic"), None),
    ("stats --status all", Selection(status=None), None),
]
"""What ``streambus stats`` is timed doing: a label, the selection, the grouping."""


def timed(label: str, db: Any, selection: Selection, by: str | None = None) -> float:
    began = time.perf_counter()
    groups = aggregate(db, selection, by=by)
    took = time.perf_counter() - began
    sessions = sum(g.sessions for g in groups)
    gaps = sum(g.itl_ns.n for g in groups)
    print(
        f"{label:<34} {took:6.2f} s  ({len(groups)} groups, {sessions:,} sessions, {gaps:,} gaps)"
    )
    return took


def check(db: Any) -> None:
    """Pooled ITL percentiles against sorting every gap in Python (slow, but independent)."""
    (stats,) = aggregate(db, Selection())
    gaps = sorted(
        gap
        for (gap,) in db.conn.execute(
            "select gap_ns from events join sessions on sessions.id = events.session_id "
            "where gap_ns is not null and status = 'ok'"
        )
    )
    expected = [percentile(gaps, p) for p in (50, 90, 99)]
    got = [stats.itl_ns.p50, stats.itl_ns.p90, stats.itl_ns.p99]
    assert got == expected, (got, expected)
    assert stats.itl_ns.n == len(gaps) and stats.itl_ns.max == gaps[-1]
    print(f"check: pooled ITL p50/p90/p99 over {len(gaps):,} gaps equal a full sort")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=100, help="per session (at least 5)")
    parser.add_argument(
        "--keep", type=Path, help="build (or reuse) this file instead of a temp one"
    )
    parser.add_argument("--check", action="store_true", help="verify ITL against a full sort")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.db"
        if not path.exists():
            began = time.perf_counter()
            build(path, args.sessions, args.events)
            took = time.perf_counter() - began
            size = path.stat().st_size / 1e6
            built = f"{args.sessions:,} sessions × {args.events} events"
            print(f"built {built} in {took:.1f} s ({size:,.0f} MB)")
        db = open_db(path)
        for label, selection, by in CASES:
            timed(label, db, selection, by)
        if args.check:
            check(db)


if __name__ == "__main__":
    main()
