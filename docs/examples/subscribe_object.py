"""Subscribe an object: streambus calls the on_* methods it has (sync or async)."""

import trio

import streambus


class WordCounter:
    def __init__(self) -> None:
        self.words = 0

    def on_delta(self, event: streambus.Delta) -> None:
        self.words += len(event.text.split())

    async def on_stop(self, event: streambus.Stop) -> None:
        print(f"{self.words} words, stopped: {event.reason} after {event.t_ns / 1e9:.2f} s")


async def main() -> None:
    async with streambus.open_bus() as bus:
        bus.subscribe(WordCounter())
        bus.subscribe(streambus.ConsolePrinter())  # the CLI's printer is a subscriber too
        await streambus.stream(bus, "Why do LLM APIs stream tokens?", provider="sim")


if __name__ == "__main__":
    trio.run(main)
