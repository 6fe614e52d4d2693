"""Export and import: JSON lines that round-trip byte for byte, imports that are all or
nothing, and session rows derived exactly as the recorder derives them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import msgspec
import pytest

from streambus import Recorder, open_bus, open_db, stream
from streambus.exchange import export_sessions, import_sessions
from streambus.simulator import SimulatorConfig, parse_fault

FAST = SimulatorConfig(ttft=0, tokens_per_second=0, jitter=0)


async def record(db: Any, prompt: str, config: SimulatorConfig = FAST) -> str:
    async with open_bus() as bus:
        bus.subscribe(Recorder(db))
        message = await stream(bus, prompt, provider="sim", simulator=config)
    assert message.session is not None
    return message.session


def export(db: Any, ids: list[str] | None = None) -> bytes:
    out = io.BytesIO()
    export_sessions(db, out, ids)
    return out.getvalue()


def with_seq(line: bytes, seq: int) -> bytes:
    return msgspec.json.encode(msgspec.json.decode(line) | {"seq": seq})


def table(db: Any, name: str) -> list[dict[str, Any]]:
    order = "id" if name == "sessions" else "session_id, seq"
    return [dict(row) for row in db.query(f"select * from {name} order by {order}")]


@pytest.fixture
async def recorded(tmp_path: Path) -> tuple[Any, list[str]]:
    """Three sessions: an answer, a failure mid-stream, and a Korean answer."""
    db = open_db(tmp_path / "a.db")
    ids = [
        await record(db, "What is streaming?"),
        await record(
            db,
            "Hi",
            SimulatorConfig(ttft=0, tokens_per_second=0, fault=parse_fault("disconnect:4")),
        ),
        await record(db, "스트리밍이 뭐예요?"),
    ]
    return db, ids


async def test_export_import_export_is_byte_identical(
    tmp_path: Path, recorded: tuple[Any, list[str]]
) -> None:
    db, ids = recorded
    first = export(db)
    lines = first.splitlines()
    assert len(lines) == sum(row["events"] for row in table(db, "sessions"))
    assert lines[0].startswith(b'{"type":"start","session":"%s"' % ids[0].encode())

    fresh = open_db(tmp_path / "b.db")
    result = import_sessions(fresh, io.BytesIO(first))
    assert result.imported == ids and result.imported_events == len(lines)
    assert export(fresh) == first
    # Rows and per-event gaps are derived exactly as the recorder derived them.
    assert table(fresh, "sessions") == table(db, "sessions")
    assert table(fresh, "events") == table(db, "events")
    assert {row["status"] for row in table(fresh, "sessions")} == {"ok", "error"}


async def test_export_selected_sessions_in_started_order(recorded: tuple[Any, list[str]]) -> None:
    db, ids = recorded
    out = export(db, [ids[2], ids[0]])
    sessions = [line.split(b'"session":"')[1][:24].decode() for line in out.splitlines()]
    assert list(dict.fromkeys(sessions)) == [ids[0], ids[2]]
    assert export(db, []) == b""


async def test_a_bad_line_is_named_and_nothing_is_imported(
    tmp_path: Path, recorded: tuple[Any, list[str]]
) -> None:
    db, _ = recorded
    lines = export(db).splitlines()
    broken = [*lines[:5], b'{"type":"delta","session":"x","seq":"one"}', *lines[5:]]
    fresh = open_db(tmp_path / "b.db")
    with pytest.raises(ValueError, match=r"^line 6: not a streambus event: Expected `int`"):
        import_sessions(fresh, broken)
    with pytest.raises(ValueError, match=r"^line 2: not a streambus event"):
        import_sessions(fresh, [lines[0], b"not json", *lines[1:]])
    with pytest.raises(ValueError, match=r"^line 3: not UTF-8"):
        import_sessions(fresh, [lines[0], lines[1], b"\xff\xfe"])
    assert table(fresh, "sessions") == [] and table(fresh, "events") == []


async def test_incomplete_or_disordered_sessions_are_refused(
    tmp_path: Path, recorded: tuple[Any, list[str]]
) -> None:
    db, ids = recorded
    lines = export(db, [ids[0]]).splitlines()
    fresh = open_db(tmp_path / "b.db")
    with pytest.raises(ValueError, match=rf"^line 3: session {ids[0]}: seq 2 is missing"):
        import_sessions(fresh, [*lines[:2], *lines[3:]])
    with pytest.raises(ValueError, match=r"seq 1 appears twice"):
        import_sessions(fresh, [*lines[:2], lines[1], *lines[2:]])
    with pytest.raises(ValueError, match=r"^line 1: .*: seq 0 is missing"):
        import_sessions(fresh, lines[1:])
    with pytest.raises(ValueError, match=r"^line 2: .*: a session has one start event, at seq 0"):
        import_sessions(fresh, [lines[0], with_seq(lines[0], 1), *lines[2:]])
    last = len(lines) - 1  # usage, then stop: swap their numbers
    swapped = [with_seq(lines[last], last - 1), with_seq(lines[last - 1], last)]
    with pytest.raises(ValueError, match=rf"^line {last}: .*: events follow its stop"):
        import_sessions(fresh, [*lines[:-2], *swapped])
    assert table(fresh, "sessions") == []
    # Order in the file does not matter, and blank lines are ignored.
    result = import_sessions(fresh, [b"", *reversed(lines), b"\n"])
    assert result.imported == [ids[0]]
    assert export(fresh) == export(db, [ids[0]])


async def test_importing_twice_skips_what_is_there(
    tmp_path: Path, recorded: tuple[Any, list[str]]
) -> None:
    db, ids = recorded
    fresh = open_db(tmp_path / "b.db")
    import_sessions(fresh, export(db, [ids[1]]).splitlines())
    result = import_sessions(fresh, export(db).splitlines())
    assert result.imported == [ids[0], ids[2]]
    assert result.skipped == [ids[1]]
    assert result.skipped_events == table(db, "sessions")[1]["events"]
    again = import_sessions(fresh, export(db).splitlines())
    assert again.imported == [] and again.skipped == ids and again.imported_events == 0
    assert export(fresh) == export(db)


async def test_lines_are_stored_as_given(tmp_path: Path, recorded: tuple[Any, list[str]]) -> None:
    """A field from a newer streambus survives an import here and comes back out."""
    db, ids = recorded
    lines = export(db, [ids[0]]).splitlines()
    lines[1] = lines[1][:-1] + b',"added_later":{"x":1}}'
    fresh = open_db(tmp_path / "b.db")
    import_sessions(fresh, lines)
    assert export(fresh).splitlines() == lines
    assert table(fresh, "sessions") == [row for row in table(db, "sessions") if row["id"] == ids[0]]


# -- regressions found in review ------------------------------------------------------------------


def start_line(session: str, started_at: str, request: dict[str, Any] | None = None) -> bytes:
    start = {
        "type": "start",
        "session": session,
        "seq": 0,
        "t_ns": 0,
        "provider": "sim",
        "model": "m",
        "started_at": started_at,
        "request": request,
    }
    stop = {"type": "stop", "session": session, "seq": 1, "t_ns": 5, "reason": "stop"}
    return msgspec.json.encode(start) + b"\n" + msgspec.json.encode(stop) + b"\n"


async def test_imported_start_times_are_stored_in_one_canonical_form(tmp_path: Path) -> None:
    db = open_db(tmp_path / "tz.db")
    lines = (
        start_line("aaa", "2026-03-01T09:00:00.000000+00:00")
        + start_line("bbb", "2026-03-01T10:00:00+02:00")  # 08:00 UTC: the oldest
        + start_line("ccc", "yesterday")
    )
    import_sessions(db, io.BytesIO(b"\xef\xbb\xbf" + lines))  # with a BOM, as some editors save
    stored = {r["id"]: r["started_at"] for r in table(db, "sessions")}
    assert stored == {
        "aaa": "2026-03-01T09:00:00.000000+00:00",
        "bbb": "2026-03-01T08:00:00.000000+00:00",
        "ccc": None,
    }
    from streambus.db import find_session

    assert find_session(db, "latest") == "aaa"


async def test_an_imported_request_is_scrubbed_in_the_sessions_row(tmp_path: Path) -> None:
    db = open_db(tmp_path / "s.db")
    request = {"model": "m", "api_key": "sk-imported-secret-123456", "max_tokens": 5}
    import_sessions(db, io.BytesIO(start_line("sss", "2026-03-01T09:00:00+00:00", request)))
    [row] = table(db, "sessions")
    assert msgspec.json.decode(row["request"]) == {
        "model": "m",
        "api_key": "[redacted]",
        "max_tokens": 5,
    }
