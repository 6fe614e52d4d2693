"""Latency statistics on real SQLite: figures checked against hand-computed values, pooled
percentiles against numpy (also through radix selection's deepest paths), grouping, filters,
stalls; then the installed `stats` and `plot` commands, run for real in a subprocess."""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import streambus.stats
from streambus import Delta, Event, Start, Stop, ToolDelta, Usage, open_db
from streambus.db import SessionState, event_rows, unpack_gaps, write
from streambus.latency import percentile
from streambus.stats import Selection, aggregate, per_session, render

from .test_cli import find_command

MS = 1_000_000
UTC = datetime.UTC
A, B, C, D, E = (f"{c * 4}{i:020x}" for i, c in enumerate("abcde", start=1))


def record(
    db: Any,
    sid: str,
    *,
    provider: str,
    model: str,
    day: int,
    content_ms: list[int],
    end_ms: int | None,
    tokens: int | None,
    reason: Any = "stop",
    extra: list[Event] | None = None,
) -> None:
    """One session through the recorder's own row builder: start, content, usage, stop."""
    started = datetime.datetime(2026, 11, day, 10, tzinfo=UTC).isoformat(timespec="microseconds")
    events: list[Event] = [
        Start(session=sid, seq=0, t_ns=0, provider=provider, model=model, started_at=started)
    ]
    for t in content_ms:
        events.append(Delta(session=sid, seq=len(events), t_ns=t * MS, text="tok"))
    events += extra or []
    if tokens is not None:
        assert end_ms is not None
        events.append(Usage(session=sid, seq=len(events), t_ns=end_ms * MS, output_tokens=tokens))
    if end_ms is not None:
        error = "boom" if reason == "error" else None
        events.append(
            Stop(session=sid, seq=len(events), t_ns=end_ms * MS, reason=reason, error=error)
        )
    events.sort(key=lambda e: e.t_ns)
    events = [type(e)(**{**_fields(e), "seq": i}) for i, e in enumerate(events)]
    states: dict[str, SessionState] = {}
    rows = event_rows(events, states)
    write(db, [states[sid].row(sid)], rows)


def _fields(event: Event) -> dict[str, Any]:
    return {f: getattr(event, f) for f in event.__struct_fields__}


def known(db: Any) -> Any:
    """Five sessions whose figures are worked out by hand in the tests below (ms).

    A openai/gpt-4o-mini ok: content at 200 210 230 260 1400, stop 1500, 5 tokens
        (plus an empty signature delta, which is not content); gaps 10 20 30 1140 (a stall).
    B openai/gpt-4o-mini ok: content 100 150 150 250, stop 300, 4 tokens; gaps 50 0 100.
    C anthropic/claude-x ok: reasoning at 300, text 340, tool call 2400 2410, stop 2500,
        10 tokens; gaps 40 2060 (a stall) 10.
    D anthropic/claude-x error: content 500 600, error at 700, no usage; gap 100.
    E sim/sim-1 incomplete (no stop recorded): content 100 300; gap 200.
    """
    sign = Delta(session=A, seq=0, t_ns=205 * MS, text="", channel="reasoning", signature="s")
    record(db, A, provider="openai", model="gpt-4o-mini", day=20,
           content_ms=[200, 210, 230, 260, 1400], end_ms=1500, tokens=5, extra=[sign])  # fmt: skip
    record(db, B, provider="openai", model="gpt-4o-mini", day=21,
           content_ms=[100, 150, 150, 250], end_ms=300, tokens=4)  # fmt: skip
    c_extra: list[Event] = [
        Delta(session=C, seq=0, t_ns=300 * MS, text="hmm", channel="reasoning"),
        ToolDelta(session=C, seq=0, t_ns=2400 * MS, index=0, id="t1", name="f"),
        ToolDelta(session=C, seq=0, t_ns=2410 * MS, index=0, arguments="{}"),
    ]
    record(db, C, provider="anthropic", model="claude-x", day=22,
           content_ms=[340], end_ms=2500, tokens=10, extra=c_extra)  # fmt: skip
    record(db, D, provider="anthropic", model="claude-x", day=23,
           content_ms=[500, 600], end_ms=700, tokens=None, reason="error")  # fmt: skip
    record(db, E, provider="sim", model="sim-1", day=24,
           content_ms=[100, 300], end_ms=None, tokens=None)  # fmt: skip
    return db


@pytest.fixture
def db(tmp_path: Path) -> Any:
    return known(open_db(tmp_path / "stats.db"))


def ms(d: streambus.stats.Distribution) -> list[float | None]:
    return [None if v is None else v / MS for v in (d.mean, d.p50, d.p90, d.p99, d.max)]


def test_figures_match_hand_computed_values(db: Any) -> None:
    (stats,) = aggregate(db)  # status ok: A, B, C
    assert (stats.by, stats.group, stats.sessions) == (None, None, 3)
    # TTFT 200, 100, 300: p90 at rank 1.8 = 200 + 0.8 × 100.
    assert stats.ttft_ns.n == 3
    assert ms(stats.ttft_ns) == pytest.approx([200, 200, 280, 298, 300])
    # ITL pooled: 0 10 10 20 30 40 50 100 1140 2060 (sum 3460); p50 at rank 4.5 = 35,
    # p90 at 8.1 = 1140 + 0.1 × 920, p99 at 8.91 = 1140 + 0.91 × 920.
    assert stats.itl_ns.n == 10
    assert ms(stats.itl_ns) == pytest.approx([346, 35, 1232, 1977.2, 2060])
    # TPOT (l − f)/(N − 1), last minus first content: A 1200/4, B 150/3, C 2110/9.
    low, mid, high = sorted([1200 / 4, 150 / 3, 2110 / 9])
    p90, p99 = mid + 0.8 * (high - mid), mid + 0.98 * (high - mid)
    assert ms(stats.tpot_ns) == pytest.approx([(low + mid + high) / 3, mid, p90, p99, high])
    # tokens/s N/(l − f): A 5/1.2, B 4/0.15, C 10/2.11; decode speed Σ N / Σ (l − f).
    rates = sorted([5 / 1.2, 4 / 0.15, 10 / 2.11])
    assert stats.tokens_per_s.p50 == pytest.approx(rates[1])
    assert stats.tokens_per_s.max == pytest.approx(4 / 0.15)
    assert stats.decode_tokens_per_s == pytest.approx(19 / 3.46)
    assert ms(stats.e2e_ns) == pytest.approx([4300 / 3, 1500, 1500 + 0.8 * 1000, 2480, 2500])
    assert stats.output_tokens.n == 3
    assert [stats.output_tokens.mean, stats.output_tokens.p50] == pytest.approx([19 / 3, 5])
    # Stalls > 1000 ms: A's 1140 and C's 2060.
    assert (stats.stall_ms, stats.stalls, stats.stalled_sessions) == (1000, 2, 2)


def test_stalls_are_gaps_strictly_longer_than_the_threshold(db: Any) -> None:
    (at_1140,) = aggregate(db, stall_ms=1140)
    assert (at_1140.stalls, at_1140.stalled_sessions) == (1, 1)
    (at_0,) = aggregate(db, stall_ms=0)  # every gap but B's 0
    assert (at_0.stalls, at_0.stalled_sessions) == (9, 3)
    (never,) = aggregate(db, stall_ms=5000)
    assert (never.stalls, never.stalled_sessions) == (0, 0)


def test_grouping_by_provider_and_by_model(db: Any) -> None:
    anthropic, openai = aggregate(db, by="provider")
    assert (anthropic.group, anthropic.sessions, openai.group, openai.sessions) == (
        "anthropic",
        1,
        "openai",
        2,
    )
    # openai pools A's and B's gaps: 0 10 20 30 50 100 1140; p90 at rank 5.4.
    assert openai.itl_ns.n == 7
    assert ms(openai.itl_ns)[1:] == pytest.approx([30, 100 + 0.4 * 1040, 1140 - 0.06 * 1040, 1140])
    assert ms(anthropic.ttft_ns) == [300] * 5
    assert (anthropic.stalls, openai.stalls) == (1, 1)
    by_model = aggregate(db, by="model")
    assert [(g.group, g.sessions, g.itl_ns.n) for g in by_model] == [
        ("claude-x", 1, 3),
        ("gpt-4o-mini", 2, 7),
    ]
    assert by_model[1].itl_ns == openai.itl_ns


def test_filters_select_sessions(db: Any) -> None:
    def sessions(**kw: Any) -> tuple[int, int, int]:
        (s,) = aggregate(db, Selection(**kw))
        return s.sessions, s.ttft_ns.n, s.itl_ns.n

    # All statuses: D's gap counts; E (incomplete) has gaps but no stored figures.
    assert sessions(status=None) == (5, 4, 12)
    assert sessions(status="error") == (1, 1, 1)
    assert sessions(status="incomplete") == (1, 0, 1)
    assert sessions(provider="anthropic") == (1, 1, 3)
    assert sessions(provider="anthropic", status=None) == (2, 2, 4)
    assert sessions(model="gpt-4o-mini") == (2, 2, 7)
    assert sessions(since=datetime.datetime(2026, 11, 22, tzinfo=UTC)) == (1, 1, 3)
    assert sessions(since=datetime.datetime(2026, 11, 22, 10, tzinfo=UTC), status=None) == (3, 2, 5)
    assert sessions(ids=(B, D), status=None) == (2, 2, 4)
    assert aggregate(db, Selection(provider="nobody")) == []
    assert per_session(db, Selection(provider="nobody")) == []


def test_per_session_figures_are_the_stored_rows(db: Any) -> None:
    rows = per_session(db, Selection(status=None))
    assert [r.id for r in rows] == [A, B, C, D, E]  # oldest first
    a, b, _, d, e = rows
    assert (a.ttft_ns, a.e2e_ns, a.output_tokens, a.content_events) == (200 * MS, 1500 * MS, 5, 5)
    assert (a.itl_p50_ns, a.itl_max_ns, a.tpot_ns) == (25 * MS, 1140 * MS, 300 * MS)
    assert (b.itl_p50_ns, b.itl_mean_ns) == (50 * MS, 50 * MS)
    assert [r.stalls for r in rows] == [1, 0, 1, 0, 0]
    assert (d.status, d.tpot_ns, d.tokens_per_s) == ("error", None, None)
    assert (e.status, e.e2e_ns) == ("incomplete", None)


def random_recording(db: Any, rng: random.Random, sessions: int) -> list[int]:
    """Sessions of tight, wide or tied gaps (zeros, huge stalls); some end in error. Returns
    the pooled gaps of the ``ok`` ones, sorted: what ``aggregate`` pools by default."""
    pooled: list[int] = []
    for i in range(sessions):
        sid = f"{i:024x}"
        kind = rng.choice(["tight", "wide", "ties"])
        n = rng.randint(1, 40)
        if kind == "tight":
            steps = [rng.randint(15_000_000, 15_000_500) for _ in range(n)]
        elif kind == "wide":
            steps = [int(rng.lognormvariate(16, 2)) for _ in range(n)]
        else:
            steps = [rng.choice([0, 0, 0, 7, 7, 10**12]) for _ in range(n)]
        times = [1000]
        for step in steps:
            times.append(times[-1] + step)
        status = rng.choice(["stop", "stop", "error"])
        events: list[Event] = [Start(session=sid, seq=0, t_ns=0, provider="p", model="m")]
        events += [Delta(session=sid, seq=k + 1, t_ns=t, text="x") for k, t in enumerate(times)]
        events.append(Stop(session=sid, seq=len(events), t_ns=times[-1], reason=status))
        states: dict[str, SessionState] = {}
        rows = event_rows(events, states)
        write(db, [states[sid].row(sid)], rows)
        if status == "stop":
            pooled += steps
    return sorted(pooled)


# How pooled ITL's ranks are found, and the module limits that force each way on a few
# hundred gaps as millions would: (sample gaps, standard errors). The sample is everything;
# or brackets hold every rank; or brackets of no width miss, so the regions between them are
# taken and sorted; or brackets (replacing the sample's) hug each wanted value from both
# sides, so every region's edge is tested; or the hashed sample picks no session and the
# regions do it all.
PATHS = {
    "whole sample": (10**9, 6.0),
    "brackets": (60, 6.0),
    "missed brackets": (60, 0.0),
    "brackets beside the ranks": (60, 6.0),
    "no sample": (1, 6.0),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", range(5))
def test_pooled_percentiles_equal_numpy_through_every_selection_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, path: str
) -> None:
    np = pytest.importorskip("numpy")
    for name, value in zip(["_SAMPLE_GAPS", "_Z"], PATHS[path], strict=True):
        monkeypatch.setattr(streambus.stats, name, value)
    regions: list[int] = []
    real_region = streambus.stats._GapSelector._region

    def region(self: Any, *args: Any) -> Any:
        regions.append(len(found := real_region(self, *args)))
        return found

    monkeypatch.setattr(streambus.stats._GapSelector, "_region", region)
    taken: list[int] = []  # gaps taken inside brackets, by the one bracketed pass
    real_bracketed = streambus.stats._GapSelector._bracketed

    def bracketed(self: Any, brackets: Any) -> Any:
        found = real_bracketed(self, brackets)
        taken.append(sum(len(b.values) for b in found[2] if b.values is not None))
        return found

    monkeypatch.setattr(streambus.stats._GapSelector, "_bracketed", bracketed)
    sampled: list[tuple[int, int]] = []  # (one session in how many, sessions sampled)
    real_sample = streambus.stats._GapSelector._sample

    def sample(self: Any, share: int) -> Any:
        sampled.append((share, len(found := real_sample(self, share))))
        return found

    monkeypatch.setattr(streambus.stats._GapSelector, "_sample", sample)
    rng = random.Random(seed)
    db = open_db(tmp_path / "random.db")
    pooled = random_recording(db, rng, rng.randint(0, 3) if seed == 0 else rng.randint(20, 60))
    if path == "brackets beside the ranks":
        distinct = sorted(set(pooled))
        wanted = {distinct.index(pooled[r]) for r in streambus.stats._ranks_read(len(pooled))}
        beside = sorted(
            {
                (distinct[i], distinct[i])
                for w in wanted
                for i in (w - 1, w + 1)
                if 0 <= i < len(distinct)
            }
        )
        monkeypatch.setattr(streambus.stats, "_brackets", lambda sample, pooled: beside)
    result = aggregate(db)
    if not pooled:
        assert result == []
        return
    (stats,) = result
    expected = np.percentile(np.array(pooled, dtype=np.float64), [50, 90, 99])
    got = [stats.itl_ns.p50, stats.itl_ns.p90, stats.itl_ns.p99]
    assert got == pytest.approx(list(expected), rel=1e-12, abs=1e-6)
    assert got == [percentile(pooled, p) for p in (50, 90, 99)]  # the same function, exactly
    assert (stats.itl_ns.n, stats.itl_ns.max) == (len(pooled), pooled[-1])
    assert stats.itl_ns.mean == pytest.approx(sum(pooled) / len(pooled))
    assert stats.stalls == sum(gap > stats.stall_ms * 1e6 for gap in pooled)  # same pass
    if seed == 0:  # a handful of sessions: the sample is all of them, whatever the limits
        return
    # Each way was really taken.
    ((share, sessions),) = sampled
    assert (share == 1) is (path == "whole sample")
    assert (sessions == 0) is (path == "no sample")
    if path == "whole sample":
        assert (taken, regions) == ([], [])
    elif path == "brackets":  # a tail rank the small sample missed may still need a region
        assert taken[0] > 0
    else:
        assert regions, "no region was taken: the limits test nothing"


def test_stopped_sessions_keep_their_sorted_gaps_and_events_have_no_gap_index(
    db: Any,
) -> None:
    stored = dict(db.execute("select session_id, gaps_ns from session_gaps").fetchall())
    statuses = dict(db.execute("select id, status from sessions").fetchall())
    assert set(stored) == {sid for sid, status in statuses.items() if status != "incomplete"}
    for sid, blob in stored.items():
        gaps = [
            g
            for (g,) in db.execute(
                "select gap_ns from events where session_id = ? and gap_ns is not null", [sid]
            )
        ]
        assert list(unpack_gaps(blob)) == sorted(gaps)
    indexes = [r[0] for r in db.execute("select sql from sqlite_master where type = 'index'")]
    assert not any(sql and "gap_ns" in sql for sql in indexes)


def test_sessions_without_stored_gaps_are_read_from_their_events(db: Any) -> None:
    """A session whose stop was never recorded has no gaps blob; one recorded by an older
    streambus may have lost it too. Either way the statistics are the same."""
    everything = Selection(status=None)
    before = (aggregate(db, everything, by="provider"), per_session(db, everything))
    db.execute("delete from session_gaps")
    assert (aggregate(db, everything, by="provider"), per_session(db, everything)) == before


def test_render_table_json_and_csv(db: Any) -> None:
    groups = aggregate(db, by="provider")
    table = render(groups, "table")
    assert table.splitlines()[0] == "provider anthropic · 1 session"
    assert "provider openai · 2 sessions" in table
    ttft = next(line for line in table.splitlines() if line.startswith("TTFT ms"))
    assert ttft.split() == ["TTFT", "ms", "1", "300", "300", "300", "300", "300"]
    assert "1 stall > 1,000 ms in 1 session" in table
    records = json.loads(render(groups, "json"))
    assert records[1]["group"] == "openai"
    assert records[1]["itl_ms"]["p50"] == pytest.approx(30)
    assert records[1]["decode_tokens_per_s"] == pytest.approx(9 / 1.35)
    rows = list(csv.DictReader(io.StringIO(render(groups, "csv"))))
    assert [r["group"] for r in rows] == ["anthropic", "openai"]
    assert float(rows[1]["ttft_ms_p90"]) == pytest.approx(100 + 0.9 * 100)
    assert rows[0]["tpot_ms_n"] == "1"
    per = per_session(db, Selection(status=None))
    assert render(per, "table").splitlines()[0].split()[:4] == [
        "session",
        "model",
        "status",
        "TTFT",
    ]
    first = json.loads(render(per, "json"))[0]
    assert (first["id"], first["ttft_ms"], first["stalls"]) == (A, 200, 1)
    assert next(csv.DictReader(io.StringIO(render(per, "csv"))))["itl_max_ms"] == "1140.0"


# -- the commands, installed and run in a subprocess -----------------------------------------


@pytest.fixture(scope="module")
def streambus_cmd() -> str:
    return find_command()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "recordings.db"
    known(open_db(path)).conn.close()
    return path


def cli(cmd: str, *args: str, db: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMBUS_")}
    return subprocess.run(
        [cmd, *args, "--db", str(db)], capture_output=True, text=True, env=env, timeout=60
    )


def test_stats_command_in_three_formats(streambus_cmd: str, db_path: Path) -> None:
    table = cli(streambus_cmd, "stats", db=db_path)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0] == "all sessions · 3 sessions"
    assert "ITL ms" in table.stdout and "2 stalls > 1,000 ms in 2 sessions" in table.stdout
    out = cli(streambus_cmd, "stats", "--by", "model", "-f", "json", db=db_path)
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert [r["group"] for r in records] == ["claude-x", "gpt-4o-mini"]
    assert records[1]["ttft_ms"] == {
        "n": 2,
        "mean": 150,
        "p50": 150,
        "p90": 190,
        "p99": 199,
        "max": 200,
    }
    out = cli(
        streambus_cmd, "stats", "--status", "all", "--stall-ms", "50", "-f", "csv", db=db_path
    )
    assert out.returncode == 0, out.stderr
    (row,) = csv.DictReader(io.StringIO(out.stdout))
    assert (row["sessions"], row["itl_ms_n"], row["stalls"]) == ("5", "12", "5")


def test_stats_command_selects_by_id_prefix_and_lists_sessions(
    streambus_cmd: str, db_path: Path
) -> None:
    out = cli(streambus_cmd, "stats", "dddd", "bbbb", "--by", "session", "-f", "json", db=db_path)
    assert out.returncode == 0, out.stderr
    assert [r["id"] for r in json.loads(out.stdout)] == [B, D]  # all statuses for given IDs
    out = cli(streambus_cmd, "stats", "dddd", "--status", "ok", db=db_path)
    assert out.returncode == 1
    assert out.stderr == "streambus: error: no recorded sessions match\n"


def test_stats_command_failures_are_one_line(streambus_cmd: str, db_path: Path) -> None:
    out = cli(streambus_cmd, "stats", "--provider", "nobody", db=db_path)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == (
        "streambus: error: no recorded sessions match "
        "(status ok by default: --status all counts failed ones too)\n"
    )
    out = cli(streambus_cmd, "stats", "ffff", db=db_path)
    assert out.returncode == 1 and out.stderr == "streambus: error: no session matches 'ffff'\n"
    out = cli(streambus_cmd, "stats", "--since", "soon", db=db_path)
    assert out.returncode == 2 and out.stderr.startswith("streambus: error: --since: ")
    assert "Traceback" not in out.stderr


PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_command_writes_png_and_svg(streambus_cmd: str, db_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "t.png"
    out = cli(streambus_cmd, "plot", "aaaa", "bbbb", "cccc", "-o", str(png), db=db_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == f"streambus: wrote {png} (3 sessions)\n"
    data = png.read_bytes()
    assert data.startswith(PNG) and len(data) > 20_000
    svg = tmp_path / "t.svg"
    out = cli(streambus_cmd, "plot", "-o", str(svg), db=db_path)  # latest: E
    assert out.returncode == 0, out.stderr
    assert "<svg" in svg.read_text()[:1000]


def test_plot_command_failures_are_one_line(
    streambus_cmd: str, db_path: Path, tmp_path: Path
) -> None:
    jpg = tmp_path / "t.jpg"
    out = cli(streambus_cmd, "plot", "-o", str(jpg), db=db_path)
    assert out.returncode == 2
    assert (
        out.stderr
        == f"streambus: error: --output {jpg}: the figure is written as FILE.png or FILE.svg\n"
    )
    out = cli(streambus_cmd, "plot", "-o", str(tmp_path / "t.png"), db=tmp_path / "none.db")
    assert out.returncode == 1 and "no recordings database" in out.stderr


def test_plot_without_matplotlib_names_the_extra(db_path: Path, tmp_path: Path) -> None:
    """The installed CLI, in a Python where importing matplotlib fails."""
    find_command()
    blocker = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'matplotlib':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from streambus._cli import main\n"
        "sys.argv[0] = 'streambus'\n"
        "main()\n"
    )
    png = tmp_path / "t.png"
    out = subprocess.run(
        [sys.executable, "-c", blocker, "plot", "aaaa", "-o", str(png), "--db", str(db_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr == (
        "streambus: error: plotting needs matplotlib, which is not installed: "
        "pip install 'streambus[plot]'\n"
    )
    assert not png.exists()
