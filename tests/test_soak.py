"""A bounded soak: many concurrent sessions with random faults, recorded into one database.

``--soak-sessions N`` (default 300) sessions run at once, in three rounds on one bus and one
recorder, against one simulator, each with a fault drawn at random (or a cancellation). The
simulator runs as its own process (``streambus sim``), as a provider would: in this process
its work would compete with the client's for the one thread, and the timeouts under test
measure wall time. After each
round, every session must have exactly one ``stop`` — in what subscribers saw and in the
database — and the database must hold exactly the events that were published, none lost,
none twice. At the end no task is left running, and memory after the last round is no higher
than after the second (the first warms caches). The figures appear under "soak" in pytest's
summary.
"""

from __future__ import annotations

import collections
import gc
import random
import signal
import subprocess
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from streambus import (
    Event,
    ProviderConfig,
    Recorder,
    Request,
    Stop,
    Timeouts,
    open_bus,
    open_db,
    stream,
)
from streambus.db import read_events
from tests.conftest import SOAK_REPORT
from tests.test_cli import clean_env, find_command, read_base_url

ROUNDS = 3
FAULTS: list[tuple[str, dict[str, Any] | None]] = [
    ("ok", None),
    ("ok", None),
    ("disconnect", {"kind": "disconnect"}),
    ("malformed_json", {"kind": "malformed_json"}),
    ("error_event", {"kind": "error_event", "status": 529}),
    ("http_error", {"kind": "http_error", "status": 503, "retry_after": 0}),
    ("http_error", {"kind": "http_error", "status": 400}),
    ("no_done", {"kind": "no_done"}),
    ("stall", {"kind": "stall", "stall_seconds": 0.5}),  # a pause that passes
    ("cancel", None),
]
# Generous: hundreds of sessions share two CPUs with the simulator. The timeouts themselves
# are proven one by one in tests/test_timeouts.py and the fault matrix.
BUDGETS = Timeouts(connect=20, first_token=20, idle=20, stall=20, total=60)
PACE = {"ttft": 0.05, "tokens_per_second": 400, "jitter": 0.5}


def plan(rng: random.Random, n: int, round_: int) -> list[tuple[str, Request, float | None]]:
    """``n`` requests, each with its scenario; ``cancel`` ones get a moment to be cancelled."""
    requests = []
    for i in range(n):
        name, fault = rng.choice(FAULTS)
        if fault is not None and name not in ("http_error", "no_done"):
            fault = {**fault, "after_events": rng.randrange(0, 12)}
        simulator: dict[str, Any] = {**PACE, "fault": fault}
        provider = "anthropic" if i % 2 else "openai"
        prompt = f"Round {round_} session {i}: tell me about streaming ({provider})"
        request = Request.from_prompt(prompt, max_tokens=24, extra={"simulator": simulator})
        cancel_after = rng.uniform(0.01, 0.3) if name == "cancel" else None
        requests.append((f"{name}/{provider}", request, cancel_after))
    return requests


def provider_for(label: str, base_url: str) -> ProviderConfig:
    if label.endswith("anthropic"):
        url = base_url.removesuffix("/v1")
        return ProviderConfig("anthropic", "anthropic", url, "sim-1", api_key="k")
    return ProviderConfig("openai", "openai", base_url, "sim-1", api_key="k")


@pytest.fixture
def simulator() -> Iterator[str]:
    """``streambus sim`` in its own process; its OpenAI base URL."""
    cmd = [find_command(), "sim", "--port", "0"]
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=clean_env()) as server:
        try:
            yield read_base_url(server)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=20)


def test_soak(pytestconfig: pytest.Config, tmp_path: Any, simulator: str) -> None:
    n = pytestconfig.getoption("--soak-sessions")
    report = pytestconfig.stash[SOAK_REPORT]
    tracemalloc.start()
    try:
        figures = trio.run(soak, n, tmp_path / "soak.db", simulator)
    finally:
        tracemalloc.stop()
    memory, outcomes, tasks_before, tasks_after, seconds = figures
    report.append(
        f"{n} concurrent sessions x {ROUNDS} rounds in {seconds:.1f} s, one database; "
        f"outcomes: {dict(sorted(outcomes.items()))}"
    )
    report.append(
        "traced memory after each round (MiB): "
        + ", ".join(f"{m / 2**20:.1f}" for m in memory)
        + f"; tasks alive before/after: {tasks_before}/{tasks_after}"
    )
    assert tasks_after == tasks_before, "a task was left running"
    # Flat: the last round holds no more than the second plus a small slack (allocator noise,
    # and the recorder's bounded memory of recently finished session ids).
    assert memory[-1] - memory[1] < 2 * 2**20 + 300 * n, memory


async def soak(
    n: int, path: Any, base_url: str
) -> tuple[list[int], dict[str, int], int, int, float]:
    rng = random.Random(20261124)
    tasks_before = _living_tasks()
    started = trio.current_time()
    memory: list[int] = []
    outcomes: collections.Counter[str] = collections.Counter()
    async with open_bus() as bus:
        recorder = Recorder(path)
        reader = open_db(path)  # its own connection: the recorder's belongs to its thread
        bus.subscribe(recorder, name="recorder")
        seen: dict[str, list[Event]] = collections.defaultdict(list)

        def collect(batch: Any) -> None:
            for event in batch:
                seen[event.session].append(event)

        bus.subscribe(_Batches(collect), name="checker")
        for round_ in range(ROUNDS):
            labels: dict[str, str] = {}
            async with trio.open_nursery() as nursery:
                for i, (label, request, cancel_after) in enumerate(plan(rng, n, round_)):
                    session = f"{round_:02d}{i:06d}" + "0" * 16
                    labels[session] = label
                    config = provider_for(label, base_url)
                    nursery.start_soon(one, bus, config, request, session, cancel_after)
            await _until_recorded(reader, set(labels))
            for session, label in labels.items():
                events = seen.pop(session)
                stops = [e for e in events if isinstance(e, Stop)]
                assert len(stops) == 1 and events[-1] is stops[0], (label, events[-3:])
                assert [e.seq for e in events] == list(range(len(events))), label
                stored = list(read_events(reader, session))
                assert stored == events, f"{label}: the recording differs from what was published"
                outcomes[f"{label.split('/')[0]}->{stops[0].reason}"] += 1
                if label.startswith(("ok", "stall")):  # the stall passes: a normal end
                    assert stops[0].reason == "length", (label, stops[0])  # max_tokens
                elif label.startswith("cancel"):
                    assert stops[0].reason in ("cancelled", "length"), (label, stops[0])
                else:
                    assert stops[0].reason == "error", (label, stops[0])
            assert not seen, "events of sessions nobody started"
            labels.clear()
            gc.collect()
            memory.append(tracemalloc.get_traced_memory()[0])
        reader.conn.close()
    tasks_after = _living_tasks()
    return memory, dict(outcomes), tasks_before, tasks_after, trio.current_time() - started


async def one(
    bus: Any, config: ProviderConfig, request: Request, session: str, cancel_after: float | None
) -> None:
    with trio.CancelScope() as scope:
        if cancel_after is not None:
            scope.deadline = trio.current_time() + cancel_after
        await stream(bus, request, provider=config, session=session, timeouts=BUDGETS, retries=1)


class _Batches:
    """A subscriber taking whole batches (no per-event dispatch)."""

    def __init__(self, fn: Any) -> None:
        self.on_events = fn


def _living_tasks() -> int:
    return trio.lowlevel.current_statistics().tasks_living


async def _until_recorded(reader: Any, sessions: set[str]) -> None:
    """Wait until the recorder has written every session's stop (it flushes off-thread)."""
    marks = ",".join("?" * len(sessions))
    query = f"select count(*) from sessions where status != 'incomplete' and id in ({marks})"
    with trio.fail_after(30):
        while True:
            [(done,)] = reader.execute(query, list(sessions)).fetchall()
            if done == len(sessions):
                return
            await trio.sleep(0.05)
