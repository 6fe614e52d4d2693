"""Record a session, then drive your own subscriber from the recording: no network needed."""

import tempfile
from pathlib import Path

import trio

import streambus


class TypingIndicator:
    """A subscriber under test: how long was the user left waiting between pieces of text?"""

    def __init__(self) -> None:
        self.longest_wait = 0.0
        self._last: float | None = None

    def on_delta(self, event: streambus.Delta) -> None:
        now = trio.current_time()
        if self._last is not None:
            self.longest_wait = max(self.longest_wait, now - self._last)
        self._last = now

    def on_stop(self, event: streambus.Stop) -> None:
        print(f"replayed to {event.reason}; longest wait {self.longest_wait * 1000:.0f} ms")


async def main(path: Path) -> None:
    # Record once (the CLI does this on every run); the recorder closes its file on leaving.
    async with streambus.Recorder(path) as recorder, streambus.open_bus() as bus:
        bus.subscribe(recorder)
        recorded = await streambus.stream(bus, "What is streaming?", provider="sim")
    session_id = recorded.session or ""

    async with streambus.open_bus() as bus:  # replay as often as you like, here 4x faster
        bus.subscribe(TypingIndicator())
        message = await streambus.Replayer(path, session_id, speed=4).run(bus)
    print(message.text[:60], "…")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp) / "recordings.db")
