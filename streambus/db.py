"""The recordings database: opening it, writing sessions and events, reading them back.

A recording is just the session's events, stored as their public JSON in ``events`` and
summarized in one ``sessions`` row (status, stop reason, token counts, latency figures) so
listings and statistics are plain SQL. The schema is in docs/recording.md and migrations.py.

SQLite connections are opened with ``check_same_thread=False`` because the recorder writes
from a worker thread; callers serialize access (the recorder through one CapacityLimiter).
WAL mode lets readers (``streambus sessions``) run while a stream is being recorded, and
other processes record into the same file; a busy timeout makes writers wait their turn.
"""

from __future__ import annotations

import datetime
import functools
import os
import re
import sqlite3
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, get_args

import msgspec

from streambus.events import Event, _encoder, decode_event
from streambus.latency import LatencyTracker
from streambus.migrations import migrate
from streambus.providers import scrub

if TYPE_CHECKING:  # sqlite-utils is imported on first use: `import streambus` stays light
    import sqlite_utils

__all__ = [
    "GAPS",
    "STATUSES",
    "SessionState",
    "configure",
    "event_rows",
    "find_session",
    "list_sessions",
    "open_db",
    "pack_gaps",
    "parse_since",
    "read_events",
    "refresh_figures",
    "unpack_gaps",
    "write",
]

_BUSY_TIMEOUT_S: Final = 30.0
_WAL_PAGES: Final = 4096


def open_db(path: str | os.PathLike[str]) -> sqlite_utils.Database:
    """Open (creating if needed) a recordings database, migrated to the current schema."""
    import sqlite_utils

    path = Path(path)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, timeout=_BUSY_TIMEOUT_S)
    configure(conn)
    conn.execute("pragma foreign_keys = on")
    db = sqlite_utils.Database(conn)
    migrate(db)
    return db


def configure(conn: sqlite3.Connection) -> None:
    """How every connection to a recordings database writes (bench/recorder.py's floors
    write the same way, so that they stay floors)."""
    conn.execute("pragma journal_mode = wal")
    conn.execute("pragma synchronous = normal")  # with WAL: safe against process crashes
    # A checkpoint every 4,096 WAL pages (16 MiB), not SQLite's 1,000: a page written again
    # before the next one is copied into the database once. ~15 % less CPU per recorded row
    # (bench/recorder.py's floor). After a big import the WAL is cut back to that size.
    conn.execute(f"pragma wal_autocheckpoint = {_WAL_PAGES}")
    conn.execute(f"pragma journal_size_limit = {_WAL_PAGES * 4096}")


class SessionState(LatencyTracker):
    """What the ``sessions`` row needs, accumulated from a session's events as they pass:
    the tracker's start, usage, stop, event count and latency (:meth:`add` returns each
    event's ITL gap, for its events row)."""

    def __init__(self) -> None:
        super().__init__()
        self._start_columns: dict[str, Any] | None = None  # computed once: scrub is costly

    def row(self, session_id: str) -> dict[str, Any]:
        """The ``sessions`` columns known so far (a session without stop is ``incomplete``);
        once it has stopped, also its sorted ITL gaps under :data:`GAPS`, which
        :func:`write` stores in ``session_gaps``."""
        row: dict[str, Any] = {"id": session_id, "events": self.events}
        start = self.start
        if start is not None:
            if self._start_columns is None:  # a row is written at every flush: do this once
                self._start_columns = {
                    "provider": start.provider,
                    "model": start.model,
                    "host": start.host,
                    "started_at": _canonical_time(start.started_at),
                    # scrubbed again: an imported recording may come from anywhere
                    "request": msgspec.json.encode(scrub(start.request)).decode()
                    if start.request
                    else None,
                }
            row |= self._start_columns
        if self.usage is not None:
            u = self.usage
            row |= {
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "cached_tokens": u.cached_tokens,
                "reasoning_tokens": u.reasoning_tokens,
            }
        stop = self.stop
        if stop is None:
            row["status"] = "incomplete"
        else:
            status = stop.reason if stop.reason in ("error", "cancelled") else "ok"
            row |= {
                "status": status,
                "stop_reason": stop.reason,
                "raw_stop_reason": stop.raw_reason,
                "error": stop.error,
                "error_kind": stop.error_kind,
                "attempts": stop.attempts,
            }
            row |= msgspec.structs.asdict(self.figures())  # final: computed once
            row[GAPS] = pack_gaps(self.gaps())
        return row


GAPS: Final = "gaps_ns"
"""The key of a session row's ITL gaps: ``session_gaps.gaps_ns``, not a ``sessions`` column."""


def pack_gaps(gaps: Iterable[int]) -> bytes:
    """ITL gaps as ``session_gaps`` stores them: sorted, 64-bit little-endian integers."""
    packed = array("q", sorted(gaps))
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_gaps(blob: bytes) -> array[int]:
    """The sorted gaps :func:`pack_gaps` stored."""
    gaps = array("q")
    gaps.frombytes(blob)
    if sys.byteorder == "big":
        gaps.byteswap()
    return gaps


def event_rows(events: Iterable[Event], states: dict[str, SessionState]) -> list[tuple[Any, ...]]:
    """``events`` rows for a batch, updating each session's state (and its ITL gaps).

    Runs once per recorded event on the stream's thread, so it calls as little as it can.
    """
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    encode = _encoder.encode  # what encode_event calls, without its call: the public JSON
    for event in events:
        session = event.session
        state = states.get(session)
        if state is None:
            state = states[session] = SessionState()
        gap = state.add(event)
        append((session, event.seq, event.t_ns, _TAGS[type(event)], encode(event).decode(), gap))
    return rows


_TAGS: Final[dict[type, str]] = {  # every member of the Event union: none can be missed
    cls: cls.__struct_config__.tag for cls in get_args(Event)
}


_EVENT_VALUES: Final = "(?, ?, ?, ?, ?, ?)"
# "or ignore": a second recorder of the same bus into the same file stores nothing twice.
_INSERT_EVENT: Final = (
    "insert or ignore into events (session_id, seq, t_ns, type, payload, gap_ns) values "
    + _EVENT_VALUES
)


def write(
    db: sqlite_utils.Database, sessions: Iterable[dict[str, Any]], rows: list[tuple[Any, ...]]
) -> None:
    """One transaction: upsert session rows (and the ITL gaps of those that stopped, in
    ``session_gaps``), then insert event rows (each stored once); a few multi-row
    statements, not one per session: each statement is a GIL hand-over (:func:`_insert_many`).

    Inside a transaction the caller holds (a migration's), it joins that one instead.
    Every event's session row is upserted first, in the same transaction, so the foreign
    key holds by construction: its check (a ``sessions`` lookup per event row, about a
    tenth of the write) is switched off for our own transaction.
    """
    sessions = list(sessions)
    by_columns: dict[tuple[str, ...], list[list[Any]]] = {}  # one statement per column set
    for session in sessions:
        columns = tuple(c for c in session if c != GAPS)
        by_columns.setdefault(columns, []).append([session[c] for c in columns])
    gaps = [(session["id"], session[GAPS]) for session in sessions if GAPS in session]
    with _unchecked_foreign_keys(db), _transaction(db):
        for columns, values in by_columns.items():
            _insert_many(db.conn, functools.partial(_upsert_session_sql, columns), values)
        if gaps:
            _insert_many(db.conn, _upsert_gaps_sql, gaps)
        _insert_many(db.conn, _insert_event_sql, in_key_order(rows))


_ROWS_PER_INSERT: Final = 512


def _insert_many(
    conn: sqlite3.Connection, statement: Callable[[int], str], rows: Sequence[Sequence[Any]]
) -> None:
    """Execute ``statement(n)`` (an insert of ``n`` rows) over ``rows``, a few hundred rows a
    statement, not one ``executemany`` step per row.

    ``sqlite3`` takes the GIL back after every statement step; with ``executemany`` that is
    once per row, so a busy trio thread starves the writer (measured: 2k rows/s against
    100k with the GIL free), and every time the writer takes the GIL back the trio thread
    waits for it. One multi-row ``values`` statement binds its rows in one pass and steps
    once. Statements come in power-of-two sizes, so a handful stay cached.
    """
    if not rows:
        return
    # SQLite before 3.32 allows 999 parameters per statement, later ones 32,766 (or more).
    most = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(rows[0])
    done, size = 0, min(_ROWS_PER_INSERT, 1 << (most.bit_length() - 1))
    while done < len(rows):
        while size > len(rows) - done:
            size //= 2
        conn.execute(statement(size), list(chain.from_iterable(rows[done : done + size])))
        done += size


@functools.cache
def _insert_event_sql(rows: int) -> str:
    return _INSERT_EVENT + f", {_EVENT_VALUES}" * (rows - 1)


@functools.cache
def _upsert_session_sql(columns: tuple[str, ...], rows: int) -> str:
    """Upsert ``rows`` session rows of these columns: every column but ``id`` is updated."""
    marks = "(" + ", ".join("?" for _ in columns) + ")"
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id")
    return (
        f"insert into sessions ({', '.join(columns)}) values "
        + ", ".join([marks] * rows)
        + f" on conflict(id) do update set {updates}"
    )


@functools.cache
def _upsert_gaps_sql(rows: int) -> str:
    return (
        "insert into session_gaps (session_id, gaps_ns) values "
        + ", ".join(["(?, ?)"] * rows)
        + " on conflict(session_id) do update set gaps_ns = excluded.gaps_ns"
    )


def in_key_order(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` in the events table's key order, so that each B-tree insert lands next to
    the previous one (far fewer page visits than rows interleaved across sessions).

    Grouped by session, sessions sorted, each session's rows in the order they came, which
    is ``seq`` order: a session's events arrive in order. A fifth of the time of sorting
    by ``(session_id, seq)`` with a key function, whose calls hold the GIL the trio thread
    needs meanwhile (measured: 5 against 36 ms for 60,000 rows).
    """
    by_session: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        same = by_session.get(row[0])
        if same is None:
            by_session[row[0]] = [row]
        else:
            same.append(row)
    if len(by_session) == 1:
        return rows
    return list(chain.from_iterable(by_session[sid] for sid in sorted(by_session)))


def read_events(db: sqlite_utils.Database, session_id: str) -> Iterator[Event]:
    """A session's events in order, as the typed events that were published."""
    cursor = db.execute(
        "select payload from events where session_id = ? order by seq", [session_id]
    )
    for (payload,) in cursor:
        yield decode_event(payload)


def refresh_figures(db: sqlite_utils.Database, session_id: str) -> None:
    """Recompute a session's row and its events' gaps from its stored events.

    Only the columns the table has are written: a migration calls this before later
    migrations have added theirs.
    """
    state = SessionState()
    gaps = []
    for event in read_events(db, session_id):
        gaps.append((state.add(event), session_id, event.seq))
    columns = set(db["sessions"].columns_dict)
    if "session_gaps" in db.table_names():
        columns.add(GAPS)
    row = {k: v for k, v in state.row(session_id).items() if k in columns}
    with _transaction(db):
        db.conn.executemany("update events set gap_ns = ? where session_id = ? and seq = ?", gaps)
        write(db, [row], [])


@contextmanager
def _transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """A transaction of our own, or the caller's if one is open (never commit theirs)."""
    if db.conn.in_transaction:
        yield
    else:
        with db.conn:
            yield


@contextmanager
def _unchecked_foreign_keys(db: sqlite_utils.Database) -> Iterator[None]:
    """Foreign keys unchecked for one transaction of ours (SQLite ignores the pragma inside
    a transaction, so a caller's transaction keeps its checks); restored afterwards."""
    conn = db.conn
    if conn.in_transaction or not conn.execute("pragma foreign_keys").fetchone()[0]:
        yield
        return
    conn.execute("pragma foreign_keys = off")
    try:
        yield
    finally:
        conn.execute("pragma foreign_keys = on")


def find_session(db: sqlite_utils.Database, ref: str) -> str:
    """A session id from ``latest``, a full id, or a unique prefix. Raises LookupError."""
    ref = ref.strip().lower()  # ids are lower-case hex
    if not ref:
        raise LookupError("an empty session id matches nothing: give an id, a prefix or latest")
    if ref == "latest":
        row = db.execute(
            "select id from sessions order by started_at desc, id desc limit 1"
        ).fetchone()
        if row is None:
            raise LookupError("no sessions recorded yet")
        return str(row[0])
    matches = [
        r[0]
        for r in db.execute(
            "select id from sessions where id >= ? and id < ? order by id limit 2",
            [ref, ref + "\U0010ffff"],
        )
    ]
    if not matches:
        raise LookupError(f"no session matches {ref!r}")
    if len(matches) > 1:
        raise LookupError(f"{ref!r} matches several sessions; give more characters")
    return str(matches[0])


STATUSES: Final = ("ok", "error", "cancelled", "incomplete")
"""``sessions.status``: ``incomplete`` is a session without a recorded ``stop`` (a crash)."""


def list_sessions(
    db: sqlite_utils.Database,
    *,
    provider: str | None = None,
    model: str | None = None,
    status: str | None = None,
    since: datetime.datetime | None = None,
    limit: int | None = 20,
) -> list[dict[str, Any]]:
    """``sessions`` rows, newest first, filtered; ``since`` is inclusive (naive means UTC)."""
    where, params = _filters(provider=provider, model=model, status=status, since=since)
    sql = f"select * from sessions{where} order by started_at desc, id desc"
    if limit is not None:
        sql += " limit ?"
        params.append(limit)
    return [dict(row) for row in db.query(sql, params)]


def session_conditions(
    *,
    provider: str | None,
    model: str | None,
    status: str | None,
    since: datetime.datetime | None,
) -> tuple[list[str], list[Any]]:
    """SQL conditions on ``sessions`` for the filters every command shares, with parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("provider", provider), ("model", model), ("status", status)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        # started_at is written as UTC ISO 8601 with microseconds, so text order is time order.
        clauses.append("started_at >= ?")
        params.append(_utc_iso(since))
    return clauses, params


def _filters(
    *,
    provider: str | None,
    model: str | None,
    status: str | None,
    since: datetime.datetime | None,
) -> tuple[str, list[Any]]:
    """A ``where`` clause (or nothing) and its parameters, for the listing filters."""
    clauses, params = session_conditions(provider=provider, model=model, status=status, since=since)
    return (" where " + " and ".join(clauses) if clauses else ""), params


def _utc_iso(moment: datetime.datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).isoformat(timespec="microseconds")


_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _canonical_time(text: str | None) -> str | None:
    """UTC ISO 8601 with microseconds, whatever form an imported ``start`` used: listing,
    ``latest`` and ``--since`` compare this column as text. Unreadable times become NULL."""
    if text is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return _utc_iso(moment)


def parse_since(text: str, *, now: datetime.datetime | None = None) -> datetime.datetime:
    """A moment from ``2h``/``3d``/``30m`` (ago) or an ISO date or time (local unless it says).

    Raises ValueError with a one-line explanation. The result is timezone-aware.
    """
    text = text.strip()
    now = now or datetime.datetime.now(datetime.UTC)
    match = _DURATION.fullmatch(text)
    if match:
        try:
            return now - datetime.timedelta(
                seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            )
        except OverflowError:
            raise ValueError(f"{text!r} reaches back before the year 1") from None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 2h, 3d, 1w) nor an ISO date or time "
            "(2026-03-01, 2026-03-01T14:30)"
        ) from None
    return moment if moment.tzinfo is not None else moment.astimezone()  # local time
