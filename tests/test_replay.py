"""Replay: recorded sessions come back identical, with their recorded pacing (checked exactly on
trio's MockClock), one batch per recorded network read, and always exactly one stop last."""

from __future__ import annotations

import itertools
import math
import random
import sqlite3
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from streambus import (
    Delta,
    Event,
    Recorder,
    Replayer,
    Start,
    Stop,
    ToolDelta,
    Usage,
    open_bus,
    open_db,
    stream,
)
from streambus.db import SessionState, event_rows, write
from streambus.exchange import import_sessions
from streambus.replay import INCOMPLETE_ERROR, _Pacer
from streambus.simulator import SimulatorConfig

ROOT = Path(__file__).resolve().parent.parent
FAST = SimulatorConfig(ttft=0, tokens_per_second=0, jitter=0)
SID = "0190000000000000000000aa"


def store(db: Any, events: Sequence[Event]) -> None:
    """Put events in the database the way the recorder does."""
    states: dict[str, SessionState] = {}
    rows = event_rows(events, states)
    write(db, [state.row(sid) for sid, state in states.items()], rows)


def paced_session(*, stop: bool = True) -> list[Event]:
    """A session whose times are binary fractions of a second, so float time is exact."""
    events: list[Event] = [Start(session=SID, seq=0, t_ns=0, provider="sim", model="m")]
    times = [250_000_000, 250_000_000, 500_000_000, 1_500_000_000, 1_625_000_000]
    for t in times:
        events.append(Delta(session=SID, seq=len(events), t_ns=t, text=f"w{len(events)} "))
    events.append(Usage(session=SID, seq=len(events), t_ns=2_000_000_000, output_tokens=5))
    if stop:
        events.append(Stop(session=SID, seq=len(events), t_ns=2_000_000_000, reason="stop"))
    return events


class Collector:
    """Keeps every batch with the (virtual) time it was delivered."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, tuple[Event, ...]]] = []

    def on_events(self, batch: Sequence[Event]) -> None:
        self.batches.append((trio.current_time(), tuple(batch)))

    @property
    def events(self) -> list[Event]:
        return [event for _, batch in self.batches for event in batch]


async def replay(db: Any, session_id: str = SID, **kwargs: Any) -> tuple[Any, Collector]:
    seen = Collector()
    async with open_bus() as bus:
        bus.subscribe(seen)
        message = await Replayer(db, session_id, **kwargs).run(bus)
    return message, seen


async def test_instant_replay_is_identical_to_the_recorded_stream(tmp_path: Path) -> None:
    db = open_db(tmp_path / "r.db")
    live = Collector()
    async with open_bus() as bus:
        bus.subscribe(live)
        bus.subscribe(Recorder(db))
        recorded = await stream(bus, "What is streaming?", provider="sim", simulator=FAST)
    assert isinstance(live.events[-1], Stop)
    session = live.events[0].session

    published: list[tuple[Event, ...]] = []
    seen = Collector()
    async with open_bus() as bus:
        publish = bus.publish

        async def spy(events: Any) -> None:  # what the replayer publishes, batch by batch
            published.append(tuple(events))
            await publish(events)

        bus.publish = spy  # type: ignore[method-assign]
        bus.subscribe(seen)
        replayer = Replayer(tmp_path / "r.db", session, speed=None)  # a path works
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):  # read, then closed
            replayer.db.execute("select 1")
        message = await replayer.run(bus)
    assert seen.events == live.events
    assert message.text == recorded.text and message.text
    assert message.stop == recorded.stop and message.usage == recorded.usage
    # One batch per recorded read: a batch shares one t_ns, and the next one differs.
    times = [batch[0].t_ns for batch in published]
    assert all(len({e.t_ns for e in batch}) == 1 for batch in published)
    assert all(a != b for a, b in itertools.pairwise(times))


@pytest.mark.parametrize("speed", [1.0, 2.0])
async def test_each_event_arrives_at_its_recorded_offset_over_speed(
    autojump_clock: trio.abc.Clock, tmp_path: Path, speed: float
) -> None:
    db = open_db(tmp_path / "r.db")
    events = paced_session()
    store(db, events)
    t0 = trio.current_time()
    _, seen = await replay(db, speed=speed)
    assert seen.events == events
    for delivered, batch in seen.batches:
        assert delivered - t0 == batch[0].t_ns / 1e9 / speed
    # The two deltas recorded at 0.25 s came from one read: one batch.
    assert [len(batch) for _, batch in seen.batches] == [1, 2, 1, 1, 1, 2]
    assert trio.current_time() - t0 == 2.0 / speed


def test_the_pacer_leads_a_late_timer_by_its_median_lateness() -> None:
    """A timer that wakes on whole milliseconds rounded up, 0.2 ms after that (trio on Linux's
    epoll, roughly): sleeping until each due time lands every event 0.2-1.2 ms late. Led by
    the pacer, the typical event lands within a quarter millisecond, early or late; a
    precise timer (MockClock's) gets no lead; one wake a busy moment delays moves the lead
    by one step only."""
    rng = random.Random(1)

    def late_timer(at: float) -> float:
        return math.ceil(at * 1000) / 1000 + 0.0002

    pacer, precise = _Pacer(), _Pacer()
    due, naive, led = 0.0, [], []
    for _ in range(1000):
        due += rng.uniform(0.005, 0.02)
        woke = late_timer(pacer.wake_at(due))
        pacer.woke(due, woke)
        led.append(woke - due)
        naive.append(late_timer(due) - due)
        precise.woke(due, precise.wake_at(due))
    settled = led[100:]
    assert statistics.median(naive) > 0.0006
    assert abs(statistics.median(settled)) < 0.0001  # as often early as late
    assert statistics.median(abs(lag) for lag in settled) < 0.0003
    assert 0.0005 < pacer.lead < 0.0009
    assert precise.lead == 0.0
    lead = pacer.lead
    pacer.woke(due, due + 0.05)
    assert pacer.lead == pytest.approx(lead + _Pacer.STEP)


async def test_instant_replay_takes_no_time(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    db = open_db(tmp_path / "r.db")
    store(db, paced_session())
    t0 = trio.current_time()
    _, seen = await replay(db, speed=math.inf)
    assert seen.events == paced_session()
    assert {delivered for delivered, _ in seen.batches} == {t0}


async def test_cancelling_mid_replay_ends_with_one_cancelled_stop(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    db = open_db(tmp_path / "r.db")
    store(db, paced_session())
    seen = Collector()
    async with open_bus() as bus:
        bus.subscribe(seen)
        with trio.move_on_after(0.75 / 2) as scope:  # speed 2: 0.75 s of the recording
            await Replayer(db, SID, speed=2).run(bus)
    assert scope.cancelled_caught
    events = seen.events
    assert events[:-1] == paced_session()[:4]  # up to and including the delta at 0.5 s
    assert events[-1] == Stop(session=SID, seq=4, t_ns=750_000_000, reason="cancelled")
    assert sum(isinstance(e, Stop) for e in events) == 1


async def test_an_incomplete_recording_ends_with_an_error_stop(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    db = open_db(tmp_path / "r.db")
    events = paced_session(stop=False)
    store(db, events)
    assert db["sessions"].get(SID)["status"] == "incomplete"
    message, seen = await replay(db)
    assert seen.events[:-1] == events
    last = seen.events[-1]
    assert last == Stop(
        session=SID, seq=len(events), t_ns=events[-1].t_ns, reason="error", error=INCOMPLETE_ERROR
    )
    assert message.stop == last and message.text == "w1 w2 w3 w4 w5 "


def test_unknown_session_and_bad_speed(tmp_path: Path) -> None:
    db = open_db(tmp_path / "r.db")
    with pytest.raises(LookupError, match="no recorded session 'nope'"):
        Replayer(db, "nope")
    for speed in (0, -1, math.nan):
        with pytest.raises(ValueError, match="speed must be positive"):
            Replayer(db, SID, speed=speed)


SAMPLES = sorted((ROOT / "recordings").glob("*.jsonl"))


def test_there_are_three_samples() -> None:
    assert len(SAMPLES) == 3


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
async def test_sample_recordings_import_and_replay(tmp_path: Path, sample: Path) -> None:
    db = open_db(tmp_path / "r.db")
    with sample.open("rb") as lines:
        result = import_sessions(db, lines)
    assert len(result.imported) == 1 and not result.skipped
    (session,) = result.imported
    row = db["sessions"].get(session)
    assert row["status"] == "ok" and row["provider"] == "sim"
    assert row["ttft_ns"] > 100_000_000  # realistic pacing, not an instant recording

    message, seen = await replay(db, session, speed=None)
    assert message.stop is not None and message.stop.reason == row["stop_reason"]
    assert [e.seq for e in seen.events] == list(range(row["events"]))
    if message.stop.reason == "tool_calls":
        assert any(isinstance(e, ToolDelta) for e in seen.events)
        (call,) = message.tool_calls
        assert call.name == "get_weather" and "서울" in call.arguments
