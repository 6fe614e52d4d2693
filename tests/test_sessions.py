"""Listing recorded sessions: newest first, the filters, and what --since accepts."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from streambus import Delta, Event, Start, Stop, open_db
from streambus.db import SessionState, event_rows, list_sessions, parse_since, write

UTC = datetime.UTC
NOW = datetime.datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def session(
    db: Any,
    n: int,
    *,
    hours_ago: float,
    provider: str = "sim",
    model: str = "sim-1",
    stop: Any = "stop",
) -> str:
    sid = f"{n:024x}"
    started = (NOW - datetime.timedelta(hours=hours_ago)).isoformat(timespec="microseconds")
    events: list[Event] = [
        Start(session=sid, seq=0, t_ns=0, provider=provider, model=model, started_at=started),
        Delta(session=sid, seq=1, t_ns=10, text="hi"),
    ]
    if stop is not None:
        events.append(
            Stop(session=sid, seq=2, t_ns=20, reason=stop, error="x" if stop == "error" else None)
        )
    states: dict[str, SessionState] = {}
    rows = event_rows(events, states)
    write(db, [states[sid].row(sid)], rows)
    return sid


@pytest.fixture
def db(tmp_path: Path) -> Any:
    db = open_db(tmp_path / "r.db")
    session(db, 1, hours_ago=50)
    session(db, 2, hours_ago=30, provider="openai", model="gpt-4o-mini")
    session(db, 3, hours_ago=5, stop="error")
    session(db, 4, hours_ago=3, stop=None)
    session(db, 5, hours_ago=1, provider="anthropic", model="claude", stop="cancelled")
    session(db, 6, hours_ago=0.5, stop="length")
    return db


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [int(row["id"], 16) for row in rows]


def test_newest_first_with_a_limit(db: Any) -> None:
    assert ids(list_sessions(db)) == [6, 5, 4, 3, 2, 1]
    assert ids(list_sessions(db, limit=2)) == [6, 5]
    assert ids(list_sessions(db, limit=None)) == [6, 5, 4, 3, 2, 1]


def test_filters(db: Any) -> None:
    assert ids(list_sessions(db, provider="sim")) == [6, 4, 3, 1]
    assert ids(list_sessions(db, model="gpt-4o-mini")) == [2]
    assert ids(list_sessions(db, status="ok")) == [6, 2, 1]  # length counts as ok
    assert ids(list_sessions(db, status="incomplete")) == [4]
    assert ids(list_sessions(db, status="cancelled", provider="anthropic")) == [5]
    assert ids(list_sessions(db, since=NOW - datetime.timedelta(hours=4))) == [6, 5, 4]
    assert ids(list_sessions(db, since=parse_since("1d", now=NOW), provider="sim")) == [6, 4, 3]
    row = list_sessions(db, limit=1)[0]
    assert row["stop_reason"] == "length" and row["ttft_ns"] == 10 and row["e2e_ns"] == 20


def test_since_accepts_durations_and_iso_times() -> None:
    assert parse_since("2h", now=NOW) == NOW - datetime.timedelta(hours=2)
    assert parse_since("3d", now=NOW) == NOW - datetime.timedelta(days=3)
    assert parse_since("90m", now=NOW) == NOW - datetime.timedelta(minutes=90)
    assert parse_since("1.5w", now=NOW) == NOW - datetime.timedelta(days=10.5)
    assert parse_since("2026-03-01T09:30+09:00") == datetime.datetime(2026, 3, 1, 0, 30, tzinfo=UTC)
    local = parse_since("2026-03-01")  # no offset: the local time zone
    assert local.tzinfo is not None
    assert local.replace(tzinfo=None) == datetime.datetime(2026, 3, 1)
    for bad in ("yesterday", "2x", "-3h", ""):
        with pytest.raises(ValueError, match="neither a duration"):
            parse_since(bad)


def test_lookups_refuse_an_empty_prefix_and_ignore_case(db: Any) -> None:
    from streambus.db import find_session

    with pytest.raises(LookupError, match="empty session id"):
        find_session(db, "  ")
    any_id = next(iter(db["sessions"].rows))["id"]
    assert find_session(db, any_id.upper()) == any_id


def test_since_far_in_the_past_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="before the year 1"):
        parse_since("99999999w")
