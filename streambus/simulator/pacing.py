"""Sending a prepared list of SSE events at a model's pace, with a fault injected on the way.

Providers render every event up front (answers are small), marking which events carry
content, which carry tool-call arguments and which one is the terminator, plus the bytes of
their own fault events. This module alone knows about time and faults, so both provider
formats fail and pace in exactly the same way. Delays come from ``trio.sleep`` and jitter
from a generator seeded by the request, so the bytes never depend on timing.

Faults that strike before the response head (``at="headers"``, ``http_error``,
``wrong_content_type``) belong to the server; everything here happens inside the body.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import NamedTuple

import trio

from ._http import Disconnect
from .config import Fault, SimulatorConfig

__all__ = [
    "BLOCK_SIZE",
    "INVALID_UTF8",
    "NUL_TEXT",
    "FaultEvents",
    "Step",
    "fill_text",
    "paced",
    "strike_index",
]

BLOCK_SIZE = 64 * 1024
"""Bytes per write for the faults that send megabytes; they never hold more than this."""
INVALID_UTF8 = b"\xff\xfe"
"""The text of the ``invalid_utf8`` event: never valid UTF-8."""
NUL_TEXT = b"a\x00b"
"""The text of the ``nul_byte`` event: a raw NUL, which JSON strings must escape."""
_MARK = "\ue000"  # a private-use character no answer contains


def fill_text(render: Callable[[str], bytes], raw: bytes) -> bytes:
    """An event rendered by ``render(text)`` whose JSON string holds ``raw`` bytes verbatim,
    which no JSON encoder would write."""
    return render(_MARK).replace(_MARK.encode(), raw)


class Step(NamedTuple):
    """One SSE event. ``tokens`` > 0 marks a content event (paced, counted for faults);
    ``arguments`` marks a tool call's argument fragment."""

    data: bytes
    tokens: int = 0
    terminal: bool = False
    arguments: bool = False


class FaultEvents(NamedTuple):
    """The provider's own bytes for the faults that are events.

    ``oversize`` is the head and tail of an ignorable event (it opens a JSON array that the
    ``data:`` padding lines fill and the tail closes).
    """

    malformed: bytes
    error: bytes
    keep_alive: bytes
    invalid_utf8: bytes
    nul_byte: bytes
    wrong_shape: bytes
    oversize: tuple[bytes, bytes]


# Decided by the server before the body, or (no_done) a removal rather than an insertion.
_NOT_IN_BODY = ("http_error", "wrong_content_type", "no_done")
_PADDING_LINE = b'data: "' + b"x" * 1014 + b'",\n'  # 1 KiB: far below any line limit
_PADDING = _PADDING_LINE * (BLOCK_SIZE // len(_PADDING_LINE))
_FILLER = b"x" * BLOCK_SIZE


def strike_index(steps: Sequence[Step], fault: Fault) -> int:
    """Index of the step before which ``fault`` strikes (``len(steps)``: after the last).

    ``text`` (the default): after ``after_events`` content events, or right after the last one
    when there are fewer. ``arguments``: after the first argument fragment that carries
    text, or, with no tool call, right after the last content event. ``terminator``: before
    the terminal event (after usage and finish).
    """
    content = [index for index, step in enumerate(steps) if step.tokens]
    after_content = content[-1] + 1 if content else len(steps)
    if fault.at == "body":
        return 0
    if fault.at == "terminator":
        return next((i for i, step in enumerate(steps) if step.terminal), len(steps))
    if fault.at == "arguments":
        fragments = [index for index in content if steps[index].arguments]
        return fragments[0] + 1 if fragments else after_content
    if fault.after_events < len(content):
        return content[fault.after_events]
    return after_content


async def _keep_alives(fault: Fault, ping: bytes) -> AsyncGenerator[bytes, None]:
    """``ping`` every ``ping_interval`` seconds until ``stall_seconds`` have passed. Times are
    counted from the start, so the number of pings never depends on scheduling."""
    start = trio.current_time()
    deadline = start + fault.stall_seconds
    beat = 1
    while (when := start + beat * fault.ping_interval) < deadline:
        await trio.sleep_until(when)
        yield ping
        beat += 1
    await trio.sleep_until(deadline)


async def _endless_line(fault: Fault) -> AsyncGenerator[bytes, None]:
    yield b"data: "
    left = fault.size
    while left > 0:
        yield _FILLER if left >= BLOCK_SIZE else _FILLER[:left]
        left -= BLOCK_SIZE
    await trio.sleep(fault.stall_seconds)  # held open; a client hanging up ends it sooner
    raise Disconnect


async def _oversize(fault: Fault, head: bytes, tail: bytes) -> AsyncGenerator[bytes, None]:
    yield head
    sent = len(head)
    while sent <= fault.size:
        yield _PADDING
        sent += len(_PADDING)
    yield tail


async def _strike(
    fault: Fault, faults: FaultEvents, upcoming: bytes
) -> AsyncGenerator[bytes, None]:
    """The fault's own bytes; raises ``Disconnect`` for the kinds that end the connection."""
    kind = fault.kind
    if kind == "disconnect":
        raise Disconnect
    if kind == "cut_chunk":
        cut = len(upcoming) // 2 or len(upcoming)
        raise Disconnect(upcoming[:cut], missing=len(upcoming) - cut)
    if kind == "stall":
        await trio.sleep(fault.stall_seconds)
    elif kind == "ping_stall":
        async with aclosing(_keep_alives(fault, faults.keep_alive)) as pings:
            async for ping in pings:
                yield ping
    elif kind == "endless_line":
        async with aclosing(_endless_line(fault)) as pieces:
            async for piece in pieces:
                yield piece
    elif kind == "oversize_event":
        async with aclosing(_oversize(fault, *faults.oversize)) as pieces:
            async for piece in pieces:
                yield piece
    else:
        single = {
            "malformed_json": faults.malformed,
            "error_event": faults.error,
            "invalid_utf8": faults.invalid_utf8,
            "nul_byte": faults.nul_byte,
            "wrong_shape": faults.wrong_shape,
        }
        yield single[kind]


async def paced(
    steps: Sequence[Step],
    config: SimulatorConfig,
    faults: FaultEvents,
    rng: random.Random,
) -> AsyncIterator[bytes]:
    """Yield the events: ``ttft`` before the first content event, then ``tokens /
    tokens_per_second`` (± jitter) before each next one."""
    fault = config.fault
    if fault is not None and fault.kind == "no_done":
        steps = [step for step in steps if not step.terminal]
    strike = -1
    if fault is not None and fault.kind not in _NOT_IN_BODY and fault.at != "headers":
        strike = strike_index(steps, fault)
    first = True
    for index in range(len(steps) + 1):
        if index == strike and fault is not None:
            upcoming = steps[index].data if index < len(steps) else b"data: "
            async with aclosing(_strike(fault, faults, upcoming)) as pieces:
                async for piece in pieces:
                    yield piece
            if fault.kind == "error_event":
                return
        if index == len(steps):
            return
        step = steps[index]
        if step.tokens:
            wobble = 1.0 + config.jitter * rng.uniform(-1.0, 1.0)
            if first:
                delay = config.ttft
                first = False
            elif config.tokens_per_second > 0:
                delay = step.tokens / config.tokens_per_second * wobble
            else:
                delay = 0.0
            if delay > 0:
                await trio.sleep(delay)
        yield step.data
