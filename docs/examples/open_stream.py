"""The SDK-style shortcut: one request, its events, iteration ends after `stop`."""

import trio

import streambus


async def main() -> None:
    async with streambus.open_stream("Tell me about tokens", provider="sim") as events:
        async for event in events:
            if isinstance(event, streambus.Delta):
                print(event.text, end="", flush=True)
    print()


if __name__ == "__main__":
    trio.run(main)
