"""A "stop generating" button: cancel the stream's scope; the partial answer stays.

The stream runs inside a ``trio.CancelScope``. The button is whatever calls ``scope.cancel()``:
here a task that "clicks" once 20 text deltas have arrived; in an app, the click handler (from a
GUI thread: ``trio.from_thread.run_sync(scope.cancel, trio_token=token)``). ``stream()`` then
publishes a final ``stop`` with reason ``cancelled``, shielded, so every subscriber (the
on-screen text, a recorder) ends the session properly, and the text shown so far stays.
"""

import trio

import streambus
from streambus.simulator import SimulatorConfig

CLICK_AFTER = 20  # text deltas


class Answer:
    """What a UI would show: the text as it streams, and how the stream ended."""

    def __init__(self) -> None:
        self.text = ""
        self.deltas = 0
        self.reason: str | None = None
        self.enough = trio.Event()  # stands in for the user's click

    def on_delta(self, event: streambus.Delta) -> None:
        if event.channel == "text":
            print(event.text, end="", flush=True)
            self.text += event.text
            self.deltas += 1
            if self.deltas == CLICK_AFTER:
                self.enough.set()

    def on_stop(self, event: streambus.Stop) -> None:
        self.reason = event.reason


async def main() -> None:
    answer = Answer()
    generating = trio.CancelScope()

    async def stop_button() -> None:
        await answer.enough.wait()
        generating.cancel()  # the click

    # Paced like a real model (about 60 tokens/s), so the click lands mid-answer.
    simulator = SimulatorConfig(ttft=0.1, tokens_per_second=60)
    async with trio.open_nursery() as nursery, streambus.open_bus() as bus:
        bus.subscribe(answer)
        nursery.start_soon(stop_button)
        with generating:
            await streambus.stream(
                bus, "Tell me about streaming", provider="sim", simulator=simulator
            )
        nursery.cancel_scope.cancel()  # the answer is over, clicked or not: no more button
    # Leaving open_bus waited for every subscriber to handle the final stop.
    print(f"\n[{answer.reason}] kept {answer.deltas} deltas, {len(answer.text)} characters")


if __name__ == "__main__":
    trio.run(main)
