"""End to end: what one streamed event costs us, in process and over loopback HTTP.

**Pipeline, in process** (issue 6's targets). The same OpenAI chunk bytes (rendered by the
simulator's code, see ``bench/_canned.py``) go through what ``streambus.stream`` does per
network read: ``SSEDecoder.feed`` → ``OpenAINormalizer.receive`` → ``MessageBuilder.add`` →
``bus.publish`` → subscribers, with one ``trio.lowlevel.checkpoint()`` per read standing for
the read's own checkpoint. Two read shapes: **bulk**, 4 KiB reads (a fast stream, many events
per read), and **live**, one event per read (a model producing tokens slower than we read
them). Three subscriber sets: (a) none; (b) ``ConsolePrinter`` writing to ``os.devnull`` and a
``Recorder`` into a fresh SQLite file; (c) (b) plus a sync function and an ``on_delta``
object. The timed region runs from opening the bus until it has closed, so every subscriber
has drained and the recorder has committed (verified by counting its rows afterwards).

**Over loopback HTTP.** One long stream (100,000 content events; quick: 2,000) served by
``bench/_canned.py`` in its own process (the simulator's corpus answers are at most 140
tokens, so the simulator's renderer is used to make a long one, and the bytes are canned)
read by ``streambus.stream`` with the same subscriber sets, and by the official ``openai``
and ``anthropic`` SDKs (``AsyncOpenAI`` / ``AsyncAnthropic``, ``stream=True``, iterated, under
asyncio) reading the same bytes. CPU seconds are this process's only.

Every figure is per *content event* (one SSE chunk carrying one token), the median of the
repetitions with min–max; cases are interleaved round-robin so drift hits them alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from bench._canned import MODEL, PROMPT, openai_body, render_openai
from bench.common import Result, cpu_seconds
from streambus import ConsolePrinter, Recorder, Request, open_bus, stream
from streambus.client import new_session_id, opening_events
from streambus.message import MessageBuilder
from streambus.normalizers.openai import OpenAINormalizer
from streambus.providers import ProviderConfig
from streambus.sse import SSEDecoder

ROOT = Path(__file__).resolve().parent.parent
BULK_READ = 4096
SETS = ("none", "printer+recorder", "printer+recorder+2 user")
TARGETS = {("bulk", "printer+recorder"): 10.0, ("live", "printer+recorder"): 30.0}
"""Issue 6: wall µs per event, bulk and live, with the printer and the recorder."""

# -- subscriber sets ---------------------------------------------------------------------------


class _OnDelta:
    """A user's object subscriber: counts text."""

    def __init__(self) -> None:
        self.chars = 0

    def on_delta(self, event: Any) -> None:
        self.chars += len(event.text)


class Subscribers:
    """One subscriber set for one run: fresh printer, recorder (own file) and user handlers."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self.handlers: list[Any] = []
        self.db_path: Path | None = None
        self._files: list[Any] = []
        if kind == "none":
            return
        if kind.startswith("printer"):
            out = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._files.append(out)
            self.handlers.append(ConsolePrinter(out, out, color=False))
        if "recorder" in kind:
            self.db_path = tmp / f"{new_session_id()}.db"
            self.handlers.append(Recorder(self.db_path))
        if kind.endswith("2 user"):
            self.seen = 0

            def count(event: Any) -> None:
                self.seen += 1

            self.handlers += [count, _OnDelta()]

    def subscribe(self, bus: Any) -> None:
        for handler in self.handlers:
            bus.subscribe(handler)

    def verify(self, session: str, events: int) -> None:
        """The recorder committed every event of the session, in the timed region."""
        if self.db_path is None:
            return
        # Closed here: left to the garbage collector (a used sqlite3 connection sits in a
        # reference cycle), its close, the final WAL checkpoint, lands in the next run.
        with contextlib.closing(sqlite3.connect(self.db_path)) as conn:
            (rows,) = conn.execute(
                "select count(*) from events where session_id = ?", (session,)
            ).fetchone()
        assert rows == events, f"recorded {rows} of {events} events"

    def close(self) -> None:
        for handler in self.handlers:
            if isinstance(handler, Recorder):
                handler.db.conn.close()
        for f in self._files:
            f.close()


# -- the in-process pipeline -------------------------------------------------------------------


def reads(data: bytes, shape: str) -> list[bytes]:
    """``data`` cut as the network would hand it over: 4 KiB reads, or one event per read."""
    if shape == "bulk":
        return [data[i : i + BULK_READ] for i in range(0, len(data), BULK_READ)]
    return [event + b"\n\n" for event in data.split(b"\n\n") if event]


CONFIG = ProviderConfig("openai", "openai", "http://127.0.0.1:9/v1", MODEL, api_key="k")


async def pipeline(chunks: list[bytes], subscribers: Subscribers, n: int) -> int:
    """Feed ``chunks`` through decoder, normalizer, builder and bus, as ``stream`` does per
    read; return how many events were published. Returns once the bus has closed."""
    session = new_session_id()
    normalizer = OpenAINormalizer(session=session, provider="openai", model=MODEL)
    decoder = SSEDecoder()
    builder = MessageBuilder()
    body = openai_body(n)
    published = 0
    async with open_bus() as bus:
        subscribers.subscribe(bus)
        opening = opening_events(
            normalizer, CONFIG, body, conversation=None, turn=0, tool_results=()
        )
        normalizer.begin_attempt()
        builder.add(opening)
        await bus.publish(opening)
        published += len(opening)
        t0 = trio.current_time()
        checkpoint = trio.lowlevel.checkpoint
        for chunk in chunks:
            await checkpoint()  # the network read's own checkpoint
            sse = decoder.feed(chunk)
            if not sse:
                continue
            events = normalizer.receive(sse, int((trio.current_time() - t0) * 1e9))
            if events:
                builder.add(events)
                await bus.publish(events)
                published += len(events)
    assert normalizer.stopped and builder.message.stop is not None
    subscribers.verify(session, published)
    return published


async def timed(run: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``await run()``."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    await run()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def summarize(
    group: str, name: str, samples: list[tuple[float, float]], n: int, **extra: Any
) -> Result:
    """Wall µs/event as the figure; CPU µs/event and events/s (medians) alongside."""
    walls = [w / n * 1e6 for w, _ in samples]
    cpus = [c / n * 1e6 for _, c in samples]
    rates = [n / w for w, _ in samples]
    return Result(
        group,
        name,
        "µs/event",
        statistics.median(walls),
        min(walls),
        max(walls),
        {
            "cpu_µs": statistics.median(cpus),
            "events/s": round(statistics.median(rates)),
            "events": n,
            **extra,
        },
    )


def verdict(value: float, target: float) -> dict[str, Any]:
    return {"target": f"≤{target:g}", "met": "yes" if value <= target else "NO"}


async def run_pipeline(
    sets: tuple[str, ...],
    n: int,
    reps: int,
    warmup: int = 1,
    group: str = "e2e pipeline (in process)",
) -> list[Result]:
    """Every (shape, set) case, interleaved round-robin, ``reps`` timed runs after a warmup."""
    data = render_openai(n)
    shaped = {shape: reads(data, shape) for shape in ("bulk", "live")}
    cases = [(shape, kind) for shape in shaped for kind in sets]
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        for rep in range(warmup + reps):
            for shape, kind in cases:
                subs = Subscribers(kind, Path(tmp))
                try:
                    took = await timed(lambda: pipeline(shaped[shape], subs, n))  # noqa: B023
                finally:
                    subs.close()
                if rep >= warmup:
                    samples[shape, kind].append(took)
    results = []
    for shape, kind in cases:
        result = summarize(group, f"{shape} · {kind}", samples[shape, kind], n)
        target = TARGETS.get((shape, kind))
        if target is not None:
            result.extra.update(verdict(result.median, target))
        results.append(result)
    return results


# -- over loopback HTTP ------------------------------------------------------------------------


class CannedServer:
    """``bench/_canned.py`` serving an ``n``-event stream in its own process."""

    def __init__(self, n: int) -> None:
        cmd = [sys.executable, "-m", "bench._canned", "--events", str(n)]
        self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("URL "):
            self.close()
            raise RuntimeError(f"the canned server did not start: {line!r}")
        self.url = line.split()[1]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


async def via_streambus(url: str, kind: str, subs: Subscribers, n: int, fmt: str) -> None:
    if fmt == "openai":
        config = ProviderConfig("openai", "openai", url + "/v1", MODEL, api_key="k")
    else:
        config = ProviderConfig("anthropic", "anthropic", url, MODEL, api_key="k")
    session = new_session_id()
    async with open_bus() as bus:
        subs.subscribe(bus)
        request = Request.from_prompt(PROMPT, max_tokens=n)
        message = await stream(bus, request, provider=config, session=session, retries=0)
    assert message.stop is not None and message.stop.reason == "stop", message.stop
    assert message.events == n + 3 or fmt != "openai", message.events  # start, usage, stop
    subs.verify(session, message.events)


async def via_openai_sdk(url: str, n: int) -> None:
    import openai

    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client:
        chunks = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        )
        content = 0
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                content += 1
    assert content == n, content


async def via_anthropic_sdk(url: str, n: int) -> None:
    import anthropic

    async with anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0) as client:
        events = await client.messages.create(
            model=MODEL,
            max_tokens=n,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
        )
        content = 0
        async for event in events:
            if event.type == "content_block_delta":
                content += 1
    assert content == n, content


def run_loopback(n: int, reps: int, warmup: int = 1) -> list[Result]:
    """streambus (three subscriber sets, both wire formats) and the two SDKs, one server."""
    import anthropic
    import openai

    group = "e2e over loopback HTTP"
    del anthropic, openai  # imported here so that no timed run pays for it
    server = CannedServer(n)
    tmp = tempfile.TemporaryDirectory(prefix="bench-e2e-")

    def trio_case(kind: str, fmt: str) -> Callable[[], tuple[float, float]]:
        def one() -> tuple[float, float]:
            subs = Subscribers(kind, Path(tmp.name))
            try:
                return trio.run(timed, lambda: via_streambus(server.url, kind, subs, n, fmt))
            finally:
                subs.close()

        return one

    def asyncio_case(fn: Callable[[str, int], Awaitable[None]]) -> Callable[[], Any]:
        return lambda: asyncio.run(timed(lambda: fn(server.url, n)))

    cases: dict[str, Callable[[], tuple[float, float]]] = {
        **{f"streambus openai · {kind}": trio_case(kind, "openai") for kind in SETS},
        "streambus anthropic · none": trio_case("none", "anthropic"),
        "openai SDK (AsyncOpenAI)": asyncio_case(via_openai_sdk),
        "anthropic SDK (AsyncAnthropic)": asyncio_case(via_anthropic_sdk),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    try:
        for rep in range(warmup + reps):
            for name, case in cases.items():
                took = case()
                if rep >= warmup:
                    samples[name].append(took)
    finally:
        server.close()
        tmp.cleanup()
    results = []
    for name in cases:
        result = summarize(group, name, samples[name], n)
        result.extra["cpu_s"] = statistics.median(c for _, c in samples[name])
        results.append(result)
    return results


def run(quick: bool) -> list[Result]:
    if quick:
        results = trio.run(run_pipeline, SETS, 1_000, 1)
        return results + run_loopback(2_000, 1, warmup=0)
    results = trio.run(run_pipeline, SETS, 20_000, 5)
    return results + run_loopback(100_000, 3)
