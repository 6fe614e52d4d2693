"""Iterate the events yourself with `async for event in bus.subscribe()`.

The iterator ends when the bus closes; here we stop at the session's `stop` event. Using it
as `async with` unsubscribes on the way out, so the bus never waits for us afterwards.
"""

import functools

import trio

import streambus


async def main() -> None:
    async with (
        streambus.open_bus() as bus,
        trio.open_nursery() as nursery,
        bus.subscribe() as events,
    ):
        ask = functools.partial(streambus.stream, bus, "스트리밍이 뭐예요?", provider="sim")
        nursery.start_soon(ask)
        async for event in events:
            print(streambus.encode_event(event).decode())
            if isinstance(event, streambus.Stop):
                break


if __name__ == "__main__":
    trio.run(main)
