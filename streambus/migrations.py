"""The recordings schema, as numbered, idempotent migrations recorded in the database.

Like ``llm``'s migrations: each function runs once, in order, and its name is stored in
``_streambus_migrations``; ``PRAGMA user_version`` mirrors how many have run. Never edit a
released migration; add the next one. docs/recording.md describes the resulting schema.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

Migration = Callable[["sqlite_utils.Database"], None]
MIGRATIONS: list[Migration] = []


def _migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@_migration
def m001_sessions_and_events(db: sqlite_utils.Database) -> None:
    db["sessions"].create(  # type: ignore[union-attr]
        {
            "id": str,
            "provider": str,
            "model": str,
            "host": str,
            "request": str,  # JSON body sent, credentials never included
            "started_at": str,  # UTC, ISO 8601
            "status": str,  # ok | error | cancelled | incomplete (no stop recorded)
            "stop_reason": str,
            "raw_stop_reason": str,
            "error": str,
            "input_tokens": int,
            "output_tokens": int,
            "cached_tokens": int,
            "reasoning_tokens": int,
            "events": int,
        },
        pk="id",
    )
    db["events"].create(  # type: ignore[union-attr]
        {"session_id": str, "seq": int, "t_ns": int, "type": str, "payload": str},
        pk=("session_id", "seq"),
        foreign_keys=[("session_id", "sessions", "id")],
    )
    db["sessions"].create_index(["started_at"])  # type: ignore[union-attr]


@_migration
def m002_latency_figures(db: sqlite_utils.Database) -> None:
    """Per-session latency figures, and each content event's gap, so stats stay in SQL."""
    sessions = db["sessions"]
    for column, kind in [
        ("ttft_ns", int),
        ("e2e_ns", int),
        ("content_events", int),
        ("itl_mean_ns", float),
        ("itl_p50_ns", float),
        ("itl_p90_ns", float),
        ("itl_p99_ns", float),
        ("itl_max_ns", int),
        ("tpot_ns", float),
        ("tokens_per_s", float),
    ]:
        sessions.add_column(column, kind)  # type: ignore[union-attr]
    db["events"].add_column("gap_ns", int)  # type: ignore[union-attr]
    db["sessions"].create_index(["provider", "model"])  # type: ignore[union-attr]
    # Sessions recorded before this migration get their figures from their events.
    from streambus.db import refresh_figures

    for (session_id,) in db.execute("select id from sessions").fetchall():
        refresh_figures(db, session_id)


@_migration
def m003_gap_index(db: sqlite_utils.Database) -> None:
    """Each session's ITL gaps in order, apart: pooled ITL statistics read only this index.

    ``streambus stats`` finds pooled percentiles by histograms over the selected sessions'
    gaps (streambus/stats.py); this covering index gives them without touching the payloads.
    """
    db.execute(
        "create index if not exists idx_events_session_gap "
        "on events (session_id, gap_ns) where gap_ns is not null"
    )


@_migration
def m004_error_kind_and_attempts(db: sqlite_utils.Database) -> None:
    """What kind of error ended a session, and how many HTTP attempts it took (retries)."""
    sessions = db["sessions"]
    sessions.add_column("error_kind", str)  # type: ignore[union-attr]
    sessions.add_column("attempts", int)  # type: ignore[union-attr]
    # Recorded before retries were counted: each stop's payload still says (default 1).
    db.execute(
        "update sessions set "
        "error_kind = (select json_extract(payload, '$.error_kind') from events "
        "  where session_id = sessions.id and type = 'stop'), "
        "attempts = (select coalesce(json_extract(payload, '$.attempts'), 1) from events "
        "  where session_id = sessions.id and type = 'stop')"
    )


@_migration
def m005_session_gaps(db: sqlite_utils.Database) -> None:
    """Each stopped session's ITL gaps, sorted, in one blob; no more gap index on events.

    The index (``m003_gap_index``) cost about a third of each recorded row's SQLite time;
    ``streambus stats`` now pools ITL from these blobs, written once at each ``stop``. A
    session without one (no ``stop`` recorded) has its gaps read from its events.
    """
    from streambus.db import pack_gaps

    db.execute(
        "create table if not exists session_gaps ("
        "session_id text primary key references sessions(id), gaps_ns blob not null)"
    )
    stopped = db.execute(
        "select id, (select group_concat(gap_ns) from events"
        "  where session_id = sessions.id and gap_ns is not null)"
        " from sessions where status != 'incomplete'"
    ).fetchall()
    db.conn.executemany(
        "insert or replace into session_gaps (session_id, gaps_ns) values (?, ?)",
        [(sid, pack_gaps(map(int, gaps.split(",")) if gaps else ())) for sid, gaps in stopped],
    )
    db.execute("drop index if exists idx_events_session_gap")


SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite_utils.Database) -> int:
    """Apply every migration not yet applied; return the schema version now in force.

    All pending migrations run in one ``BEGIN IMMEDIATE`` transaction, so a crash leaves the
    database as it was, and processes opening a new file at once take turns: the one that
    waited finds the work done. A database already current is only read, never written.
    """
    conn = db.conn
    conn.execute(
        "create table if not exists _streambus_migrations (name text primary key, applied_at text)"
    )
    if not _pending(db):
        return SCHEMA_VERSION
    saved = conn.isolation_level
    conn.isolation_level = None  # we hold the transaction: DDL must not commit on its own
    try:
        conn.execute("begin immediate")
        try:
            for fn in _pending(db):  # again, under the lock: another process may have won
                fn(db)
                conn.execute(
                    "insert into _streambus_migrations (name, applied_at) values (?, ?)",
                    [fn.__name__, datetime.datetime.now(datetime.UTC).isoformat()],
                )
            conn.execute(f"pragma user_version = {SCHEMA_VERSION}")
            conn.execute("commit")
        except BaseException:
            conn.execute("rollback")
            raise
    finally:
        conn.isolation_level = saved
    return SCHEMA_VERSION


def _pending(db: sqlite_utils.Database) -> list[Migration]:
    done = {name for (name,) in db.conn.execute("select name from _streambus_migrations")}
    return [fn for fn in MIGRATIONS if fn.__name__ not in done]
