"""Moving recordings between databases: export sessions as JSON lines, import them back.

The format is the one every other part of streambus already speaks: one event per line, in its
public JSON form (docs/events.md), sessions one after another in ``started_at`` order, each
session's events in ``seq`` order. Exported lines are the stored payloads verbatim and imports
store each validated line as it is, so export → import → export is byte-identical, and fields
a newer streambus adds survive a trip through an older one.

An import is all or nothing: every line is validated (and every session checked whole)
before anything is written, then everything is written in one transaction. Sessions already
in the database are skipped, so importing a file twice is harmless. Session rows and latency
figures are derived by the same code as the recorder's (``SessionState``), never copied from
the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any

import msgspec

from streambus.db import SessionState, event_rows, write
from streambus.events import Event, Start, Stop, decode_event

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["ImportResult", "export_sessions", "import_sessions"]


def export_sessions(
    db: sqlite_utils.Database, out: IO[bytes], session_ids: Sequence[str] | None = None
) -> tuple[int, int]:
    """Write sessions (all when ``session_ids`` is None) to ``out``; return (sessions, events)."""
    sql = "select e.session_id, e.payload from events e join sessions s on s.id = e.session_id"
    params: list[str] = []
    if session_ids is not None:
        if not session_ids:
            return 0, 0
        sql += f" where s.id in ({', '.join('?' for _ in session_ids)})"
        params = list(session_ids)
    sql += " order by s.started_at, s.id, e.seq"
    sessions = events = 0
    previous = None
    for session_id, payload in db.execute(sql, params):
        if session_id != previous:
            sessions += 1
            previous = session_id
        out.write(payload.encode() + b"\n")
        events += 1
    return sessions, events


class ImportResult(msgspec.Struct, kw_only=True):
    """What an import did: sessions (and their events) written, and those already present."""

    imported: list[str]
    imported_events: int
    skipped: list[str]
    skipped_events: int


def import_sessions(db: sqlite_utils.Database, lines: Iterable[bytes | str]) -> ImportResult:
    """Import JSON lines (an export); all or nothing. Raises ValueError naming the bad line."""
    sessions: dict[str, list[tuple[int, Event, str]]] = {}
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode() if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            raise ValueError(f"line {number}: not UTF-8") from None
        if number == 1:
            text = text.removeprefix("\ufeff")  # files saved by some editors start with a BOM
        text = text.strip()
        if not text:
            continue
        try:
            event = decode_event(text)
        except msgspec.DecodeError as exc:
            raise ValueError(f"line {number}: not a streambus event: {exc}") from None
        sessions.setdefault(event.session, []).append((number, event, text))
    for found in sessions.values():
        found.sort(key=lambda item: item[1].seq)
        _check_session(found)

    present = _existing(db, list(sessions))
    result = ImportResult(imported=[], imported_events=0, skipped=[], skipped_events=0)
    states: dict[str, SessionState] = {}
    rows: list[tuple[Any, ...]] = []
    for session_id, found in sessions.items():
        if session_id in present:
            result.skipped.append(session_id)
            result.skipped_events += len(found)
            continue
        new_rows = event_rows([event for _, event, _ in found], states)
        # The payload column keeps the line as given (it is valid: decode_event said so).
        rows += [
            (*row[:4], text, row[5]) for row, (_, _, text) in zip(new_rows, found, strict=True)
        ]
        result.imported.append(session_id)
        result.imported_events += len(found)
    write(db, [states[sid].row(sid) for sid in result.imported], rows)
    return result


def _check_session(found: list[tuple[int, Event, str]]) -> None:
    """A session must be whole: ``start`` at seq 0, no gaps or repeats, nothing after ``stop``."""
    for position, (number, event, _) in enumerate(found):
        where = f"line {number}: session {event.session}"
        if event.seq < position:
            raise ValueError(f"{where}: seq {event.seq} appears twice")
        if event.seq > position:
            raise ValueError(f"{where}: seq {position} is missing")
        if (position == 0) != (type(event) is Start):
            raise ValueError(f"{where}: a session has one start event, at seq 0")
        if type(event) is Stop and position != len(found) - 1:
            raise ValueError(f"{where}: events follow its stop")


def _existing(db: sqlite_utils.Database, session_ids: list[str]) -> set[str]:
    present: set[str] = set()
    for start in range(0, len(session_ids), 500):  # stay under SQLite's variable limit
        chunk = session_ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        cursor = db.execute(f"select id from sessions where id in ({marks})", chunk)
        present.update(row[0] for row in cursor)
    return present
