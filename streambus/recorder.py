"""The recorder: a subscriber that stores every event it receives in a SQLite database.

Recording must never slow the stream, and a crash must lose at most a moment: events are
batched in memory and written off the trio thread (one worker thread at a time per
database, through a CapacityLimiter) at least every ``flush_interval`` (100 ms), at every
``stop``, and when the bus closes. Each write is one transaction, so a process killed
mid-stream leaves a consistent database holding everything flushed before the kill; its
session's status stays ``incomplete``. Every event is stored exactly once, in ``seq`` order.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from streambus.db import SessionState, event_rows, open_db, write
from streambus.events import Event, Start, Stop, one_session

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["Recorder"]

logger = logging.getLogger("streambus")


class Recorder:
    """Record a bus to ``db`` (a path, or an open database): ``bus.subscribe(Recorder(path))``.

    One recorder serves any number of concurrent sessions on its bus. Several processes may
    record into one file (SQLite serializes their writes); recorders sharing one open
    database share its worker-thread turn. A recorder stores a session only from its
    ``start`` (one subscribed mid-session skips that session), nothing after its ``stop``,
    and each event once.

    A write that fails (a database locked past the busy timeout, a full disk) loses
    nothing: the rows stay pending and the next flush tries again, warning once on the
    ``streambus`` logger; only past ``max_pending`` unwritten events does the recorder give
    up (and fail as a subscriber).
    """

    flush_interval: float = 0.1
    delivery_window: float = 0.005
    """Woken at most every 5 ms, taking everything published meanwhile (docs/subscribers.md)."""
    max_pending: int = 1_000_000

    def __init__(
        self,
        db: sqlite_utils.Database | str | os.PathLike[str],
        *,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.db = open_db(db) if isinstance(db, str | os.PathLike) else db
        self._limiter = limiter or _limiter_of(self.db)
        self._states: dict[str, SessionState] = {}
        self._rows: list[tuple[Any, ...]] = []
        self._touched: set[str] = set()
        self._finished: dict[str, None] = {}  # recently stopped sessions, oldest first
        self._ignored: set[str] = set()
        self._failing = False
        self.last_error: str | None = None
        """Why the last write failed, while events are still waiting to be written."""

    @property
    def pending(self) -> int:
        """Events received but not yet written (a locked or full database): 0 once all are."""
        return len(self._rows)

    async def on_events(self, batch: Sequence[Event]) -> None:
        wanted = self._select(batch)
        self._rows += event_rows(wanted, self._states)
        if Stop in map(type, wanted):
            await self.flush()

    def _select(self, batch: Sequence[Event]) -> Sequence[Event]:
        """The events of ``batch`` to record; their sessions are marked as touched."""
        session = one_session(batch)
        if session in self._states:
            self._touched.add(session)
            return batch
        wanted = [event for event in batch if self._wanted(event)]
        self._touched.update(event.session for event in wanted)
        return wanted

    def _wanted(self, event: Event) -> bool:
        session = event.session
        if session in self._states:
            return True
        if type(event) is Start and session not in self._finished:
            self._states[session] = SessionState()  # the rest of its batch is wanted too
            return True
        if session not in self._ignored:  # say so once per session
            self._ignored.add(session)
            why = "after its stop" if session in self._finished else "without its start"
            logger.warning("recorder: ignoring events of session %s %s", session, why)
        return False

    async def flush(self) -> None:
        """Write what is pending in a worker thread; keep it all if the write fails."""
        if not self._rows and not self._touched:
            return
        sessions = [self._states[sid].row(sid) for sid in self._touched]
        try:
            await trio.to_thread.run_sync(
                write, self.db, sessions, self._rows, limiter=self._limiter
            )
        except sqlite3.Error as exc:
            if len(self._rows) > self.max_pending:
                raise
            if not self._failing:
                logger.warning("recorder: cannot write yet (%s); will retry", exc)
            self._failing = True
            self.last_error = str(exc)
            return
        if self._failing:
            logger.warning("recorder: writing again; nothing was lost")
        self._failing = False
        self.last_error = None
        self._rows = []
        self._touched = set()
        for sid in [s for s, state in self._states.items() if state.stop is not None]:
            del self._states[sid]
            self._finished[sid] = None
            if len(self._finished) > _FINISHED_KEPT:
                del self._finished[next(iter(self._finished))]


_FINISHED_KEPT = 10_000


def _limiter_of(db: sqlite_utils.Database) -> trio.CapacityLimiter:
    """One worker-thread turn per open database: its connection is not safe for two."""
    limiter: trio.CapacityLimiter | None = getattr(db, "_streambus_limiter", None)
    if limiter is None:
        limiter = trio.CapacityLimiter(1)
        db._streambus_limiter = limiter  # type: ignore[attr-defined]
    return limiter
