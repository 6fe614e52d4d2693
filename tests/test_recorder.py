"""The recorder on real SQLite files: lossless and ordered under concurrency, partial sessions
kept with their status, flushed within 100 ms, consistent after SIGKILL, migrated from an
older schema, and never storing a credential."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlite_utils
import trio

from streambus import (
    Delta,
    Event,
    ProviderConfig,
    Recorder,
    Request,
    Start,
    Stop,
    Usage,
    encode_event,
    open_bus,
    open_db,
    stream,
)
from streambus.db import (
    SessionState,
    event_rows,
    in_key_order,
    read_events,
    unpack_gaps,
    write,
)
from streambus.latency import LatencyTracker, percentile
from streambus.migrations import MIGRATIONS, SCHEMA_VERSION
from streambus.simulator import SimulatorConfig, open_simulator
from streambus.stats import Selection, aggregate

from .test_cli import clean_env, find_command

FAST = SimulatorConfig(ttft=0, tokens_per_second=0, jitter=0)


def synthetic_session(session: str, n: int) -> list[Event]:
    events: list[Event] = [Start(session=session, seq=0, t_ns=0, provider="sim", model="m")]
    events += [Delta(session=session, seq=i, t_ns=i * 1000, text=f"{i} ") for i in range(1, n + 1)]
    events.append(Usage(session=session, seq=n + 1, t_ns=n * 1000, output_tokens=n))
    events.append(Stop(session=session, seq=n + 2, t_ns=n * 1000, reason="stop", raw_reason="stop"))
    return events


def every_byte_in(folder: Path) -> bytes:
    """The database, its WAL and anything else written there."""
    return b"".join(p.read_bytes() for p in folder.iterdir())


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchall()


async def test_every_event_is_stored_once_in_order_across_interleaved_sessions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.db"
    sessions = {f"s{i:02d}": synthetic_session(f"s{i:02d}", 50 + i) for i in range(30)}
    queues = {sid: list(events) for sid, events in sessions.items()}
    rng = random.Random(7)
    async with open_bus() as bus:
        bus.subscribe(Recorder(path))
        while queues:  # interleave sessions in random batch sizes, as concurrent streams would
            sid = rng.choice(sorted(queues))
            take = rng.randint(1, 9)
            batch, queues[sid] = queues[sid][:take], queues[sid][take:]
            await bus.publish(batch)
            if not queues[sid]:
                del queues[sid]
    db = open_db(path)
    for sid, events in sessions.items():
        assert list(read_events(db, sid)) == events
    assert rows(path, "select count(*) from events") == [(sum(map(len, sessions.values())),)]
    assert rows(path, "select distinct status from sessions") == [("ok",)]


async def test_writes_skip_the_foreign_key_check_yet_every_row_has_its_session(
    tmp_path: Path,
) -> None:
    """The recorder's transactions run with foreign keys off (a lookup per row saved): the
    connection gets them back afterwards, and the key holds because every session row is
    written with its events."""
    path = tmp_path / "r.db"
    recorder = Recorder(path)
    async with open_bus() as bus:
        bus.subscribe(recorder)
        for i in range(5):
            await bus.publish(synthetic_session(f"s{i}", 20))
    conn = recorder.db.conn
    assert conn.execute("pragma foreign_keys").fetchone() == (1,)
    assert conn.execute("pragma foreign_key_check").fetchall() == []
    assert rows(path, "select count(*) from events") == [(5 * 23,)]
    # Inside a caller's transaction the pragma cannot change: the caller's checks stay on.
    conn.execute("begin")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        write(recorder.db, [], [("nobody", 0, 0, "start", "{}", None)])
    conn.execute("rollback")
    assert conn.execute("pragma foreign_keys").fetchone() == (1,)


@pytest.mark.parametrize("n", [0, 1, 508, 509, 510, 1537])
@pytest.mark.parametrize("parameters", [None, 999])
def test_a_write_of_any_size_stores_each_row_once_in_order(
    tmp_path: Path, n: int, parameters: int | None
) -> None:
    """Rows go in as multi-row statements of power-of-two sizes (512, 256, … 1): any count,
    shuffled, some already stored, ends up as each event exactly once. Also where SQLite
    allows only 999 parameters per statement (before 3.32)."""
    db = open_db(tmp_path / "w.db")
    if parameters is not None:
        db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, parameters)
    events = synthetic_session("s", n)
    states: dict[str, SessionState] = {}
    all_rows = event_rows(events, states)
    session_row = states["s"].row("s")
    write(db, [session_row], all_rows[: len(all_rows) // 3])
    shuffled = list(all_rows)
    random.Random(n).shuffle(shuffled)
    write(db, [session_row], shuffled)
    assert list(read_events(db, "s")) == events
    stored = db.execute("select session_id, seq, t_ns, type, payload, gap_ns from events")
    assert sorted(stored.fetchall()) == sorted(all_rows)


@pytest.mark.parametrize("parameters", [None, 999])
def test_a_write_upserts_many_sessions_of_mixed_columns_as_one_at_a_time_would(
    tmp_path: Path, parameters: int | None
) -> None:
    """Session rows go in as multi-row upserts, one statement per column set (running,
    running with usage, stopped): 100 sessions in every state, written twice as they
    progress, end up exactly as writing each session alone would leave them. Also where
    SQLite allows only 999 parameters per statement, so a column set takes several."""
    together, alone = open_db(tmp_path / "together.db"), open_db(tmp_path / "alone.db")
    if parameters is not None:
        together.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, parameters)
    sessions = {f"s{i:03d}": synthetic_session(f"s{i:03d}", 5 + i % 7) for i in range(100)}
    states: dict[str, SessionState] = {}
    for part in ("first", "rest"):
        new_rows = []
        for i, events in enumerate(sessions.values()):
            # first: up to the deltas, to the usage, or (every third) to the stop
            end = [len(events) - 2, len(events) - 1, len(events)][i % 3]
            new_rows += event_rows(events[:end] if part == "first" else events[end:], states)
        session_rows = [states[sid].row(sid) for sid in sessions]
        assert len({tuple(r) for r in session_rows}) == (3 if part == "first" else 1)
        write(together, session_rows, new_rows)
        for row in session_rows:
            write(alone, [row], [r for r in new_rows if r[0] == row["id"]])
    for table in ("sessions", "session_gaps", "events"):
        query = f"select * from {table} order by 1, 2"
        assert together.execute(query).fetchall() == alone.execute(query).fetchall()
    assert together.execute("select count(*), min(status) from sessions").fetchall() == [
        (100, "ok")
    ]
    assert together.execute("select count(*) from session_gaps").fetchall() == [(100,)]


async def test_two_buses_record_concurrently_into_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with open_simulator(FAST) as sim:
        config = ProviderConfig("sim", "openai", sim.base_url, "sim-1", "k")

        async def one(prompt: str) -> None:
            async with open_bus() as bus:
                bus.subscribe(Recorder(path))
                await stream(bus, prompt, provider=config)

        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(one, f"question {i} about streaming")
    assert rows(path, "select count(*), min(status), max(status) from sessions") == [
        (6, "ok", "ok")
    ]
    per_session = rows(
        path, "select session_id, count(*), max(seq) from events group by session_id"
    )
    assert len(per_session) == 6
    assert all(count == top + 1 for _, count, top in per_session)  # no gap, no duplicate


@pytest.mark.parametrize(
    ("fault", "status"),
    [({"kind": "disconnect", "after_events": 4}, "error"), ({"kind": "no_done"}, "error")],
)
async def test_failed_session_is_kept_with_its_status(
    tmp_path: Path, fault: dict[str, Any], status: str
) -> None:
    path = tmp_path / "r.db"
    async with open_simulator(FAST) as sim, open_bus() as bus:
        bus.subscribe(Recorder(path))
        config = ProviderConfig("sim", "openai", sim.base_url, "sim-1", "k")
        message = await stream(
            bus, Request.from_prompt("hi", extra={"simulator": {"fault": fault}}), provider=config
        )
    [(got_status, reason, error, events)] = rows(
        path, "select status, stop_reason, error, events from sessions"
    )
    assert (got_status, reason) == (status, "error")
    assert error == message.stop.error  # type: ignore[union-attr]
    assert events == message.events and events > 2


async def test_cancelled_session_is_kept_with_everything_that_arrived(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    slow = SimulatorConfig(ttft=0, tokens_per_second=40, jitter=0)
    async with open_simulator(slow) as sim:
        config = ProviderConfig("sim", "openai", sim.base_url, "sim-1", "k")
        with trio.move_on_after(0.4):
            async with open_bus() as bus:
                recorder = Recorder(path)
                bus.subscribe(recorder)
                await stream(bus, "Tell me about streaming", provider=config)
    [(sid, status, n)] = rows(path, "select id, status, events from sessions")
    assert status == "cancelled"
    stored = list(read_events(open_db(path), sid))
    assert len(stored) == n > 3
    assert isinstance(stored[-1], Stop) and stored[-1].reason == "cancelled"
    assert [e.seq for e in stored] == list(range(n))


async def test_events_are_flushed_within_the_interval_without_a_stop(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    events = synthetic_session("live", 5)[:4]  # start and three deltas: the session goes on
    async with open_bus() as bus:
        bus.subscribe(Recorder(path))
        await bus.publish(events)
        await trio.sleep(Recorder.flush_interval + 0.2)  # real clock: a worker thread writes
        assert rows(path, "select count(*) from events") == [(4,)]
        assert rows(path, "select status from sessions") == [("incomplete",)]


def test_sigkill_mid_stream_leaves_a_consistent_database(tmp_path: Path) -> None:
    command = find_command()
    path = tmp_path / "killed.db"
    env = clean_env(STREAMBUS_DB=str(path))
    process = subprocess.Popen(
        [command, "run", "--sim-tps", "20", "--sim-ttft", "0", "Tell me about streaming"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if path.exists():
                try:
                    if rows(path, "select count(*) from events")[0][0] >= 10:
                        break
                except sqlite3.OperationalError:  # tables not created yet
                    pass
            time.sleep(0.05)
        else:
            pytest.fail("nothing was recorded within 20 s")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    assert rows(path, "pragma integrity_check") == [("ok",)]
    [(sid, status, started)] = rows(path, "select id, status, started_at from sessions")
    assert status == "incomplete" and started
    seqs = [
        s for (s,) in rows(path, "select seq from events where session_id = ? order by seq", sid)
    ]
    assert len(seqs) >= 10 and seqs == list(range(len(seqs)))
    assert open_db(path).execute("select count(*) from sessions").fetchone() == (1,)


def database_at(path: Path, version: int) -> sqlite_utils.Database:
    """A database as a streambus of schema ``version`` left it: its migrations, applied."""
    old = sqlite_utils.Database(path)
    migrations = old["_streambus_migrations"]
    migrations.create({"name": str, "applied_at": str}, pk="name")  # type: ignore[union-attr]
    for migration in MIGRATIONS[:version]:
        migration(old)
        migrations.insert({"name": migration.__name__, "applied_at": "2026-01-01"})  # type: ignore[union-attr]
    return old


def test_migrating_a_version_1_database_backfills_the_figures(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    events = synthetic_session("old", 6)
    old = database_at(path, 1)
    old["sessions"].insert({"id": "old", "provider": "sim", "model": "m", "status": "ok"})  # type: ignore[union-attr]
    old["events"].insert_all(  # type: ignore[union-attr]
        {
            "session_id": "old",
            "seq": e.seq,
            "t_ns": e.t_ns,
            "type": e.__struct_config__.tag,
            "payload": encode_event(e).decode(),
        }
        for e in events
    )
    old.conn.close()

    db = open_db(path)
    assert db.execute("pragma user_version").fetchone() == (SCHEMA_VERSION,)
    row = next(db["sessions"].rows)
    tracker = LatencyTracker()
    tracker.add_all(events)
    assert row["ttft_ns"] == 1000 and row["itl_p50_ns"] == 1000 and row["e2e_ns"] == 6000
    assert row["tpot_ns"] == tracker.figures().tpot_ns == 1000
    gaps = [g for (g,) in db.execute("select gap_ns from events order by seq")]
    assert gaps == [None, None, 1000, 1000, 1000, 1000, 1000, None, None]
    assert list(read_events(db, "old")) == events
    assert (row["error_kind"], row["attempts"]) == (None, 1)
    open_db(path)  # idempotent: a second open applies nothing
    names = [r["name"] for r in db["_streambus_migrations"].rows]
    assert names == [m.__name__ for m in MIGRATIONS]


def test_migrating_a_version_3_database_reads_kind_and_attempts_from_each_stop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v3.db"
    old = database_at(path, 3)
    stops = {
        # written before stop had error_kind and attempts
        "before": '{"type":"stop","session":"before","seq":1,"t_ns":5,"reason":"error",'
        '"error":"x"}',
        "after": '{"type":"stop","session":"after","seq":1,"t_ns":5,"reason":"error",'
        '"error":"y","error_kind":"idle_timeout","attempts":3}',
    }
    for sid, payload in [*stops.items(), ("running", None)]:
        old["sessions"].insert({"id": sid, "provider": "sim", "model": "m", "status": "ok"})  # type: ignore[union-attr]
        if payload is not None:
            old["events"].insert(  # type: ignore[union-attr]
                {"session_id": sid, "seq": 1, "t_ns": 5, "type": "stop", "payload": payload}
            )
    old.conn.close()

    db = open_db(path)
    got = db.execute("select id, error_kind, attempts from sessions order by id").fetchall()
    assert got == [("after", "idle_timeout", 3), ("before", None, 1), ("running", None, None)]


def test_migrating_a_version_4_database_moves_the_gaps_out_of_the_index(tmp_path: Path) -> None:
    """Schema 5 stores each stopped session's sorted ITL gaps in ``session_gaps`` and drops
    the gap index; a session with no stop keeps its gaps in its events only."""
    path = tmp_path / "v4.db"
    old = database_at(path, 4)
    sessions = {
        "done": (synthetic_session("done", 6), "ok"),
        "silent": (synthetic_session("silent", 0), "ok"),  # no content: no gaps
        "running": (synthetic_session("running", 4)[:-2], "incomplete"),
    }
    for sid, (events, status) in sessions.items():
        old["sessions"].insert({"id": sid, "provider": "sim", "model": "m", "status": status})  # type: ignore[union-attr]
        tracker = LatencyTracker()
        old["events"].insert_all(  # type: ignore[union-attr]
            {
                "session_id": sid,
                "seq": e.seq,
                "t_ns": e.t_ns,
                "type": e.__struct_config__.tag,
                "payload": encode_event(e).decode(),
                "gap_ns": tracker.add(e),
            }
            for e in events
        )
    assert "idx_events_session_gap" in [i.name for i in old["events"].indexes]  # type: ignore[union-attr]
    old.conn.close()

    db = open_db(path)
    stored = {
        sid: list(unpack_gaps(blob)) for sid, blob in db.execute("select * from session_gaps")
    }
    assert stored == {"done": [1000] * 5, "silent": []}
    indexes = [i.name for i in db["events"].indexes]  # type: ignore[union-attr]
    assert indexes == ["sqlite_autoindex_events_1"]  # the key alone
    itl = aggregate(db, Selection(status=None)).pop().itl_ns.n
    assert itl == 5 + 3  # the running session's three gaps come from its events


async def test_no_credential_is_ever_stored(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    key = "sk-proj-NEVER-STORE-ME-0123456789"
    async with open_simulator(FAST) as sim, open_bus() as bus:
        bus.subscribe(Recorder(path))
        config = ProviderConfig("openai", "openai", sim.base_url, "sim-1", api_key=key)
        request = Request.from_prompt("hi", extra={"api_key": key, "user": "u1"})
        await stream(bus, request, provider=config)
    assert key.encode() not in every_byte_in(tmp_path)
    [(request_json,)] = rows(path, "select request from sessions")
    assert json.loads(request_json)["api_key"] == "[redacted]"
    assert json.loads(request_json)["user"] == "u1"


def test_latency_figures_by_hand() -> None:
    t = [0, 300, 310, 330, 1330, 1340]  # content events at these ms; a 1 s stall in the middle
    events: list[Event] = [Start(session="s", seq=0, t_ns=0, provider="sim", model="m")]
    events += [
        Delta(session="s", seq=i + 1, t_ns=ms * 10**6, text="x") for i, ms in enumerate(t[1:])
    ]
    events += [
        Usage(session="s", seq=6, t_ns=1400 * 10**6, output_tokens=11),
        Stop(session="s", seq=7, t_ns=1400 * 10**6, reason="stop"),
    ]
    tracker = LatencyTracker()
    tracker.add_all(events)
    fig = tracker.figures()
    ms = 10**6
    assert fig.ttft_ns == 300 * ms and fig.e2e_ns == 1400 * ms and fig.content_events == 5
    # gaps: 10, 20, 1000, 10 ms -> sorted 10, 10, 20, 1000
    assert fig.itl_max_ns == 1000 * ms
    assert fig.itl_p50_ns == 15 * ms  # between the 2nd and 3rd of four
    assert fig.itl_mean_ns == 260 * ms
    assert fig.tpot_ns == (1340 - 300) * ms / 10  # decode phase ends at the last content
    assert fig.tokens_per_s == pytest.approx(11 / 1.040)
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    assert percentile([], 50) is None


# -- regressions found in review ------------------------------------------------------------------


def _open_in_process(path: str) -> None:
    open_db(path).conn.close()


def test_processes_opening_a_new_database_at_once_all_succeed(tmp_path: Path) -> None:
    import multiprocessing

    path = str(tmp_path / "race.db")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_open_in_process, args=(path,)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0] * 6
    assert rows(Path(path), "select count(*) from _streambus_migrations") == [(SCHEMA_VERSION,)]


def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    open_db(path).conn.close()

    def m999_broken(db: sqlite_utils.Database) -> None:
        db["half_done"].create({"x": int})  # type: ignore[union-attr]
        raise RuntimeError("interrupted")

    MIGRATIONS.append(m999_broken)
    try:
        with pytest.raises(RuntimeError, match="interrupted"):
            open_db(path)
    finally:
        MIGRATIONS.remove(m999_broken)
    assert rows(path, "select name from sqlite_master where name = 'half_done'") == []
    open_db(path)  # and it still opens


def test_a_current_database_opens_read_only(tmp_path: Path) -> None:
    from streambus.migrations import migrate

    path = tmp_path / "r.db"
    open_db(path).conn.close()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert migrate(sqlite_utils.Database(conn)) == SCHEMA_VERSION  # no write attempted


def test_the_wal_is_cut_back_to_16_mib_after_a_big_write(tmp_path: Path) -> None:
    """Checkpoints come every 16 MiB of WAL (less copying per row); a transaction bigger
    than that (an import) must not leave a WAL file of its own size behind."""
    path = tmp_path / "r.db"
    db = open_db(path)
    big = synthetic_session("big", 60_000)
    big[1:-2] = [msgspec.structs.replace(e, text="x" * 300) for e in big[1:-2]]
    states: dict[str, SessionState] = {}
    big_rows = event_rows(big, states)
    write(db, [states["big"].row("big")], big_rows)
    wal = path.with_name("r.db-wal")
    assert wal.stat().st_size > 20 << 20
    write(db, [states["big"].row("big")], [])  # the next write resets the WAL, truncated
    assert wal.stat().st_size <= 16 << 20
    assert rows(path, "select count(*) from events") == [(len(big),)]


async def test_a_locked_database_delays_recording_but_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    open_db(path).conn.close()
    impatient = sqlite_utils.Database(sqlite3.connect(path, timeout=0.05, check_same_thread=False))
    blocker = sqlite3.connect(path, isolation_level=None)
    events = synthetic_session("locked", 20)
    async with open_bus() as bus:
        bus.subscribe(Recorder(impatient))
        blocker.execute("begin immediate")  # another writer holds the database
        await bus.publish(events[:10])
        await trio.sleep(0.4)  # several flushes fail meanwhile
        blocker.execute("commit")
        await bus.publish(events[10:])
    assert list(read_events(open_db(path), "locked")) == events


async def test_a_recorder_closes_the_database_it_opened_and_only_that(tmp_path: Path) -> None:
    """Not left to the garbage collector, whose close (the final WAL checkpoint) would come
    at some later moment, on whichever thread collects it."""
    path = tmp_path / "r.db"
    events = synthetic_session("s", 5)
    async with Recorder(path) as recorder, open_bus() as bus:
        bus.subscribe(recorder)
        await bus.publish(events)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        recorder.db.execute("select 1")
    assert not (tmp_path / "r.db-wal").exists()  # the last connection closed: checkpointed
    db = open_db(path)
    async with Recorder(db) as recorder:
        await recorder.on_events(synthetic_session("t", 2))
    assert db.execute("select count(*) from events").fetchone() == (len(events) + 5,)


async def test_a_database_locked_to_the_end_says_what_is_unwritten(tmp_path: Path) -> None:
    """The bus closes while another writer still holds the database: nothing pretends the
    session was recorded; the events wait in the recorder, and a later flush writes them."""
    path = tmp_path / "r.db"
    open_db(path).conn.close()
    impatient = sqlite_utils.Database(sqlite3.connect(path, timeout=0.05, check_same_thread=False))
    blocker = sqlite3.connect(path, isolation_level=None)
    events = synthetic_session("locked", 20)
    recorder = Recorder(impatient)
    blocker.execute("begin immediate")
    async with open_bus() as bus:
        bus.subscribe(recorder)
        await bus.publish(events)
    assert recorder.pending == len(events)
    assert recorder.last_error == "database is locked"
    unwritten = r"23 events not written \(database is locked\); the database stays open"
    with pytest.raises(sqlite3.OperationalError, match=unwritten):
        await recorder.aclose()
    blocker.execute("commit")
    await recorder.flush()
    assert (recorder.pending, recorder.last_error) == (0, None)
    assert list(read_events(open_db(path), "locked")) == events


async def test_the_recorder_takes_batches_while_its_write_is_in_flight(tmp_path: Path) -> None:
    """A write runs behind the stream: while one waits on a locked database, later batches
    are still taken (nothing backs up into the bus), and a late event of the session being
    written is ignored as after its stop."""
    path = tmp_path / "r.db"
    open_db(path).conn.close()
    blocker = sqlite3.connect(path, isolation_level=None)
    first, second = synthetic_session("first", 5), synthetic_session("second", 5)
    late = Delta(session="first", seq=99, t_ns=10**9, text="late")
    recorder = Recorder(path)
    blocker.execute("begin immediate")  # the write started at first's stop waits for this
    async with open_bus() as bus:
        bus.subscribe(recorder)
        await bus.publish(first)
        with trio.fail_after(10):
            while recorder.pending < len(first):  # noqa: ASYNC110 - a thread's write, no event
                await trio.sleep(0.01)
            await bus.publish([late])
            await bus.publish(second[:3])
            while recorder.pending < len(first) + 3:  # noqa: ASYNC110 - taken meanwhile
                await trio.sleep(0.01)
        assert rows(path, "select count(*) from events") == [(0,)]  # still in flight
        blocker.execute("commit")
        await bus.publish(second[3:])
    assert recorder.pending == 0
    assert list(read_events(open_db(path), "first")) == first
    assert list(read_events(open_db(path), "second")) == second


async def test_events_after_stop_or_without_start_are_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    finished = synthetic_session("done", 3)
    headless = synthetic_session("joined-late", 5)[2:]  # the recorder missed its start
    late = Delta(session="done", seq=99, t_ns=10**9, text="late")
    async with open_bus() as bus:
        bus.subscribe(Recorder(path))
        await bus.publish(finished)
        await trio.sleep(0.2)
        await bus.publish([late, *headless])
    assert list(read_events(open_db(path), "done")) == finished
    assert rows(path, "select id, status from sessions") == [("done", "ok")]


async def test_a_batch_mixing_sessions_stores_the_recorded_ones_whole(tmp_path: Path) -> None:
    """Gathered batches mix sessions: one whose sessions are all being recorded is taken as
    it is; one that also holds events of a stopped (written or still being written) or
    unknown session drops only those."""
    path = tmp_path / "r.db"
    a, b = synthetic_session("a", 6), synthetic_session("b", 6)
    done, stopping = synthetic_session("done", 2), synthetic_session("stopping", 2)
    late = [Delta(session=sid, seq=99, t_ns=10**9, text="late") for sid in ("done", "stopping")]
    stray = Delta(session="stray", seq=3, t_ns=10**9, text="no start")
    recorder = Recorder(path)
    await recorder.on_events(done)
    await recorder.flush()  # written: "done" is a finished session
    await recorder.on_events([*a[:3], *b[:3]])  # two starts
    await recorder.on_events([*a[3:5], *b[3:5]])  # both recorded: taken whole
    await recorder.on_events(stopping)  # its write starts; its stop is not written yet
    await recorder.on_events([a[5], late[1], b[5]])  # all being recorded but one
    await recorder.on_events([late[0], stray, *a[6:], *b[6:]])
    await recorder.flush()
    sessions = ("a", "b", "done", "stopping")
    assert [list(read_events(recorder.db, sid)) for sid in sessions] == [a, b, done, stopping]
    assert rows(path, "select id, status from sessions order by id") == [
        (sid, "ok") for sid in sessions
    ]


def test_rows_go_in_key_order_each_session_as_it_came() -> None:
    rows = [("b", 1), ("a", 1), ("c", 1), ("b", 2), ("a", 2), ("b", 3)]
    assert in_key_order(rows) == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3), ("c", 1)]
    one = [("b", 1), ("b", 2)]
    assert in_key_order(one) == one
    assert in_key_order([]) == []


async def test_two_recorders_on_one_bus_store_each_event_once(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    db = open_db(path)
    events = synthetic_session("twice", 30)
    async with open_bus() as bus:
        bus.subscribe(Recorder(db), name="a")
        bus.subscribe(Recorder(path), name="b")
        for event in events:
            await bus.publish([event])
    assert bus.failures == []
    assert list(read_events(open_db(path), "twice")) == events
