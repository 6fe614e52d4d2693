"""A minimal, fast pacing server for the concurrency benchmark: OpenAI chunks at a fixed pace.

``python -m bench.pace_server`` prints ``PORT <n>`` and serves until killed. It answers
``POST …/chat/completions`` (HTTP/1.1, keep-alive) with pre-rendered ``chat.completion.chunk``
events in chunked transfer encoding, exactly as ``streambus sim`` renders them (same fields,
same order, ``usage: null``, ``obfuscation``): the role chunk at once, the first content chunk
after ``ttft``, then one content chunk per event at the request's pace, then the finish chunk,
the usage chunk and ``data: [DONE]``. ``GET /stats`` returns (and resets) how late the sends
were against their schedule.

Why not ``streambus sim``: it builds every answer from its corpus, runs h11 and sleeps once per
event per stream in trio, which costs a whole CPU long before 50,000 events/s; here the bytes
are rendered once, and one heap-driven asyncio loop writes every stream's due events, so the
server stays a small share of the machine and the client under test is what saturates.

The request body's ``"simulator"`` object (the convention of ``streambus sim``) sets
``events`` (content chunks), ``tokens_per_second``, ``ttft`` and ``jitter``. The schedule is
:func:`offsets` (content event ``k`` is due ``offsets(...)[k]`` after the request arrived):
deterministic, so a client can tell how far behind the schedule each event reached it.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import json
import random
import sys
from typing import Any

__all__ = ["CHUNK_EXTRA", "WORDS", "offsets"]

WORDS = (
    " Streaming",
    " responses",
    " arrive",
    " as",
    " a",
    " sequence",
    " of",
    " small",
    " chunks",
    ",",
    " each",
    " carrying",
    " one",
    " token",
    " of",
    " the",
    " answer",
    " the",
    " model",
    " is",
    " writing",
    ".",
)
CHUNK_EXTRA = 3
"""Chunks besides the content ones: role, finish, usage (``[DONE]`` is not a chunk)."""

_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"openai-version: 2020-10-01\r\n"
    b"x-request-id: req_bench\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


@functools.cache
def offsets(events: int, rate: float, ttft: float, jitter: float) -> tuple[float, ...]:
    """When each content event is due, in seconds after the request: ``ttft``, then gaps of
    ``1/rate`` ± ``jitter`` (a fraction), drawn from a fixed seed so both ends agree."""
    rng = random.Random(20261124)
    due, out = ttft, []
    for _ in range(events):
        out.append(due)
        due += (1.0 + jitter * rng.uniform(-1.0, 1.0)) / rate
    return tuple(out)


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: dict[str, Any]) -> bytes:
    return _frame(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


def _chunk(choices: list[Any], usage: Any = None, obfuscation: str = "Xy3") -> dict[str, Any]:
    return {
        "id": "chatcmpl-BENCHpacedstream000000000000",
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": "sim-1",
        "service_tier": "default",
        "system_fingerprint": "fp_0123456789",
        "choices": choices,
        "usage": usage,
        "obfuscation": obfuscation,
    }


def _delta(fields: dict[str, Any], finish: str | None = None) -> list[Any]:
    return [{"index": 0, "delta": fields, "logprobs": None, "finish_reason": finish}]


ROLE = _event(_chunk(_delta({"role": "assistant", "content": "", "refusal": None})))
CONTENT = [
    _event(_chunk(_delta({"content": w}), obfuscation="abcdefghijklmnop"[: 1 + i % 16]))
    for i, w in enumerate(WORDS)
]


def _ending(events: int) -> bytes:
    usage = {
        "prompt_tokens": 12,
        "completion_tokens": events,
        "total_tokens": 12 + events,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    finish = _event(_chunk(_delta({}, "stop")))
    return finish + _event(_chunk([], usage)) + _frame(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class _Stream:
    __slots__ = ("conn", "ending", "k", "schedule", "start")

    def __init__(self, conn: _Conn, schedule: tuple[float, ...], start: float) -> None:
        self.conn = conn
        self.schedule = schedule
        self.start = start
        self.k = 0
        self.ending = _ending(len(schedule))


class _Server:
    def __init__(self) -> None:
        self.heap: list[tuple[float, int, _Stream]] = []
        self.counter = 0
        self.wake = asyncio.Event()
        self.late: list[int] = [0] * 1001  # milliseconds late, 0..1000 (the last: ≥ 1 s)
        self.sent = 0
        self.streams = 0

    def add(self, stream: _Stream) -> None:
        self.counter += 1
        due = stream.start + stream.schedule[0]
        heapq.heappush(self.heap, (due, self.counter, stream))
        self.wake.set()

    async def pace(self) -> None:
        """Write every due event, then sleep until the next one (at most 1 ms, for new ones)."""
        loop = asyncio.get_running_loop()
        heap, late = self.heap, self.late
        while True:
            now = loop.time()
            while heap and heap[0][0] <= now:
                due, _, stream = heapq.heappop(heap)
                late[min(int((now - due) * 1000), 1000)] += 1
                self.sent += 1
                transport = stream.conn.transport
                if transport is None or transport.is_closing():
                    continue
                k = stream.k
                transport.write(CONTENT[k % len(CONTENT)])
                stream.k = k = k + 1
                if k == len(stream.schedule):
                    transport.write(stream.ending)
                    stream.conn.busy = False
                    stream.conn.parse()  # a pipelined next request, if any
                else:
                    self.counter += 1
                    heapq.heappush(heap, (stream.start + stream.schedule[k], self.counter, stream))
            self.wake.clear()
            timeout = 0.001 if not heap else min(0.001, max(0.0, heap[0][0] - loop.time()))
            if not heap:
                await self.wake.wait()
            else:
                await asyncio.sleep(timeout)

    def stats(self) -> bytes:
        total = sum(self.late)
        p50 = p99 = 0
        seen = 0
        for ms, count in enumerate(self.late):
            seen += count
            if not p50 and seen >= total * 0.5:
                p50 = ms
            if seen >= total * 0.99:
                p99 = ms
                break
        worst = max((ms for ms, c in enumerate(self.late) if c), default=0)
        body = json.dumps(
            {
                "sent": self.sent,
                "streams": self.streams,
                "late_ms_p50": p50,
                "late_ms_p99": p99,
                "late_ms_max": worst,
            }
        ).encode()
        self.late[:] = [0] * 1001
        self.sent = 0
        self.streams = 0
        return body


class _Conn(asyncio.Protocol):
    def __init__(self, server: _Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.parse()

    def parse(self) -> None:
        if self.busy or self.transport is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1")
        request_line, *lines = head.split("\r\n")
        length = 0
        for line in lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        method, path, _ = request_line.split(" ", 2)
        if method == "GET" and path.endswith("/stats"):
            payload = self.server.stats()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            return self.parse()
        options = json.loads(body).get("simulator") or {}
        schedule = offsets(
            int(options.get("events", 100)),
            float(options.get("tokens_per_second", 50.0)),
            float(options.get("ttft", 0.1)),
            float(options.get("jitter", 0.2)),
        )
        self.busy = True
        self.server.streams += 1
        self.transport.write(_HEAD + ROLE)
        self.server.add(_Stream(self, schedule, asyncio.get_running_loop().time()))


async def main() -> None:
    server = _Server()
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: _Conn(server), "127.0.0.1", 0, backlog=4096, reuse_address=True
    )
    port = listener.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    await server.pace()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
