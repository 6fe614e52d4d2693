"""Subscribe a plain async function: it is called once per event, in order."""

import trio

import streambus


async def show(event: streambus.Event) -> None:
    if isinstance(event, streambus.Delta) and event.channel == "text":
        print(event.text, end="", flush=True)
    elif isinstance(event, streambus.Stop):
        print(f"\n[{event.reason}]")


async def main() -> None:
    async with streambus.open_bus() as bus:
        bus.subscribe(show)
        await streambus.stream(bus, "What is streaming?", provider="sim")


if __name__ == "__main__":
    trio.run(main)
