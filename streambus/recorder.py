"""The recorder: a subscriber that stores every event it receives in a SQLite database.

Recording must never slow the stream, and a crash must lose at most a moment: events are
batched in memory and written off the trio thread (one worker thread at a time per
database, through a CapacityLimiter) at least every ``flush_interval`` (100 ms), at every
``stop``, and when the bus closes. Each write is one transaction, so a process killed
mid-stream leaves a consistent database holding everything flushed before the kill; its
session's status stays ``incomplete``. Every event is stored exactly once, in ``seq`` order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from streambus.db import SessionState, event_rows, open_db, write
from streambus.events import Event, Start, Stop

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["Recorder"]


class Recorder:
    """Record a bus to ``db`` (a path, or an open database): ``bus.subscribe(Recorder(path))``.

    One recorder serves any number of concurrent sessions on its bus. Several recorders (or
    processes) may share a database file: SQLite serializes their writes.
    """

    flush_interval: float = 0.1

    def __init__(
        self,
        db: sqlite_utils.Database | str | os.PathLike[str],
        *,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.db = open_db(db) if isinstance(db, str | os.PathLike) else db
        self._limiter = limiter or trio.CapacityLimiter(1)
        self._states: dict[str, SessionState] = {}
        self._rows: list[tuple[Any, ...]] = []
        self._touched: set[str] = set()
        self.sessions: list[str] = []
        """Ids of the sessions this recorder has seen start, in order."""

    async def on_events(self, batch: Sequence[Event]) -> None:
        self._rows += event_rows(batch, self._states)
        for event in batch:
            self._touched.add(event.session)
            if type(event) is Start:
                self.sessions.append(event.session)
        if any(type(event) is Stop for event in batch):
            await self.flush()

    async def flush(self) -> None:
        """Write what is pending, in a worker thread; finished sessions are forgotten."""
        if not self._rows and not self._touched:
            return
        rows, self._rows = self._rows, []
        sessions = [self._states[sid].row(sid) for sid in self._touched]
        self._touched = set()
        for sid in [s for s in self._states if self._states[s].stop is not None]:
            del self._states[sid]
        await trio.to_thread.run_sync(write, self.db, sessions, rows, limiter=self._limiter)
