"""The event bus: publish a batch once, every subscriber receives it, in order.

Shape, and why:

- **One mailbox per subscriber.** trio memory channels are point-to-point (receive clones
  *compete* for items), so fan-out means one channel per subscriber, and (but for plain
  handlers, below) a task to empty it.
- **Batches, not single events.** A trio wake-up costs tens of µs; waking every subscriber for
  every token would dominate the cost of a stream. ``publish`` takes everything one network
  read produced and hands the same immutable tuple to every mailbox: one wake-up per read.
- **Sync handlers are called, not woken.** A plain function, or an object whose methods are
  all plain and that has no ``flush`` and no ``delivery_window``, cannot overlap anything on
  the trio thread, so a task of its own would only add a wake-up per batch (~15 µs per
  handler on a live stream). ``publish`` calls it with the batch, in the publisher's task.
- **Lossless by default.** A slow subscriber's bounded channel fills and ``publish`` waits:
  backpressure, nothing dropped. A UI may opt into a lossy policy (``"coalesce"`` merges pending
  text; ``"latest"`` keeps only the newest pending text) and then never slows the stream.
- **Isolation.** A subscriber that raises is reported (``Bus.failures``, the ``streambus``
  logger), stops receiving, and the others carry on; a plain handler's exception never
  reaches the publisher (Ctrl-C inside one does, once the others have the batch).
- **The last word is always delivered.** A sync handler gets it as it is published.
  Subscriber tasks run shielded from outside cancellation and end only when the bus closes
  and their mailbox is drained, so the final ``stop`` (reason ``cancelled`` after Ctrl-C)
  reaches each of them. Closing waits at most ``grace`` seconds for them, then cancels the
  stragglers.

Three ways to subscribe (see ``docs/subscribers.md``): a function (sync or async) called per
event; an object with ``on_start``/``on_delta``/``on_tool_delta``/``on_tool_result``/
``on_usage``/``on_stop`` methods (or ``on_events`` for whole batches); or
``async for event in bus.subscribe()``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import math
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from itertools import chain
from typing import Any, Final, Literal, TypeAlias

import msgspec
import trio

from streambus.events import Delta, Event, Start, Stop, ToolDelta, ToolResult, Usage

__all__ = ["Batch", "Bus", "Policy", "SubscriberFailure", "Subscription", "open_bus"]

logger = logging.getLogger("streambus")

Batch: TypeAlias = tuple[Event, ...]
Policy: TypeAlias = Literal["lossless", "coalesce", "latest"]
Handler: TypeAlias = Callable[[Event], Awaitable[None] | None]

_METHODS: Final = {
    Start: "on_start",
    Delta: "on_delta",
    ToolDelta: "on_tool_delta",
    ToolResult: "on_tool_result",
    Usage: "on_usage",
    Stop: "on_stop",
}


class SubscriberFailure:
    """A subscriber raised: which one, and what."""

    __slots__ = ("error", "name")

    def __init__(self, name: str, error: BaseException) -> None:
        self.name = name
        self.error = error

    def __str__(self) -> str:
        return f"subscriber {self.name!r} failed: {type(self.error).__name__}: {self.error}"

    def __repr__(self) -> str:
        return f"<SubscriberFailure {self}>"


class _LossyMailbox:
    """A mailbox that never blocks its sender: pending text is merged (or replaced) instead.

    Only deltas and tool-call fragments are ever merged or dropped; ``start``, ``usage`` and
    ``stop`` always arrive. Merging happens when the subscriber asks, in one linear pass.
    """

    def __init__(self, policy: Policy) -> None:
        self._latest = policy == "latest"
        self._pending: list[Event] = []
        self._closed = False
        self._receiver_closed = False
        self._lot = trio.lowlevel.ParkingLot()
        self.dropped = 0

    def send_nowait(self, batch: Batch) -> None:
        if self._receiver_closed:
            raise trio.BrokenResourceError
        self._pending.extend(batch)
        self._lot.unpark_all()

    async def send(self, batch: Batch) -> None:
        self.send_nowait(batch)

    def close(self) -> None:
        self._closed = True
        self._lot.unpark_all()

    def close_receiver(self) -> None:
        self._receiver_closed = True
        self._pending.clear()
        self._lot.unpark_all()  # a receive() parked here must end, not wait forever

    async def receive(self) -> Batch:
        while not self._pending:
            if self._receiver_closed:
                raise trio.ClosedResourceError
            if self._closed:
                raise trio.EndOfChannel
            await self._lot.park()
        pending, self._pending = self._pending, []
        return self._merge(pending)

    def _merge(self, events: list[Event]) -> Batch:
        out: list[Event] = []
        head: Delta | ToolDelta | None = None  # first event of a run of mergeable ones
        tail: Event | None = None
        parts: list[str] = []
        for event in events:
            if head is not None and _continues(head, event):
                parts.append(_text_of(event))
                tail = event
                self.dropped += 1
                continue
            if head is not None:
                out.append(self._finish_run(head, tail, parts))
                head = None
            if isinstance(event, Delta | ToolDelta):
                head = tail = event
                parts = [_text_of(event)]
            else:
                out.append(event)
        if head is not None:
            out.append(self._finish_run(head, tail, parts))
        return tuple(out)

    def _finish_run(self, head: Delta | ToolDelta, tail: Event | None, parts: list[str]) -> Event:
        """One event standing for a run: the head's identity, the tail's seq and time."""
        if tail is head or tail is None:
            return head
        if isinstance(head, Delta):
            text = parts[-1] if self._latest else "".join(parts)
            return msgspec.structs.replace(head, text=text, seq=tail.seq, t_ns=tail.t_ns)
        # Tool arguments are joined even under "latest": a UI needs the whole JSON.
        return msgspec.structs.replace(head, arguments="".join(parts), seq=tail.seq, t_ns=tail.t_ns)


def _continues(head: Delta | ToolDelta, event: Event) -> bool:
    """Whether ``event`` may be merged into the run that ``head`` opened."""
    if isinstance(head, Delta):
        return (
            isinstance(event, Delta)
            and head.signature is None
            and event.signature is None
            and event.session == head.session
            and event.channel == head.channel
        )
    return (
        isinstance(event, ToolDelta)
        and event.id is None
        and event.name is None
        and event.session == head.session
        and event.index == head.index
    )


def _text_of(event: Event) -> str:
    if isinstance(event, Delta):
        return event.text
    if isinstance(event, ToolDelta):
        return event.arguments
    return ""


class _DirectMailbox:
    """A sync handler's mailbox: delivering a batch is calling the handler with it, at once.

    Never full, so publishing never waits for it. Closed, it refuses batches as a closed
    memory channel does, and the bus forgets the subscription. The handler runs in a context
    of its own (copied from the first publisher's), as it would in a task: a context
    variable it sets does not leak into the publisher, and an exception the publisher is
    handling (a final ``stop`` is published while ``Cancelled`` propagates) is not made the
    context of the handler's own failure.
    """

    def __init__(self, sub: Subscription, take: Callable[[Batch], None]) -> None:
        self._sub = sub
        self._take = take
        self._closed = False
        self._context: contextvars.Context | None = None

    def send_nowait(self, batch: Batch) -> None:
        if self._closed:
            raise trio.BrokenResourceError
        sub = self._sub
        sub.delivered += len(batch)
        if self._context is None:
            self._context = contextvars.copy_context()
        try:
            self._context.run(self._take, batch)
        except Exception as exc:
            error = exc
        else:
            return
        _detach(error, sys.exc_info()[1])  # out of the except block: the publisher's, if any
        sub.bus._fail(sub, error)

    def close(self) -> None:
        self._closed = True

    async def receive(self) -> Batch:
        raise trio.EndOfChannel  # its handler takes everything: nothing is left to iterate


def _detach(error: BaseException, outer: BaseException | None) -> None:
    """Cut ``error``'s implicit context chain where it reaches ``outer``.

    Python makes whatever exception is being handled the ``__context__`` of one raised
    meanwhile; for a handler called by ``publish`` that is the publisher's, and a logged
    traceback would read "during handling of Cancelled", as if cancellation had made the
    handler fail. The handler's own chain (an error raised while it handled another) stays.
    """
    if outer is None:
        return
    seen = {id(error)}
    while error.__context__ is not None and id(error.__context__) not in seen:
        if error.__context__ is outer:
            error.__context__ = None
            return
        error = error.__context__
        seen.add(id(error))


class Subscription:
    """One subscriber: its mailbox, its policy, and (for handlers) its task.

    Returned by :meth:`Bus.subscribe`. Without a handler it is an async iterator of events that
    ends when the bus closes; use it as ``async with`` to unsubscribe early.
    """

    def __init__(
        self,
        bus: Bus,
        name: str,
        policy: Policy,
        buffer: int,
        direct: Callable[[Batch], None] | None = None,
    ) -> None:
        self.bus = bus
        self.name = name
        self.policy: Policy = policy
        self.delivered = 0
        self.failure: SubscriberFailure | None = None
        self._done = trio.Event()
        self._task_done: trio.Event | None = None  # set up for handler subscriptions only
        self._task: trio.lowlevel.Task | None = None
        self._scope = trio.CancelScope(shield=True)
        self._send: Any
        self._receive: Any
        if direct is not None:
            self._send = self._receive = _DirectMailbox(self, direct)
        elif policy == "lossless":
            self._send, self._receive = trio.open_memory_channel[Batch](buffer)
        elif policy in ("coalesce", "latest"):
            self._send = self._receive = _LossyMailbox(policy)
        else:
            raise ValueError(f"unknown policy {policy!r}: use lossless, coalesce or latest")
        self._current: Batch = ()
        self._position = 0

    @property
    def dropped(self) -> int:
        """Events merged away by a lossy policy (always 0 for ``lossless``)."""
        return getattr(self._receive, "dropped", 0)

    @property
    def closed(self) -> bool:
        return self._done.is_set()

    async def batches(self) -> AsyncIterator[Batch]:
        """Whole batches as published (one per network read): the cheapest way to consume."""
        while True:
            try:
                batch = await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            self.delivered += len(batch)
            yield batch

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while self._position >= len(self._current):
            try:
                self._current = await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._done.set()
                raise StopAsyncIteration from None
            self._position = 0
            self.delivered += len(self._current)
        event = self._current[self._position]
        self._position += 1
        return event

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Unsubscribe: the bus stops delivering here and never waits for this subscriber."""
        if isinstance(self._receive, _LossyMailbox):
            self._receive.close_receiver()
        else:
            self._receive.close()
        self._done.set()
        self.bus._forget(self)

    def __repr__(self) -> str:
        return f"<Subscription {self.name!r} policy={self.policy} delivered={self.delivered}>"


class Bus:
    """Fan-out of event batches to subscribers. Create with :func:`open_bus`."""

    def __init__(self, *, buffer: int = 1024, grace: float = 5.0) -> None:
        self.buffer = buffer
        self.grace = grace
        self.failures: list[SubscriberFailure] = []
        self._subscriptions: list[Subscription] = []  # those still receiving
        self._handlers: list[Subscription] = []  # every one with a task, even after it left
        self._nursery: trio.Nursery | None = None
        self._unstarted: list[tuple[Subscription, Any]] = []
        self._closed = False
        self._closing = trio.Event()  # set when closing begins: cuts delivery windows short
        self._drained = trio.Event()

    # -- subscribing --------------------------------------------------------------------------

    def subscribe(
        self,
        handler: Any = None,
        *,
        policy: Policy = "lossless",
        name: str | None = None,
        buffer: int | None = None,
    ) -> Subscription:
        """Add a subscriber; it receives every batch published from now on.

        ``handler`` is a function (sync or async) called with each event, or an object with
        ``on_start``/``on_delta``/``on_tool_delta``/``on_tool_result``/``on_usage``/``on_stop``
        methods (any of them, sync or async), or ``on_events(batch)`` to take whole batches.
        An object may also have ``flush()`` and ``flush_interval`` (seconds): pending work is
        flushed at least that often, and ``flush()`` is awaited once at the end. With a
        ``start_flush()`` too, that is what the periodic flushes call: it starts the work
        and returns, and the handler goes on taking batches while the work runs. A batch
        taker may set ``delivery_window`` (seconds): it is then woken at most once per window
        and gets everything published meanwhile in one call, instead of once per network
        read (the printers and the recorder do: 5 ms); the bus closing ends a window at once.
        Without a handler the subscription is an async iterator of events.

        A handler with nothing async (and no ``flush`` or ``delivery_window``) subscribed
        ``lossless`` is called by ``publish`` itself, in the publisher's task; every other
        handler runs in a task of its own, fed through its mailbox.
        """
        if self._closed:
            raise trio.ClosedResourceError("the bus is closed")
        if name is None:
            name = (
                _name_of(handler) if handler is not None else f"iterator-{len(self._subscriptions)}"
            )
        if buffer is None:
            buffer = self.buffer
            if _window_of(handler) > 0:  # it lets batches pile up for a whole window
                buffer *= _WINDOW_BUFFER_FACTOR
        direct = _direct_taker(handler, policy) if handler is not None else None
        sub = Subscription(self, name, policy, buffer, direct)
        self._subscriptions.append(sub)
        if handler is not None and direct is None:
            sub._task_done = trio.Event()
            self._handlers.append(sub)
            deliver = _deliverer(handler)
            if self._nursery is None:
                self._unstarted.append((sub, deliver))
            else:
                self._nursery.start_soon(self._run, sub, deliver, name=f"subscriber {name}")
        return sub

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    # -- publishing ---------------------------------------------------------------------------

    async def publish(self, events: Iterable[Event]) -> None:
        """Deliver ``events`` as one batch to every subscriber, in order.

        Plain handlers are called with the batch here and now (see :meth:`subscribe`); every
        mailbox with room takes the batch at once; only then does publishing wait, on
        the full ones (a slow lossless subscriber: backpressure). So one stuck subscriber
        never keeps a batch (the final ``stop``, say) from the others. Not a checkpoint when
        nobody is full.

        All or nothing: a batch that some subscriber took reaches every other one too, also
        when the publisher is cancelled while waiting (the delivery then finishes shielded,
        within ``grace``; a subscriber still full after that is failed and dropped rather
        than left with a gap). Cancellation is raised afterwards. The one exception: Ctrl-C
        (or ``sys.exit``) inside a plain handler is raised once every mailbox with room has
        the batch, without waiting for the full ones.
        """
        batch = events if type(events) is tuple else tuple(events)
        full = self._offer(batch)
        if full:
            await self._wait_full(batch, full)

    def _offer(self, batch: Batch) -> list[Subscription]:
        """Hand ``batch`` to every mailbox with room; return the full ones (still owed it).

        The client calls this and :meth:`_wait_full` apart: only waiting on a full mailbox
        pauses its timeouts (pausing them around every read moved a trio deadline twice, a
        tenth of what a live-paced read cost in the concurrency profile).
        """
        if self._closed:
            raise trio.ClosedResourceError("the bus is closed")
        full: list[Subscription] = []
        if not batch:
            return full
        interrupted: BaseException | None = None
        for sub in tuple(self._subscriptions):  # a subscriber may leave while we wait
            try:
                sub._send.send_nowait(batch)
            except trio.WouldBlock:
                full.append(sub)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._forget(sub)
            except BaseException as exc:  # Ctrl-C (or sys.exit) inside a plain handler
                interrupted = interrupted or exc  # the others still get the batch first
        if interrupted is not None:
            raise interrupted
        return full

    async def _wait_full(self, batch: Batch, full: list[Subscription]) -> None:
        """Deliver ``batch`` to the subscribers :meth:`_offer` found full (backpressure)."""
        for i, sub in enumerate(full):
            try:
                await sub._send.send(batch)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._forget(sub)
            except trio.Cancelled:
                with trio.CancelScope(shield=True):
                    await self._deliver_late(batch, full[i:])
                raise

    async def _deliver_late(self, batch: Batch, subs: list[Subscription]) -> None:
        """Finish delivering a batch others already have, within ``grace``; fail whoever is
        still full then (a gap in what it saw would be worse than its end)."""
        late = []
        with trio.move_on_after(self.grace):
            for i, sub in enumerate(subs):
                try:
                    await sub._send.send(batch)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._forget(sub)
                except trio.Cancelled:  # the grace ran out: the others may still have room
                    late = subs[i:]
                    raise
        for sub in late:
            try:
                sub._send.send_nowait(batch)
                continue
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._forget(sub)
            if sub in self._subscriptions:
                error = TimeoutError(f"took no events for {self.grace:g} s during cancellation")
                sub.failure = SubscriberFailure(sub.name, error)
                self.failures.append(sub.failure)
                logger.error("%s", sub.failure)
                self._forget(sub)
                sub._send.close()
                sub._scope.cancel()

    # -- life cycle ---------------------------------------------------------------------------

    def _start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        for sub, deliver in self._unstarted:
            nursery.start_soon(self._run, sub, deliver, name=f"subscriber {sub.name}")
        self._unstarted.clear()

    async def aclose(self) -> None:
        """Stop accepting events, let every subscriber drain, wait at most ``grace`` seconds.

        Safe to call twice (the second call waits for the first to finish) and from inside a
        subscriber (which is then not waited for: it cannot finish while it is calling us).
        """
        current = trio.lowlevel.current_task()
        inside = any(sub._task is current for sub in self._handlers)
        if self._closed:
            if not inside:
                with trio.CancelScope(shield=True):
                    await self._drained.wait()
            return
        self._closed = True
        self._closing.set()
        for sub in self._subscriptions:
            sub._send.close()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.grace):
                for sub in self._handlers:
                    if sub._task is not current:
                        assert sub._task_done is not None
                        await sub._task_done.wait()
            for sub in self._handlers:
                if sub._task is not current:
                    sub._scope.cancel()
        self._drained.set()

    def _forget(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)

    async def _run(self, sub: Subscription, deliver: _Deliver) -> None:
        assert sub._task_done is not None
        sub._task = trio.lowlevel.current_task()
        try:
            with sub._scope:
                try:
                    await deliver(sub)
                except Exception as exc:
                    self._fail(sub, exc)
        finally:
            sub._task_done.set()

    def _fail(self, sub: Subscription, error: Exception) -> None:
        """``sub`` raised: report it, and deliver nothing more to it."""
        sub.failure = SubscriberFailure(sub.name, error)
        self.failures.append(sub.failure)
        logger.error("%s", sub.failure, exc_info=error)  # the CLI shows one line
        sub.close()


_Deliver: TypeAlias = Callable[[Subscription], Awaitable[None]]


def _name_of(handler: Any) -> str:
    name = getattr(handler, "__qualname__", None) or type(handler).__name__
    return str(name)


def _is_async(fn: Any) -> bool:
    """Whether calling ``fn`` makes a coroutine (``async def``, a partial of one, or an
    object whose ``__call__`` is one)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _check_result(result: object, fn: Any) -> None:
    """A plain function returned an awaitable: nobody would await it, so fail it clearly."""
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()  # no "never awaited" warning on top of the error
        raise TypeError(
            f"{_name_of(fn)} is not async but returned {type(result).__name__}: "
            "declare it `async def`"
        )


def _maybe_async(fn: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
    if _is_async(fn):
        return fn

    async def call(*args: Any) -> None:
        result = fn(*args)
        if result is not None:
            _check_result(result, fn)

    return call


def _callbacks(handler: Any) -> tuple[Callable[..., Any] | None, dict[type, Callable[..., Any]]]:
    """A handler's ``on_events``, else what to call per event type (resolved once)."""
    on_events = getattr(handler, "on_events", None)
    if on_events is not None:
        return on_events, {}
    if callable(handler) and not any(hasattr(handler, m) for m in _METHODS.values()):
        every: dict[type, Callable[..., Any]] = dict.fromkeys(_METHODS, handler)
        return None, every
    table: dict[type, Callable[..., Any]] = {}
    for cls, method in _METHODS.items():
        fn = getattr(handler, method, None)
        if fn is not None:
            table[cls] = fn
    return None, table


def _direct_taker(handler: Any, policy: Policy) -> Callable[[Batch], None] | None:
    """How ``publish`` hands a batch to a handler with nothing async, in the publisher's task;
    None when the handler needs a task of its own: something async, a flush or a delivery
    window, or a lossy policy (whose merging happens while its subscriber is behind)."""
    if policy != "lossless" or getattr(handler, "flush", None) is not None:
        return None
    if _window_of(handler) > 0:
        return None
    on_events, table = _callbacks(handler)
    if on_events is not None:
        if _is_async(on_events):
            return None
        take_all = on_events

        def take_batch(batch: Batch) -> None:
            result = take_all(batch)
            if result is not None:
                _check_result(result, take_all)

        return take_batch
    if any(_is_async(fn) for fn in table.values()):
        return None

    def take_each(batch: Batch) -> None:
        for event in batch:
            fn = table.get(type(event))
            if fn is not None:
                result = fn(event)
                if result is not None:
                    _check_result(result, fn)

    return take_each


_GATHER_LIMIT: Final = 10_000
_WINDOW_BUFFER_FACTOR: Final = 8


def _window_of(handler: Any) -> float:
    """A batch taker's ``delivery_window`` in seconds (0: woken for every batch)."""
    if handler is None or getattr(handler, "on_events", None) is None:
        return 0.0
    return float(getattr(handler, "delivery_window", 0) or 0)


def _gather(batch: Batch, receive_nowait: Callable[[], Batch]) -> Batch:
    """``batch`` and the batches pending behind it, as one (up to about ``_GATHER_LIMIT``)."""
    parts = [batch]
    size = len(batch)
    while size < _GATHER_LIMIT:
        try:
            more = receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
        parts.append(more)
        size += len(more)
    if len(parts) == 1:
        return batch
    return tuple(chain.from_iterable(parts))


def _deliverer(handler: Any) -> _Deliver:
    """Build the loop that feeds one subscriber, resolving its methods once, not per event."""
    on_events, callbacks = _callbacks(handler)
    flush = getattr(handler, "flush", None)
    interval = float(getattr(handler, "flush_interval", 0) or 0)
    if on_events is not None:
        take_batch = _maybe_async(on_events)
    else:
        table = {cls: _maybe_async(fn) for cls, fn in callbacks.items()}

        async def take_batch(batch: Batch) -> None:
            for event in batch:
                fn = table.get(type(event))
                if fn is not None:
                    await fn(event)

    flush_async = _maybe_async(flush) if flush is not None else None
    # While events flow, a handler with start_flush() is only asked to start flushing, so it
    # goes on taking batches meanwhile (the recorder's write runs in a worker thread).
    start_flush = getattr(handler, "start_flush", None) if flush is not None else None
    periodic = _maybe_async(start_flush) if start_flush is not None else flush_async

    window = _window_of(handler)

    async def deliver(sub: Subscription) -> None:
        receive = sub._receive.receive
        # A batch taker gets everything pending at once: a subscriber whose every call costs
        # (the recorder writes to disk) then catches up in one call instead of falling behind.
        gather = getattr(sub._receive, "receive_nowait", None) if on_events is not None else None
        windowed = 0.0 if gather is None else window
        closing = sub.bus._closing
        deadline = math.inf  # when pending work must be flushed, if nothing else comes
        while True:
            try:
                if deadline == math.inf:  # no timer needed: a cancel scope costs µs per batch
                    batch = await receive()
                else:
                    batch = ()
                    with trio.move_on_at(deadline):
                        batch = await receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                break
            if not batch:  # the flush timer ran out with nothing new
                assert periodic is not None
                await periodic()
                deadline = math.inf
                continue
            if gather is not None:
                if windowed:  # let the window's batches arrive, then take them all at once
                    with trio.move_on_after(windowed):  # or until the bus closes: no more come
                        await closing.wait()
                batch = _gather(batch, gather)
            sub.delivered += len(batch)
            await take_batch(batch)
            if periodic is not None and interval > 0:
                now = trio.current_time()
                if deadline == math.inf:
                    deadline = now + interval
                elif now >= deadline:
                    await periodic()
                    deadline = math.inf
        if flush_async is not None:
            await flush_async()

    return deliver


@asynccontextmanager
async def open_bus(*, buffer: int = 1024, grace: float = 5.0) -> AsyncIterator[Bus]:
    """Open a bus whose subscriber tasks live in a nursery for the duration of the block.

    On exit the bus closes: subscribers drain what was published (including a final ``stop``
    published during cancellation) and finish, within ``grace`` seconds.
    """
    bus = Bus(buffer=buffer, grace=grace)
    async with trio.open_nursery() as nursery:
        bus._start(nursery)
        try:
            yield bus
        finally:
            await bus.aclose()
