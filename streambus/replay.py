"""Replay a recorded session onto a bus, with the pacing it was recorded with.

A recording is the session's events, so replaying is publishing them again: subscribers
cannot tell a replay from the live stream (same session id, ``seq``, payloads and order), which
makes recordings test fixtures for subscribers, demos without a network, and a way to look at
a slow stream again. Events that share a ``t_ns`` came from one network read and are published
as one batch, as they were live. The session contract holds here too: exactly one ``stop``,
last, also when the replay is cancelled or the recording was cut short by a crash.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from streambus.bus import Bus
from streambus.db import open_db, read_events
from streambus.events import Event, Stop
from streambus.message import Message, MessageBuilder

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["INCOMPLETE_ERROR", "Replayer"]

INCOMPLETE_ERROR = "recording ends without a stop (incomplete session)"
"""The ``error`` of the ``stop`` that ends the replay of a session recorded without one."""


class Replayer:
    """Publish a recorded session onto a bus: ``await Replayer(db, session_id).run(bus)``.

    ``db`` is an open database (:func:`streambus.open_db`) or a path; ``session_id`` a full id
    (``streambus.db.find_session`` resolves prefixes and ``latest``). ``speed`` scales time: 2
    replays twice as fast; ``None`` (or ``math.inf``) publishes everything without waiting.

    The events are read here, so an unknown session (LookupError) fails before any bus is
    involved, and :meth:`run` is pacing only: no database access while subscribers wait. A
    database opened here from a path is closed here too, not left to the garbage collector
    (docs/recording.md says why); an open one given stays open.
    """

    def __init__(
        self,
        db: sqlite_utils.Database | str | os.PathLike[str],
        session_id: str,
        *,
        speed: float | None = 1.0,
    ) -> None:
        if speed is not None and not speed > 0:  # also rejects NaN
            raise ValueError(f"speed must be positive, not {speed!r}")
        self.session_id = session_id
        self.speed = math.inf if speed is None else float(speed)
        self.db = open_db(db) if isinstance(db, str | os.PathLike) else db
        try:
            self.events: list[Event] = list(read_events(self.db, session_id))
            """The recorded events, in order."""
        finally:
            if self.db is not db:  # opened here from a path: closed here, once read
                self.db.conn.close()
        if not self.events:
            raise LookupError(f"no recorded session {session_id!r}")

    async def run(self, bus: Bus) -> Message:
        """Publish the session's events with their recorded pacing; return the message.

        Cancellation propagates after a final ``stop`` (reason ``cancelled``) was published,
        shielded, like a live stream's.
        """
        builder = MessageBuilder()
        instant = self.speed == math.inf
        pacer = _Pacer()
        start = trio.current_time()
        last: Event | None = None  # the last event published

        async def publish(batch: Sequence[Event]) -> None:
            nonlocal last
            builder.add(batch)
            last = batch[-1]
            await bus.publish(batch)

        try:
            for batch in _reads(self.events):
                if instant:
                    await trio.lowlevel.checkpoint()  # stay cancellable and let others run
                else:
                    due = start + batch[0].t_ns / 1e9 / self.speed
                    await trio.sleep_until(pacer.wake_at(due))
                    pacer.woke(due, trio.current_time())
                await publish(batch)
            if type(last) is not Stop:  # the recording was cut short (a crash mid-stream)
                assert last is not None
                ending = Stop(
                    session=last.session,
                    seq=last.seq + 1,
                    t_ns=last.t_ns,
                    reason="error",
                    error=INCOMPLETE_ERROR,
                )
                await publish([ending])
        except (trio.Cancelled, KeyboardInterrupt):
            if last is not None and type(last) is not Stop:
                elapsed = 0 if instant else int((trio.current_time() - start) * self.speed * 1e9)
                cancelled = Stop(
                    session=last.session,
                    seq=last.seq + 1,
                    t_ns=max(last.t_ns, elapsed),
                    reason="cancelled",
                )
                # The last word even while cancelled, but never hang on a stuck subscriber.
                with trio.CancelScope(shield=True), trio.move_on_after(bus.grace):
                    await publish([cancelled])
            raise
        return builder.message


class _Pacer:
    """When to wake for each due time, learning how late this machine's timer wakes us.

    A sleep ends on the event loop's timer: on Linux, epoll's whole milliseconds rounded up,
    plus the OS's own latency. Sleeping until each due time therefore delivers every event
    about 1 ms late. The pacer wakes ``lead`` seconds early instead, and the lead tracks the
    median lateness: each wake moves it one ``STEP`` toward on time, so half the events land
    a little early and half a little late. A precise timer (or trio's ``MockClock``) keeps no
    lead, and a wake delayed by a busy moment moves it by one step only.
    """

    STEP = 50e-6
    MAX_LEAD = 2e-3

    def __init__(self) -> None:
        self.lead = 0.0

    def wake_at(self, due: float) -> float:
        return due - self.lead

    def woke(self, due: float, now: float) -> None:
        if now > due:
            self.lead = min(self.MAX_LEAD, self.lead + self.STEP)
        elif now < due:
            self.lead = max(0.0, self.lead - self.STEP)


def _reads(events: list[Event]) -> list[list[Event]]:
    """Consecutive events with one ``t_ns``: what one network read produced."""
    batches: list[list[Event]] = []
    for event in events:
        if batches and batches[-1][-1].t_ns == event.t_ns:
            batches[-1].append(event)
        else:
            batches.append([event])
    return batches
