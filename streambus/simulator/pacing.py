"""Sending a prepared list of SSE events at a model's pace, with a fault injected on the way.

Providers render every event up front (answers are small), marking which events carry
content and which one is the terminator. This module alone knows about time and faults, so
both provider formats fail and pace in exactly the same way. Delays come from ``trio.sleep``
and jitter from a generator seeded by the request, so the bytes never depend on timing.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from typing import NamedTuple

import trio

from ._http import Disconnect
from .config import SimulatorConfig

__all__ = ["FaultEvents", "Step", "paced"]


class Step(NamedTuple):
    """One SSE event. ``tokens`` > 0 marks a content event (paced, counted for faults)."""

    data: bytes
    tokens: int = 0
    terminal: bool = False


class FaultEvents(NamedTuple):
    """The provider's bytes for the faults that are events: a malformed one, an error one."""

    malformed: bytes
    error: bytes


_MID_STREAM = ("disconnect", "stall", "malformed_json", "error_event")


def _fault_position(steps: Sequence[Step], after_events: int) -> int:
    """Index of the step before which the fault strikes: after ``after_events`` content
    events, or right after the last one when there are fewer."""
    content = [index for index, step in enumerate(steps) if step.tokens]
    if after_events < len(content):
        return content[after_events]
    return content[-1] + 1 if content else len(steps)


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
    if fault is not None and fault.kind in _MID_STREAM:
        strike = _fault_position(steps, fault.after_events)
    first = True
    for index in range(len(steps) + 1):
        if index == strike and fault is not None:
            if fault.kind == "disconnect":
                raise Disconnect
            if fault.kind == "stall":
                await trio.sleep(fault.stall_seconds)
            elif fault.kind == "malformed_json":
                yield faults.malformed
            elif fault.kind == "error_event":
                yield faults.error
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
