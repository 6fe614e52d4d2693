"""The bus: ordering, the three ways to subscribe, isolation, backpressure, lossy policies,
flushing and cancellation. Virtual time (trio's MockClock with autojump) makes every timing
assertion exact and instant."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from streambus import Delta, Event, Start, Stop, ToolDelta, ToolResult, Usage, open_bus
from streambus.bus import Batch


def make_session(n_deltas: int, session: str = "s1") -> list[Event]:
    events: list[Event] = [Start(session=session, seq=0, t_ns=0, provider="sim", model="m")]
    for i in range(n_deltas):
        events.append(Delta(session=session, seq=i + 1, t_ns=i + 1, text=f"t{i} "))
    events.append(
        Usage(session=session, seq=n_deltas + 1, t_ns=n_deltas + 1, output_tokens=n_deltas)
    )
    events.append(Stop(session=session, seq=n_deltas + 2, t_ns=n_deltas + 2, reason="stop"))
    return events


def batches_of(events: list[Event], size: int) -> list[list[Event]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


async def test_every_style_of_subscriber_receives_every_event_in_order() -> None:
    events = make_session(50)
    by_function: list[Event] = []
    by_sync_function: list[Event] = []
    by_methods: list[tuple[str, Event]] = []
    by_iterator: list[Event] = []

    async def handler(event: Event) -> None:
        by_function.append(event)

    class Methods:
        async def on_start(self, event: Start) -> None:
            by_methods.append(("start", event))

        def on_delta(self, event: Delta) -> None:  # sync methods work too
            by_methods.append(("delta", event))

        async def on_usage(self, event: Usage) -> None:
            by_methods.append(("usage", event))

        async def on_stop(self, event: Stop) -> None:
            by_methods.append(("stop", event))

    async with open_bus() as bus, trio.open_nursery() as nursery:
        bus.subscribe(handler)
        bus.subscribe(by_sync_function.append)
        bus.subscribe(Methods())
        subscription = bus.subscribe()

        async def consume() -> None:
            async for event in subscription:
                by_iterator.append(event)

        nursery.start_soon(consume)
        for batch in batches_of(events, 7):
            await bus.publish(batch)
        await bus.aclose()  # ends the iterator

    assert by_function == events
    assert by_sync_function == events
    assert by_iterator == events
    assert [e for _, e in by_methods] == events
    assert [kind for kind, _ in by_methods][:2] == ["start", "delta"]
    assert by_methods[-1][0] == "stop"


@pytest.mark.parametrize("kind", ["plain", "async"])
async def test_batches_arrive_whole_and_shared(kind: str) -> None:
    events = make_session(10)
    seen: list[Batch] = []

    class BatchTaker:
        def on_events(self, batch: Sequence[Event]) -> None:
            seen.append(tuple(batch))

    class AsyncBatchTaker:
        async def on_events(self, batch: Sequence[Event]) -> None:
            seen.append(tuple(batch))

    published = [tuple(b) for b in batches_of(events, 4)]
    async with open_bus() as bus:
        bus.subscribe(BatchTaker() if kind == "plain" else AsyncBatchTaker())
        for batch in published:
            await bus.publish(batch)
            await trio.testing.wait_all_tasks_blocked()  # taken before the next one comes
    assert seen == published
    assert all(got is sent for got, sent in zip(seen, published, strict=True))  # not copied


async def test_a_batch_taker_catches_up_in_one_call(autojump_clock: trio.abc.Clock) -> None:
    """Batches pending behind each other reach ``on_events`` together, whole and in order:
    a subscriber whose every call costs (the recorder's disk write) never falls behind."""
    events = make_session(40)
    seen: list[Batch] = []

    class SlowTaker:
        async def on_events(self, batch: Sequence[Event]) -> None:
            seen.append(tuple(batch))
            await trio.sleep(1)

    published = [tuple(b) for b in batches_of(events, 3)]
    async with open_bus() as bus:
        bus.subscribe(SlowTaker())
        await bus.publish(published[0])
        await trio.testing.wait_all_tasks_blocked()  # it took the first and is busy with it
        for batch in published[1:]:
            await bus.publish(batch)
    assert [e for batch in seen for e in batch] == events
    assert len(seen) == 2  # the first batch, then all the others at once
    assert seen[0] == published[0]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_failing_subscriber_is_isolated_and_reported(
    kind: str, autojump_clock: trio.abc.Clock
) -> None:
    """Both ways of delivering: a sync handler is called by ``publish``, an async one runs in
    its own task; either way its error stays with it."""
    events = make_session(20)
    good: list[Event] = []

    def explode(event: Event) -> None:
        if event.seq == 3:
            raise ValueError("boom")

    async def explode_async(event: Event) -> None:
        explode(event)

    async with open_bus(buffer=1) as bus:
        bus.subscribe(good.append, name="good")
        bad = bus.subscribe(explode if kind == "sync" else explode_async, name="bad")
        for event in events:  # one per batch, so a stuck mailbox would block the publisher
            await bus.publish([event])
            await trio.sleep(0.01)
    assert good == events
    assert len(bus.failures) == 1
    assert bus.failures[0].name == "bad"
    assert isinstance(bus.failures[0].error, ValueError)
    assert "boom" in str(bus.failures[0])
    assert bad.failure is bus.failures[0]
    assert bad not in bus.subscriptions


async def test_lossless_applies_backpressure_and_loses_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    events = make_session(8)
    received: list[Event] = []

    async def slow(event: Event) -> None:
        await trio.sleep(1)
        received.append(event)

    async with open_bus(buffer=1) as bus:
        bus.subscribe(slow)
        start = trio.current_time()
        for event in events:
            await bus.publish([event])
        publish_time = trio.current_time() - start
    # 11 events, 1 s each, mailbox of 1 batch: the publisher had to wait for the subscriber.
    assert publish_time >= len(events) - 3
    assert received == events


async def test_coalesce_never_blocks_and_keeps_the_whole_text(
    autojump_clock: trio.abc.Clock,
) -> None:
    events = make_session(100)
    received: list[Event] = []

    async def slow(event: Event) -> None:
        await trio.sleep(1)
        received.append(event)

    async with open_bus(grace=1000) as bus:
        sub = bus.subscribe(slow, policy="coalesce")
        start = trio.current_time()
        for event in events:
            await bus.publish([event])
        assert trio.current_time() == start  # the publisher never waited
    text = "".join(e.text for e in received if isinstance(e, Delta))
    assert text == "".join(e.text for e in events if isinstance(e, Delta))
    assert len(received) < len(events)
    assert sub.dropped == len(events) - len(received)
    assert isinstance(received[0], Start)
    assert isinstance(received[-2], Usage)
    assert isinstance(received[-1], Stop)
    seqs = [e.seq for e in received]
    assert seqs == sorted(seqs)  # a merged delta carries the newest seq


async def test_latest_keeps_only_the_newest_pending_text(autojump_clock: trio.abc.Clock) -> None:
    events = make_session(100)
    received: list[Event] = []

    async def slow(event: Event) -> None:
        await trio.sleep(1)
        received.append(event)

    async with open_bus(grace=1000) as bus:
        bus.subscribe(slow, policy="latest")
        for event in events:
            await bus.publish([event])
    deltas = [e for e in received if isinstance(e, Delta)]
    assert deltas[-1].text == "t99 "
    assert len(deltas) < 100
    assert isinstance(received[0], Start) and isinstance(received[-1], Stop)


async def test_lossy_policies_join_tool_arguments_and_keep_call_identity() -> None:
    from streambus.bus import _LossyMailbox

    mailbox = _LossyMailbox("latest")
    fragments = [
        ToolDelta(session="s", seq=1, t_ns=1, index=0, id="call_1", name="f", arguments=""),
        ToolDelta(session="s", seq=2, t_ns=2, index=0, arguments='{"a"'),
        ToolDelta(session="s", seq=3, t_ns=3, index=0, arguments=": 1}"),
        ToolDelta(session="s", seq=4, t_ns=4, index=1, id="call_2", name="g", arguments="{}"),
    ]
    mailbox.send_nowait(tuple(fragments))
    merged = await mailbox.receive()
    assert merged == (
        ToolDelta(session="s", seq=3, t_ns=3, index=0, id="call_1", name="f", arguments='{"a": 1}'),
        fragments[3],
    )


async def test_cancellation_still_delivers_the_final_stop_to_every_subscriber(
    autojump_clock: trio.abc.Clock,
) -> None:
    events = make_session(5)
    final = Stop(session="s1", seq=6, t_ns=9, reason="cancelled")
    received: dict[str, list[Event]] = {"slow": [], "fast": []}

    async def slow(event: Event) -> None:
        await trio.sleep(0.5)
        received["slow"].append(event)

    with trio.move_on_after(1) as scope:
        async with open_bus() as bus:
            bus.subscribe(slow, name="slow")
            bus.subscribe(received["fast"].append, name="fast")
            try:
                await bus.publish(events[:4])
                await trio.sleep_forever()
            finally:  # what stream() does when cancelled
                with trio.CancelScope(shield=True):
                    await bus.publish([final])
    assert scope.cancelled_caught
    for name in ("slow", "fast"):
        assert received[name] == [*events[:4], final], name


async def test_a_stuck_subscriber_is_cancelled_after_the_grace_period(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def stuck(event: Event) -> None:
        await trio.sleep_forever()

    start = trio.current_time()
    async with open_bus(grace=3) as bus:
        bus.subscribe(stuck)
        await bus.publish(make_session(1))
    assert trio.current_time() - start == pytest.approx(3)


async def test_flush_runs_at_the_interval_even_without_new_events(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Buffered:
        flush_interval = 0.1

        def __init__(self) -> None:
            self.pending: list[Event] = []
            self.flushed: list[tuple[float, int]] = []

        def on_events(self, batch: Sequence[Event]) -> None:
            self.pending.extend(batch)

        def flush(self) -> None:
            if self.pending:
                self.flushed.append((trio.current_time(), len(self.pending)))
                self.pending.clear()

    buffered = Buffered()
    start = trio.current_time()
    async with open_bus() as bus:
        bus.subscribe(buffered)
        await bus.publish(make_session(2)[:2])
        await trio.sleep(1)  # nothing new arrives: the flush must still happen
        assert len(buffered.flushed) == 1
        assert buffered.flushed[0][0] - start == pytest.approx(0.1)
        await bus.publish(make_session(2)[2:])
    assert sum(n for _, n in buffered.flushed) == 5  # the rest is flushed at close


async def test_periodic_flushes_call_start_flush_and_the_last_one_flush(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A handler with start_flush() is only asked to start its periodic flushes, so it takes
    batches while one runs; flush() itself is awaited once, at the end."""

    class Behind:
        flush_interval = 0.1

        def __init__(self) -> None:
            self.calls: list[tuple[str, float]] = []
            self.taken = 0

        async def on_events(self, batch: Sequence[Event]) -> None:
            await trio.sleep(0.15)  # a slow taker: a batch can arrive past the deadline
            self.taken += len(batch)

        async def start_flush(self) -> None:
            self.calls.append(("start_flush", trio.current_time()))

        async def flush(self) -> None:
            self.calls.append(("flush", trio.current_time()))

    behind = Behind()
    start = trio.current_time()
    async with open_bus() as bus:
        bus.subscribe(behind)
        events = make_session(3)
        await bus.publish(events[:2])  # taken by 0.15, then nothing comes: the idle timer
        await trio.sleep(1)
        await bus.publish(events[2:4])  # taken by 1.15: the deadline is 1.25
        await trio.sleep(0.05)
        await bus.publish(events[4:])  # taken from 1.15 to 1.30, past the deadline
    assert behind.taken == len(events)
    assert behind.calls == [
        ("start_flush", pytest.approx(start + 0.25)),
        ("start_flush", pytest.approx(start + 1.30)),
        ("flush", pytest.approx(start + 1.30)),
    ]


async def test_publish_after_close_raises_trio_closed_resource_error() -> None:
    async with open_bus() as bus:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await bus.publish(make_session(1))
    with pytest.raises(trio.ClosedResourceError):
        bus.subscribe(print)


async def test_an_iterator_closed_early_never_blocks_the_publisher(
    autojump_clock: trio.abc.Clock,
) -> None:
    events = make_session(50)
    async with open_bus(buffer=1) as bus:
        async with bus.subscribe() as subscription:
            await bus.publish(events[:1])
            assert await subscription.__anext__() == events[0]
        with trio.fail_after(1):
            for event in events[1:]:
                await bus.publish([event])


async def test_unknown_policy_is_rejected() -> None:
    async with open_bus() as bus:
        with pytest.raises(ValueError, match="unknown policy"):
            bus.subscribe(print, policy="sometimes")  # type: ignore[arg-type]


# -- regressions: each of these once lost an event or hung ---------------------------------------


def numbered(i: int) -> Delta:
    return Delta(session="s", seq=i, t_ns=i, text=str(i))


async def test_a_subscriber_leaving_while_publish_waits_costs_the_others_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    got: list[int] = []
    gate = trio.Event()

    async def fails_later(event: Event) -> None:
        await gate.wait()
        raise RuntimeError("fails while the publisher waits on it")

    async with open_bus(buffer=1) as bus:
        bus.subscribe(fails_later, name="A")
        bus.subscribe(lambda e: got.append(e.seq), name="B")
        await bus.publish([numbered(0)])  # A takes it and blocks on the gate
        await trio.sleep(0.01)
        await bus.publish([numbered(1)])  # A's mailbox is now full
        async with trio.open_nursery() as nursery:

            async def release() -> None:
                await trio.sleep(0.05)
                gate.set()

            nursery.start_soon(release)
            await bus.publish([numbered(2)])  # waits on A, which fails meanwhile
        await bus.publish([numbered(3)])
    assert got == [0, 1, 2, 3]
    assert [f.name for f in bus.failures] == ["A"]


async def test_a_stuck_subscriber_does_not_keep_a_batch_from_the_others(
    autojump_clock: trio.abc.Clock,
) -> None:
    got: list[int] = []

    async def stuck(event: Event) -> None:
        await trio.sleep_forever()

    async with open_bus(buffer=1, grace=1) as bus:
        bus.subscribe(stuck, name="stuck")  # first in line
        bus.subscribe(lambda e: got.append(e.seq), name="good")
        await bus.publish([numbered(0)])
        await trio.sleep(0.01)
        await bus.publish([numbered(1)])  # stuck's mailbox is full from here on
        with trio.move_on_after(0.5):
            await bus.publish([numbered(2)])
        assert got == [0, 1, 2]  # delivered at once, before waiting on the stuck one


@pytest.mark.parametrize("policy", ["lossless", "coalesce", "latest"])
@pytest.mark.parametrize("style", ["plain handler", "async handler", "iterator"])
async def test_closing_a_subscription_never_hangs_the_bus(
    autojump_clock: trio.abc.Clock, policy: str, style: str
) -> None:
    async def ignore(event: Event) -> None:
        pass

    start = trio.current_time()
    async with open_bus(grace=30) as bus, trio.open_nursery() as nursery:
        if style == "plain handler":
            sub = bus.subscribe(lambda e: None, policy=policy)  # type: ignore[arg-type]
        elif style == "async handler":
            sub = bus.subscribe(ignore, policy=policy)  # type: ignore[arg-type]
        else:
            sub = bus.subscribe(policy=policy)  # type: ignore[arg-type]

            async def consume() -> None:
                async for _ in sub:
                    pass

            nursery.start_soon(consume)
        await trio.sleep(0.1)
        sub.close()
        await bus.publish([numbered(0)])
    assert trio.current_time() - start < 1  # not the 30 s grace


async def test_aclose_from_inside_a_subscriber_and_twice(autojump_clock: trio.abc.Clock) -> None:
    handled: list[int] = []
    start = trio.current_time()
    async with open_bus(grace=30) as bus:

        async def closer(event: Event) -> None:
            await bus.aclose()  # must not wait for itself
            handled.append(event.seq)

        async def slow(event: Event) -> None:
            await trio.sleep(1)
            handled.append(event.seq)

        bus.subscribe(closer)
        bus.subscribe(slow)
        await bus.publish([numbered(7)])
        await trio.sleep(0.01)
        await bus.aclose()  # the second call: returns only once everyone drained
        assert sorted(handled) == [7, 7]
    assert trio.current_time() - start == pytest.approx(1, abs=0.1)


async def test_a_publisher_cancelled_while_waiting_still_delivers_to_everyone(
    autojump_clock: trio.abc.Clock,
) -> None:
    """All or nothing: a batch the fast subscriber got also reaches the slow one."""
    events = make_session(6)
    fast: list[Event] = []
    slow: list[Event] = []
    release = trio.Event()

    async def slow_handler(event: Event) -> None:
        await release.wait()
        slow.append(event)

    async def release_later() -> None:
        await trio.sleep(2)  # after the cancellation, within the bus's grace
        release.set()

    async with open_bus(buffer=1) as bus, trio.open_nursery() as nursery:
        bus.subscribe(fast.append)
        bus.subscribe(slow_handler)
        nursery.start_soon(release_later)
        with trio.move_on_after(1) as scope:
            for event in events:
                await bus.publish([event])  # the slow mailbox fills: this waits
        assert scope.cancelled_caught
        assert trio.current_time() == pytest.approx(2)  # it finished delivering first
    assert fast == slow == events[: len(fast)]
    assert 0 < len(fast) < len(events)
    assert not bus.failures


async def test_a_subscriber_stuck_past_the_grace_is_failed_rather_than_left_with_a_gap(
    autojump_clock: trio.abc.Clock,
) -> None:
    events = make_session(6)
    stuck: list[Event] = []

    async def stuck_handler(event: Event) -> None:
        stuck.append(event)
        await trio.sleep_forever()

    async with open_bus(buffer=1, grace=2) as bus:
        bus.subscribe(stuck_handler, name="stuck")
        with trio.move_on_after(1):
            for event in events:
                await bus.publish([event])
        started = trio.current_time()
    assert trio.current_time() - started <= 2 + 1e-9
    assert [str(f) for f in bus.failures] == [
        "subscriber 'stuck' failed: TimeoutError: took no events for 2 s during cancellation"
    ]
    assert stuck == events[:1]


async def test_a_windowed_batch_taker_is_woken_once_per_window(
    autojump_clock: trio.abc.Clock,
) -> None:
    """``delivery_window``: one wake-up per window however many reads were published, so a
    recorder or printer on a bus of hundreds of live streams costs little per event."""
    events = make_session(100)
    calls: list[tuple[float, int]] = []

    class Windowed:
        delivery_window = 0.005

        def on_events(self, batch: Sequence[Event]) -> None:
            calls.append((trio.current_time(), len(batch)))

    async with open_bus() as bus:
        bus.subscribe(Windowed())
        for event in events:  # one event per read, each read a checkpoint: a live stream
            await bus.publish([event])
            await trio.lowlevel.checkpoint()
        await trio.sleep(1)  # the bus stays open: the window runs its course
    assert sum(n for _, n in calls) == len(events)
    assert len(calls) == 1 and calls[0][0] == pytest.approx(0.005)  # all of it, 5 ms late


async def test_closing_the_bus_ends_a_delivery_window_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A window longer than the bus's grace must not make closing wait it out, nor cost the
    subscriber what was published during it (it used to: the grace ran out mid-window and the
    subscriber was cancelled with every event undelivered)."""
    events = make_session(10)
    calls: list[tuple[float, int]] = []

    class Windowed:
        delivery_window = 60.0

        def on_events(self, batch: Sequence[Event]) -> None:
            calls.append((trio.current_time(), len(batch)))

    async with open_bus(grace=1) as bus:
        bus.subscribe(Windowed())
        for event in events:
            await bus.publish([event])
            await trio.lowlevel.checkpoint()
        closing = trio.current_time()
    assert trio.current_time() == closing  # no virtual time passed: nothing waited
    assert calls == [(closing, len(events))]
    assert bus.failures == []


# -- sync handlers are called by publish itself ---------------------------------------------------


def with_tool_result(events: list[Event]) -> list[Event]:
    """``events`` with a ``tool_result`` after ``start`` (the next turn of a conversation)."""
    result = ToolResult(session="s1", seq=0, t_ns=0, index=0, id="c1", name="f", content="42")
    return [events[0], result, *events[1:]]


async def test_a_sync_handler_is_called_by_publish_itself_in_the_publishers_task() -> None:
    """A plain function, an object of plain methods and a plain batch taker each get a batch
    before ``publish`` returns, in the publisher's task: no wake-up per read per handler."""
    events = with_tool_result(make_session(6))
    calls: dict[str, list[Event]] = {"function": [], "methods": [], "batches": []}
    tasks: set[trio.lowlevel.Task] = set()

    def function(event: Event) -> None:
        tasks.add(trio.lowlevel.current_task())
        calls["function"].append(event)

    class Methods:  # all six, so a seventh event type without a method here fails the test
        def _take(self, event: Event) -> None:
            tasks.add(trio.lowlevel.current_task())
            calls["methods"].append(event)

        on_start = on_delta = on_tool_delta = on_tool_result = on_usage = on_stop = _take

    class Batches:
        def on_events(self, batch: Batch) -> None:
            tasks.add(trio.lowlevel.current_task())
            calls["batches"].extend(batch)

    async with open_bus() as bus:
        subs = [bus.subscribe(function), bus.subscribe(Methods()), bus.subscribe(Batches())]
        for size, batch in enumerate(batches_of(events, 3), start=1):
            await bus.publish(batch)  # no checkpoint between publishing and looking
            for name, seen in calls.items():
                assert seen == events[: min(3 * size, len(events))], name
    assert tasks == {trio.lowlevel.current_task()}
    assert [sub.delivered for sub in subs] == [len(events)] * 3
    assert not bus.failures


@pytest.mark.parametrize(
    "kind", ["async function", "one async method", "flush", "delivery window", "coalesce"]
)
async def test_a_handler_that_awaits_flushes_or_is_lossy_keeps_its_own_task(kind: str) -> None:
    """What ``publish`` must not call inline: it could wait, or wants to be woken later."""
    events = make_session(4)
    seen: list[Event] = []
    tasks: set[trio.lowlevel.Task] = set()

    def take(event: Event) -> None:
        tasks.add(trio.lowlevel.current_task())
        seen.append(event)

    async def take_async(event: Event) -> None:
        take(event)

    class OneAsync:
        on_start = on_delta = on_usage = staticmethod(take)
        on_stop = staticmethod(take_async)

    class Flushing:
        flush_interval = 0.0

        def on_events(self, batch: Batch) -> None:
            for event in batch:
                take(event)

        def flush(self) -> None:
            pass

    class Windowed:
        delivery_window = 0.001

        def on_events(self, batch: Batch) -> None:
            for event in batch:
                take(event)

    handler: object = {
        "async function": take_async,
        "one async method": OneAsync(),
        "flush": Flushing(),
        "delivery window": Windowed(),
        "coalesce": take,
    }[kind]
    policy = "coalesce" if kind == "coalesce" else "lossless"
    async with open_bus() as bus:
        bus.subscribe(handler, policy=policy)
        await bus.publish(events)
        assert seen == []  # not yet: its task runs once the publisher lets it
    if kind == "coalesce":  # the four deltas were pending together: merged into one
        assert [e.text for e in seen if isinstance(e, Delta)] == ["t0 t1 t2 t3 "]
        assert [type(e) for e in seen] == [Start, Delta, Usage, Stop]
    else:
        assert seen == events
    assert len(tasks) == 1 and trio.lowlevel.current_task() not in tasks


async def test_every_event_type_reaches_functions_and_its_method() -> None:
    events = with_tool_result(make_session(2))
    by_function: list[Event] = []
    by_async_function: list[Event] = []
    results: list[ToolResult] = []

    async def take_async(event: Event) -> None:
        by_async_function.append(event)

    class Results:
        async def on_tool_result(self, event: ToolResult) -> None:
            results.append(event)

    async with open_bus() as bus:
        bus.subscribe(by_function.append)
        bus.subscribe(take_async)
        bus.subscribe(Results())
        await bus.publish(events)
    assert by_function == by_async_function == events
    assert results == [events[1]]


async def test_a_callable_object_with_async_call_is_awaited() -> None:
    seen: list[Event] = []

    class Handler:
        async def __call__(self, event: Event) -> None:
            await trio.lowlevel.checkpoint()
            seen.append(event)

    async with open_bus() as bus:
        bus.subscribe(Handler())
        await bus.publish(make_session(2))
    assert seen == make_session(2)
    assert not bus.failures


@pytest.mark.parametrize("delivery", ["called by publish", "in its own task"])
async def test_a_plain_function_returning_a_coroutine_fails_with_a_clear_error(
    delivery: str,
) -> None:
    """``lambda event: save(event)`` with an async ``save``: nothing would ever await it."""
    saved: list[Event] = []
    good: list[Event] = []

    async def save(event: Event) -> None:
        saved.append(event)  # pragma: no cover - it must never run

    policy = "lossless" if delivery == "called by publish" else "latest"
    async with open_bus() as bus:
        bus.subscribe(lambda event: save(event), name="saver", policy=policy)
        bus.subscribe(good.append)
        await bus.publish(make_session(2))  # "error" warnings: a "never awaited" one fails
    assert saved == []
    assert good == make_session(2)
    assert [f.name for f in bus.failures] == ["saver"]
    assert isinstance(bus.failures[0].error, TypeError)
    assert str(bus.failures[0].error).endswith(
        "<lambda> is not async but returned coroutine: declare it `async def`"
    )


async def test_a_sync_handler_may_unsubscribe_itself() -> None:
    seen: list[Event] = []
    events = make_session(6)

    def until_usage(event: Event) -> None:
        seen.append(event)
        if isinstance(event, Usage):
            subscription.close()

    async with open_bus() as bus:
        subscription = bus.subscribe(until_usage)
        for event in events:
            await bus.publish([event])
        assert subscription.closed and subscription not in bus.subscriptions
    assert seen == events[:-1]  # the stop came after it left
    assert not bus.failures


async def test_ctrl_c_inside_a_plain_handler_still_leaves_every_other_subscriber_whole() -> None:
    """Ctrl-C lands wherever the CPU is, often in a plain handler that ``publish`` is calling:
    the subscribers after it still get that batch (a recorder still gets the ``stop``)."""
    events = make_session(2)
    plain: list[Event] = []
    in_task: list[Event] = []

    def interrupted(event: Event) -> None:
        if isinstance(event, Stop):
            raise KeyboardInterrupt

    async def take(event: Event) -> None:
        in_task.append(event)

    async with open_bus() as bus:
        bus.subscribe(interrupted)
        bus.subscribe(plain.append)
        bus.subscribe(take)
        await bus.publish(events[:-1])
        with pytest.raises(KeyboardInterrupt):
            await bus.publish(events[-1:])
    assert plain == in_task == events
    assert not bus.failures  # Ctrl-C is not the handler's failure


async def test_a_plain_handler_closing_another_stops_it_within_the_same_batch() -> None:
    first: list[Event] = []
    second: list[Event] = []

    def closer(event: Event) -> None:
        first.append(event)
        if isinstance(event, Usage):
            other.close()

    async with open_bus() as bus:
        bus.subscribe(closer)
        other = bus.subscribe(second.append)
        events = make_session(3)
        await bus.publish(events[:2])
        await bus.publish(events[2:])  # closer closes other before other is offered this one
    assert first == events
    assert second == events[:2]
    assert other not in bus.subscriptions


async def test_a_plain_handlers_context_variables_stay_its_own() -> None:
    """As in a task of its own: what it sets persists for its next calls and never leaks
    into the publisher."""
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)
    seen: list[int] = []

    def count(event: Event) -> None:
        var.set(var.get() + 1)
        seen.append(var.get())

    async with open_bus() as bus:
        bus.subscribe(count)
        for event in make_session(2):
            await bus.publish([event])
            assert var.get() == 0
    assert seen == [1, 2, 3, 4, 5]


async def test_a_plain_handlers_failure_is_not_chained_to_the_publishers_cancellation() -> None:
    """The final stop is published while ``Cancelled`` propagates; a plain handler failing on
    it failed on its own, so its logged traceback must not read "during handling of
    Cancelled". What the handler itself was handling stays in its chain."""
    events = make_session(1)

    def fails(event: Event) -> None:
        if isinstance(event, Stop):
            try:
                raise KeyError("inner")
            except KeyError:
                raise ValueError("on stop")  # noqa: B904 (its context is the point)

    async with open_bus() as bus:
        bus.subscribe(fails)
        await bus.publish(events[:-1])
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.lowlevel.checkpoint()
            except trio.Cancelled:
                await bus.publish(events[-1:])  # as the client's final publish does
                raise
    (failure,) = bus.failures
    assert isinstance(failure.error, ValueError)
    assert isinstance(failure.error.__context__, KeyError)  # its own chain kept
    assert failure.error.__context__.__context__ is None  # not the publisher's Cancelled


async def test_a_partial_of_an_async_callable_object_is_awaited() -> None:
    seen: list[tuple[str, Event]] = []

    class Handler:
        async def __call__(self, tag: str, event: Event) -> None:
            await trio.lowlevel.checkpoint()
            seen.append((tag, event))

    async with open_bus() as bus:
        bus.subscribe(functools.partial(Handler(), "a"))
        await bus.publish(make_session(1))
    assert seen == [("a", e) for e in make_session(1)]
    assert not bus.failures
