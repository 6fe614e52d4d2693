"""The recorder: a subscriber that stores every event it receives in a SQLite database.

Recording must never slow the stream, and a crash must lose at most a moment: events are
batched in memory and written off the trio thread (one worker thread at a time per
database, through a CapacityLimiter) at least every ``flush_interval`` (100 ms), at every
``stop``, and when the bus closes. Each write is one transaction, so a process killed
mid-stream leaves a consistent database holding everything flushed before the kill; its
session's status stays ``incomplete``. Every event is stored exactly once, in ``seq`` order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from streambus.db import SessionState, event_rows, open_db, write
from streambus.events import Event, Start, Stop

if TYPE_CHECKING:
    import outcome
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

    Writes run behind the stream: a write started at a ``stop`` or by the bus's periodic
    :meth:`start_flush` goes on in its worker thread while the recorder takes the next
    batches, so building rows on the trio thread and SQLite's work overlap. At most one
    write is in flight; the next one waits for it (backpressure, bounded memory).

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
        if isinstance(db, str | os.PathLike):
            self.db, self._owns_db = open_db(db), True  # ours to close (aclose)
        else:
            self.db, self._owns_db = db, False
        self._limiter = limiter or _limiter_of(self.db)
        self._states: dict[str, SessionState] = {}
        self._rows: list[tuple[Any, ...]] = []
        self._touched: set[str] = set()
        self._finished: dict[str, None] = {}  # recently stopped sessions, oldest first
        self._ignored: set[str] = set()
        self._writing: trio.Event | None = None  # set when the write in flight has ended
        self._in_flight = 0  # events in that write
        self._fatal: BaseException | None = None  # a failed write's error, to raise here
        self._failing = False
        self.last_error: str | None = None
        """Why the last write failed, while events are still waiting to be written."""

    @property
    def pending(self) -> int:
        """Events received but not yet written (a locked or full database): 0 once all are."""
        return len(self._rows) + self._in_flight

    async def on_events(self, batch: Sequence[Event]) -> None:
        wanted = self._select(batch)
        self._rows += event_rows(wanted, self._states)
        if Stop in map(type, wanted):
            await self.start_flush()

    def _select(self, batch: Sequence[Event]) -> Sequence[Event]:
        """The events of ``batch`` to record; their sessions are marked as touched."""
        sessions = {event.session for event in batch}
        states = self._states
        for session in sessions:
            state = states.get(session)
            if state is None or state.stop is not None:
                break
        else:  # every session of the batch is being recorded: take it whole
            self._touched |= sessions
            return batch
        wanted = [event for event in batch if self._wanted(event)]
        self._touched.update(event.session for event in wanted)
        return wanted

    def _wanted(self, event: Event) -> bool:
        session = event.session
        state = self._states.get(session)
        if state is not None and state.stop is None:
            return True
        finished = state is not None or session in self._finished  # stopped: written or not
        if state is None and type(event) is Start and not finished:
            self._states[session] = SessionState()  # the rest of its batch is wanted too
            return True
        if session not in self._ignored:  # say so once per session
            self._ignored.add(session)
            why = "after its stop" if finished else "without its start"
            logger.warning("recorder: ignoring events of session %s %s", session, why)
        return False

    async def __aenter__(self) -> Recorder:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Write what is pending, then close the database if the recorder opened it (it was
        given a path); one given an open database leaves it open. ``async with
        Recorder(path) as recorder:`` calls this on leaving.

        Left to the garbage collector, the connection of a recorder no longer used is
        closed at some later moment on whichever thread collects it, and that close can be
        SQLite's final WAL checkpoint: tens of milliseconds (docs/performance.md).

        Raises ``sqlite3.OperationalError`` if events are still unwritten (the database
        refused them); the database then stays open, and a later :meth:`flush` or
        :meth:`aclose` tries again.
        """
        await self.flush()
        if self.pending:
            raise sqlite3.OperationalError(
                f"recorder: {self.pending} events not written ({self.last_error}); "
                "the database stays open"
            )
        if self._owns_db:
            self.db.conn.close()

    async def flush(self) -> None:
        """Write what is pending in a worker thread and wait until it is written (or the
        write failed: then everything stays pending for the next one)."""
        await self.start_flush()
        await self._written()

    async def start_flush(self) -> None:
        """Start writing what is pending in a worker thread, without waiting for it to end.

        It waits for the write before it, if one is still in flight. The bus calls this every
        ``flush_interval`` while events flow (docs/subscribers.md), and :meth:`flush` at the
        end.
        """
        await self._written()
        if not self._rows and not self._touched:
            return
        done = self._writing = trio.Event()  # claimed before the limiter: one write at a time
        try:
            await self._limiter.acquire_on_behalf_of(done)
        except BaseException:
            self._writing = None
            done.set()
            raise
        sessions = [self._states[sid].row(sid) for sid in self._touched]
        stopped = [sid for sid in self._touched if self._states[sid].stop is not None]
        rows, touched = self._rows, self._touched
        self._rows, self._touched, self._in_flight = [], set(), len(rows)
        token = trio.lowlevel.current_trio_token()

        def work() -> BaseException | None:  # in the worker thread
            try:
                write(self.db, sessions, rows)
            except BaseException as exc:
                return exc
            return None

        def deliver(result: outcome.Outcome[BaseException | None]) -> None:  # worker thread
            with contextlib.suppress(trio.RunFinishedError):  # the run ended: nobody to tell
                token.run_sync_soon(self._done, done, result.unwrap(), rows, touched, stopped)

        trio.lowlevel.start_thread_soon(work, deliver, name="streambus recorder write")

    def _done(
        self,
        done: trio.Event,
        error: BaseException | None,
        rows: list[tuple[Any, ...]],
        touched: set[str],
        stopped: list[str],
    ) -> None:
        """A write ended (on the trio thread): account for it, and wake whoever waits."""
        self._limiter.release_on_behalf_of(done)
        self._writing, self._in_flight = None, 0
        done.set()
        if error is None:
            if self._failing:
                logger.warning("recorder: writing again; nothing was lost")
            self._failing = False
            self.last_error = None
            for sid in stopped:
                del self._states[sid]
                self._finished[sid] = None
                if len(self._finished) > _FINISHED_KEPT:
                    del self._finished[next(iter(self._finished))]
            return
        self._rows = rows + self._rows  # kept, for the next write
        self._touched |= touched
        if not isinstance(error, sqlite3.Error) or len(self._rows) > self.max_pending:
            self._fatal = error
            return
        if not self._failing:
            logger.warning("recorder: cannot write yet (%s); will retry", error)
        self._failing = True
        self.last_error = str(error)

    async def _written(self) -> None:
        """Wait until no write is in flight; raise what made the recorder give up, if any.

        Shielded, as ``trio.to_thread.run_sync`` waits for its thread: a write is never left
        running behind a cancelled caller."""
        with trio.CancelScope(shield=True):
            while self._writing is not None:
                await self._writing.wait()
        if self._fatal is not None:
            raise self._fatal


_FINISHED_KEPT = 10_000


def _limiter_of(db: sqlite_utils.Database) -> trio.CapacityLimiter:
    """One worker-thread turn per open database: its connection is not safe for two."""
    limiter: trio.CapacityLimiter | None = getattr(db, "_streambus_limiter", None)
    if limiter is None:
        limiter = trio.CapacityLimiter(1)
        db._streambus_limiter = limiter  # type: ignore[attr-defined]
    return limiter
