"""Cancellation at any moment (issue 5, part 3): Ctrl-C, SIGTERM or a cancelled scope during
connect, backoff, streaming, tool execution or replay ends cleanly. What arrived stays, every
subscriber hears one ``stop`` with reason ``cancelled``, the recording is committed, and the
CLI exits 130 (SIGINT) or 143 (SIGTERM); a second Ctrl-C while shutting down exits at once
and leaves a sound database.

The first half runs the installed command in a subprocess (helpers from tests/test_cli.py);
the second half cancels the library in-process. Real clock throughout: trio's autojump
misfires with real I/O. Each test signals when the process is known to be in its phase (a
server saw the request, stderr announced a retry, a tool wrote a marker), never after a
guessed sleep.
"""

from __future__ import annotations

import functools
import logging
import signal
import socket
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
import trio

import streambus.db
from streambus import (
    Bus,
    Delta,
    Event,
    ProviderConfig,
    Recorder,
    Start,
    Stop,
    ToolResult,
    decode_event,
    open_bus,
    open_db,
    stream,
)
from streambus.conversation import converse
from streambus.simulator import (
    Fault,
    HTTPRequest,
    HTTPResponse,
    SimulatorConfig,
    serve,
    serve_http,
)
from streambus.tools import ToolRegistry
from tests.test_cli import (
    DB,
    ROOT,
    find_command,
    fresh_database,  # noqa: F401  (autouse: never the user's database)
    run,
    running,
)

SIGNALS = pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
KOREAN_SAMPLE = ROOT / "recordings" / "korean-answer.jsonl"


@pytest.fixture(scope="module")
def streambus_cmd() -> str:
    return find_command()


def sessions_of(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for event in events:
        out.setdefault(event.session, []).append(event)
    return out


def assert_sessions_end_once(events: list[Event]) -> dict[str, list[Event]]:
    """Every session: ``start`` first, ``seq`` without gaps, exactly one ``stop``, last."""
    sessions = sessions_of(events)
    for session, mine in sessions.items():
        assert isinstance(mine[0], Start), session
        assert [e.seq for e in mine] == list(range(len(mine))), session
        assert sum(isinstance(e, Stop) for e in mine) == 1, session
        assert isinstance(mine[-1], Stop), session
    return sessions


def assert_cancelled_cleanly(
    result: tuple[int, bytes, bytes], code: int, db: Path | None
) -> list[Event]:
    """The exit code; no traceback; a jsonl run ending in its one ``cancelled`` stop; and,
    when ``db`` is given, every printed session recorded exactly as printed, nothing else."""
    returncode, stdout, stderr = result
    assert returncode == code, stderr.decode()
    assert b"Traceback" not in stderr, stderr.decode()
    events = [decode_event(line) for line in stdout.splitlines()]
    assert events, "nothing was printed"
    last = events[-1]
    assert isinstance(last, Stop) and last.reason == "cancelled", last
    assert sum(isinstance(e, Stop) and e.reason == "cancelled" for e in events) == 1
    sessions = assert_sessions_end_once(events)
    if db is not None:
        assert stderr.decode().splitlines()[-1].endswith("(recorded)"), stderr.decode()
        database = open_db(db)
        assert database.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert {row["id"] for row in database["sessions"].rows} == set(sessions)
        for session, printed in sessions.items():
            assert list(streambus.db.read_events(database, session)) == printed
        assert database["sessions"].get(last.session)["status"] == "cancelled"
    return events


# -- the command line: before any content --------------------------------------------------


Phase = Literal["connect", "headers", "first_token", "backoff"]


@contextmanager
def listener_that_never_accepts() -> Iterator[int]:
    """A port whose accept queue is full: connecting to it hangs (no SYN-ACK comes)."""
    with socket.socket() as listener, ExitStack() as fillers:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(8):  # queue connections until one cannot get in
            filler = fillers.enter_context(socket.socket())
            filler.settimeout(0.2)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.skip("this system accepts connections past a full listen backlog")
        yield port


@asynccontextmanager
async def provider_in(phase: Phase) -> AsyncIterator[tuple[list[str], Callable[[Any], bool]]]:
    """A provider that holds the CLI in ``phase``: the run options that point at it, and
    when the CLI is surely there (a predicate over the running CLI)."""
    ready: Callable[[Any], bool]
    with ExitStack() as stack:
        async with trio.open_nursery() as nursery:
            if phase == "connect":  # start is printed as the connection begins; it never ends
                port = stack.enter_context(listener_that_never_accepts())
                url = f"http://127.0.0.1:{port}/v1"

                def ready(cli: Any) -> bool:
                    return b'"type":"start"' in cli.stdout

            elif phase == "headers":  # accepts the request, never answers
                arrived = trio.Event()

                async def silent(request: HTTPRequest) -> HTTPResponse:
                    arrived.set()
                    await trio.sleep_forever()
                    raise AssertionError  # pragma: no cover

                port = await nursery.start(functools.partial(serve_http, silent))
                url = f"http://127.0.0.1:{port}/v1"

                def ready(cli: Any) -> bool:
                    return arrived.is_set()

            else:
                config = (
                    SimulatorConfig(ttft=600)  # headers sent, the first token ten minutes away
                    if phase == "first_token"
                    else SimulatorConfig(
                        fault=Fault(
                            kind="http_error", status=429, retry_after=50, message="Slow down"
                        )
                    )
                )
                sim = await nursery.start(serve, config)
                url = sim.base_url

                def ready(cli: Any) -> bool:
                    if phase == "first_token":
                        return bool(sim.requests)
                    return b"retrying in" in cli.stderr

            options = ["-p", "openai", "--base-url", url, "--api-key", "sk-x", "--retries", "3"]
            yield options, ready
            nursery.cancel_scope.cancel()


@SIGNALS
@pytest.mark.parametrize("phase", ["connect", "headers", "first_token", "backoff"])
async def test_a_signal_before_any_content_cancels_cleanly(
    streambus_cmd: str,
    tmp_path: Path,
    phase: Phase,
    signum: int,
    code: int,
) -> None:
    db = tmp_path / "r.db"
    async with provider_in(phase) as (options, ready):
        cmd = [streambus_cmd, "run", *options, "-f", "jsonl", "--db", str(db), "Hi"]
        async with running(cmd) as cli:
            with trio.fail_after(30):
                await cli.wait_for(lambda: ready(cli))
                cli.signal(signum)
                result = await cli.finish()
    events = assert_cancelled_cleanly(result, code, db)
    assert [type(e) for e in events] == [Start, Stop]  # the start stays: the request was made
    if phase == "backoff":
        assert b"retrying in 50.0 s (attempt 2 of 4)" in result[2]


# -- the command line: streaming, tools, replay ----------------------------------------------


@SIGNALS
async def test_a_signal_mid_stream_keeps_what_was_printed_in_the_recording(
    streambus_cmd: str, tmp_path: Path, signum: int, code: int
) -> None:
    """tests/test_cli.py checks the text output; this checks the recording."""
    db = tmp_path / "r.db"
    cmd = [streambus_cmd, "run", "--sim-tps", "30", "--sim-ttft", "0", "-f", "jsonl"]
    async with running([*cmd, "--db", str(db), "What is streaming?"]) as cli:
        with trio.fail_after(30):
            await cli.wait_for(lambda: cli.stdout.count(b'"type":"delta"') >= 3)
            cli.signal(signum)
            result = await cli.finish()
    events = assert_cancelled_cleanly(result, code, db)
    assert sum(isinstance(e, Delta) for e in events) >= 3


BLOCKING_TOOL = '''
import os, time

def get_weather(location: str) -> dict:
    """Get the current weather for a location."""
    open(os.environ["TOOL_MARKER"], "w").close()
    time.sleep(600)  # ignores cancellation: a thread cannot be interrupted
    return {"location": location}
'''


SHIELDED_TOOL = '''
import os, trio

async def get_weather(location: str) -> dict:
    """Get the current weather for a location."""
    open(os.environ["TOOL_MARKER"], "w").close()
    with trio.CancelScope(shield=True):  # ignores cancellation, on purpose
        await trio.sleep(600)
    return {"location": location}
'''


async def run_tool_until_started(
    cmd: str, tmp_path: Path, source: str, signum: int, *options: str
) -> tuple[tuple[int, bytes, bytes], float]:
    """``run --tools`` with a tool that blocks; signal once the tool has started. The result
    and how long the command took to end after the signal."""
    tools = tmp_path / "tools.py"
    tools.write_text(source, encoding="utf-8")
    marker = tmp_path / "tool-started"
    args = [cmd, "run", "--tools", str(tools), "--sim-tps", "0", "--sim-ttft", "0", *options]
    async with running(
        [*args, "--db", str(tmp_path / "r.db"), "What's the weather in Paris?"],
        TOOL_MARKER=str(marker),
    ) as cli:
        with trio.fail_after(60):
            await cli.wait_for(marker.exists)
            cli.signal(signum)
            signalled = trio.current_time()
            result = await cli.finish()
    return result, trio.current_time() - signalled


@SIGNALS
async def test_a_signal_during_tool_execution_ends_the_next_turn_cancelled(
    streambus_cmd: str, tmp_path: Path, signum: int, code: int
) -> None:
    result, took = await run_tool_until_started(
        streambus_cmd, tmp_path, BLOCKING_TOOL, signum, "-f", "jsonl"
    )
    assert took < 5  # the tool's thread is abandoned, not waited for
    events = assert_cancelled_cleanly(result, code, tmp_path / "r.db")
    first, second = assert_sessions_end_once(events).values()
    assert isinstance(first[-1], Stop) and first[-1].reason == "tool_calls"
    start, outcome, stop = second  # the turn the results were for: ended before it was sent
    assert isinstance(start, Start) and start.turn == 1
    assert start.conversation == first[0].conversation  # type: ignore[union-attr]
    assert isinstance(outcome, ToolResult) and outcome.error == "cancelled"
    assert outcome.name == "get_weather"
    assert isinstance(stop, Stop) and stop.reason == "cancelled"


async def test_a_signal_during_tool_execution_prints_the_cancelled_call(
    streambus_cmd: str, tmp_path: Path
) -> None:
    (code, _, stderr), _ = await run_tool_until_started(
        streambus_cmd, tmp_path, BLOCKING_TOOL, signal.SIGINT
    )
    assert code == 130
    lines = stderr.decode().splitlines()
    assert any(
        line.startswith("[tool result 0] get_weather · ") and " · cancelled: " in line
        for line in lines
    ), lines
    assert lines[-2].startswith("[cancelled"), lines
    assert lines[-1].startswith("streambus: sessions "), lines


async def test_a_tool_that_ignores_cancellation_cannot_hold_the_process(
    streambus_cmd: str, tmp_path: Path
) -> None:
    """An async tool that shields itself cannot be abandoned like a thread: subscribers hear
    the cancellation at once, and the process quits after the shutdown grace."""
    result, took = await run_tool_until_started(
        streambus_cmd, tmp_path, SHIELDED_TOOL, signal.SIGTERM, "-f", "jsonl"
    )
    assert 9 < took < 20
    code, stdout, stderr = result
    assert code == 143 and b"Traceback" not in stderr
    assert stderr.decode().splitlines()[-1] == (
        "streambus: still stopping after 10 s; quitting now"
    )
    events = [decode_event(line) for line in stdout.splitlines()]
    last = events[-1]
    assert isinstance(last, Stop) and last.reason == "cancelled"
    database = open_db(tmp_path / "r.db")  # the cancelled turn was committed before
    for session, printed in assert_sessions_end_once(events).items():
        assert list(streambus.db.read_events(database, session)) == printed


@SIGNALS
async def test_a_signal_mid_replay_ends_it_with_one_cancelled_stop(
    streambus_cmd: str, signum: int, code: int
) -> None:
    imported = run(streambus_cmd, "import", str(KOREAN_SAMPLE))
    assert imported.returncode == 0, imported.stderr
    recorded = [decode_event(line) for line in KOREAN_SAMPLE.read_text("utf-8").splitlines()]
    cmd = [streambus_cmd, "replay", "latest", "--speed", "0.2", "-f", "jsonl"]
    async with running(cmd) as cli:
        with trio.fail_after(30):
            await cli.wait_for(lambda: cli.stdout.count(b'"type":"delta"') >= 3)
            cli.signal(signum)
            result = await cli.finish()
    events = assert_cancelled_cleanly(result, code, db=None)  # replays are not recorded
    assert events[:-1] == recorded[: len(events) - 1]
    assert result[2].decode().splitlines()[-1].startswith("streambus: replayed session ")
    database = open_db(DB["path"])  # the recording replayed is untouched
    assert database.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert list(streambus.db.read_events(database, recorded[0].session)) == recorded


# -- the command line: startup, and a second Ctrl-C ------------------------------------------


async def test_ctrl_c_during_startup_exits_130_quietly(streambus_cmd: str, tmp_path: Path) -> None:
    """Before the signal watcher listens (here: while a tool file is being imported)."""
    tools = tmp_path / "tools.py"
    tools.write_text(
        'import os, time\nopen(os.environ["TOOL_MARKER"], "w").close()\ntime.sleep(600)\n'
        "def get_weather(location: str) -> str:\n    return location\n",
        encoding="utf-8",
    )
    marker = tmp_path / "importing"
    cmd = [streambus_cmd, "run", "--tools", str(tools), "Hi"]
    async with running(cmd, TOOL_MARKER=str(marker)) as cli:
        with trio.fail_after(30):
            await cli.wait_for(marker.exists)
            cli.signal(signal.SIGINT)
            code, _, stderr = await cli.finish()
    assert code == 130
    assert b"Traceback" not in stderr and b"Aborted" not in stderr, stderr.decode()


async def test_a_second_ctrl_c_during_shutdown_exits_at_once(
    streambus_cmd: str, tmp_path: Path
) -> None:
    """The first Ctrl-C's shutdown is held up by the recorder: another connection holds the
    database's write lock, so the final write waits (up to its 30 s busy timeout). The second
    Ctrl-C must end the process at once, and the database must stay sound."""
    db = tmp_path / "r.db"
    cmd = [streambus_cmd, "run", "--sim-tps", "30", "--sim-ttft", "0", "-f", "jsonl"]
    async with running([*cmd, "--db", str(db), "What is streaming?"]) as cli:
        with trio.fail_after(30):
            await cli.wait_for(lambda: cli.stdout.count(b'"type":"delta"') >= 3)
        other = sqlite3.connect(db, isolation_level=None, timeout=10)
        try:
            other.execute("begin immediate")  # the write lock, until rollback
            with trio.fail_after(30):
                cli.signal(signal.SIGINT)
                await cli.wait_for(lambda: b'"reason":"cancelled"' in cli.stdout)
            assert cli.process.returncode is None  # still shutting down: the recorder waits
            cli.signal(signal.SIGINT)
            with trio.fail_after(3):
                code, stdout, stderr = await cli.finish()
        finally:
            other.execute("rollback")
            other.close()
    assert code == 130 and b"Traceback" not in stderr
    printed = [decode_event(line) for line in stdout.splitlines()]
    database = open_db(db)
    assert database.execute("pragma integrity_check").fetchone()[0] == "ok"
    for row in database["sessions"].rows:
        stored = list(streambus.db.read_events(database, row["id"]))
        assert sum(isinstance(e, Stop) for e in stored) <= 1
        assert stored == printed[: len(stored)]  # what was committed, in order, no gaps


# -- the library: a cancelled scope ----------------------------------------------------------


def all_tasks() -> set[trio.lowlevel.Task]:
    tasks: set[trio.lowlevel.Task] = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is not None:
            tasks.add(task)
            pending += [t for n in task.child_nurseries for t in n.child_tasks]
    return tasks


def under(task: trio.lowlevel.Task, nursery: trio.Nursery) -> bool:
    parent = task.parent_nursery
    while parent is not None:
        if parent is nursery:
            return True
        parent = parent.parent_task.parent_nursery
    return False


class Button:
    """A "stop generating" button: pressed (``scope.cancel()``) once ``ready`` is set."""

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.scope = trio.CancelScope()

    async def watch(self) -> None:
        await self.ready.wait()
        self.scope.cancel()


async def press_during(
    button: Button,
    produce: Callable[[Bus], Awaitable[Any]],
    servers: trio.Nursery,
    *extra: Any,
) -> dict[str, list[Event]]:
    """Run ``produce`` on a bus with a fast, a slow and a batch subscriber until the button
    is pressed; what each subscriber received. Checks that cancellation propagated out of
    ``produce`` and that nothing it started is still running (the servers aside)."""
    before = all_tasks()
    seen: dict[str, list[Event]] = {"fast": [], "slow": [], "batches": []}

    async def slow(event: Event) -> None:
        await trio.sleep(0.005)
        seen["slow"].append(event)

    class Batches:  # async: a batch taker in its own task ("fast" is called by publish)
        async def on_events(self, batch: tuple[Event, ...]) -> None:
            seen["batches"].extend(batch)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(button.watch)
            async with open_bus(grace=2) as bus:
                bus.subscribe(seen["fast"].append, name="fast")
                bus.subscribe(slow, name="slow")
                bus.subscribe(Batches(), name="batches")
                for handler in extra:
                    bus.subscribe(handler)
                with button.scope:
                    await produce(bus)
                    raise AssertionError("produce() returned instead of being cancelled")
    assert button.scope.cancelled_caught
    assert not bus.failures
    left = {task for task in all_tasks() - before if not under(task, servers)}
    assert not left, left
    for events in seen.values():
        last = events[-1]
        assert isinstance(last, Stop) and last.reason == "cancelled", last
        assert sum(isinstance(e, Stop) and e.reason == "cancelled" for e in events) == 1
        assert_sessions_end_once(events)
    assert seen["slow"] == seen["fast"] == seen["batches"]
    return seen


def openai_at(base_url: str) -> ProviderConfig:
    return ProviderConfig("sim", "openai", base_url, "sim-1", "sk-x")


async def test_cancelled_while_connecting() -> None:
    button = Button()

    def on_start(event: Event) -> None:  # the stream is connecting when this runs
        if isinstance(event, Start):
            button.ready.set()

    async with trio.open_nursery() as servers:
        with listener_that_never_accepts() as port:
            config = openai_at(f"http://127.0.0.1:{port}/v1")
            seen = await press_during(
                button, lambda bus: stream(bus, "Hi", provider=config), servers, on_start
            )
    assert [type(e) for e in seen["fast"]] == [Start, Stop]


async def test_cancelled_while_waiting_for_response_headers() -> None:
    button = Button()

    async def silent(request: HTTPRequest) -> HTTPResponse:
        button.ready.set()
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async with trio.open_nursery() as servers:
        port = await servers.start(functools.partial(serve_http, silent))
        config = openai_at(f"http://127.0.0.1:{port}/v1")
        seen = await press_during(button, lambda bus: stream(bus, "Hi", provider=config), servers)
        servers.cancel_scope.cancel()
    assert [type(e) for e in seen["fast"]] == [Start, Stop]


async def test_cancelled_during_the_backoff_sleep() -> None:
    button = Button()

    class OnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retrying in" in record.getMessage():
                button.ready.set()

    fault = Fault(kind="http_error", status=429, retry_after=50)  # within the 60 s cap
    handler = OnRetry()
    logging.getLogger("streambus").addHandler(handler)
    try:
        async with trio.open_nursery() as servers:
            sim = await servers.start(serve, SimulatorConfig(fault=fault))
            config = openai_at(sim.base_url)
            seen = await press_during(
                button, lambda bus: stream(bus, "Hi", provider=config, retries=3), servers
            )
            servers.cancel_scope.cancel()
    finally:
        logging.getLogger("streambus").removeHandler(handler)
    assert [type(e) for e in seen["fast"]] == [Start, Stop]
    assert len(sim.requests) == 1  # no retry was sent after the button


async def test_cancelled_mid_stream(tmp_path: Path) -> None:
    button = Button()

    def after_three_deltas(event: Event) -> None:
        after_three_deltas.count += isinstance(event, Delta)  # type: ignore[attr-defined]
        if after_three_deltas.count == 3:  # type: ignore[attr-defined]
            button.ready.set()

    after_three_deltas.count = 0  # type: ignore[attr-defined]
    recorder = Recorder(tmp_path / "r.db")
    async with trio.open_nursery() as servers:
        sim = await servers.start(serve, SimulatorConfig(ttft=0, tokens_per_second=40))
        config = openai_at(sim.base_url)
        seen = await press_during(
            button,
            lambda bus: stream(bus, "What is streaming?", provider=config),
            servers,
            after_three_deltas,
            recorder,
        )
        servers.cancel_scope.cancel()
    assert sum(isinstance(e, Delta) for e in seen["fast"]) >= 3
    session = seen["fast"][0].session
    assert list(streambus.db.read_events(recorder.db, session)) == seen["fast"]


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_cancelled_while_tools_run(kind: str, tmp_path: Path) -> None:
    """Two calls in one turn: get_time returns, get_weather is still running when the button
    is pressed. The next turn's session says so: both results, then a cancelled stop."""
    button = Button()
    release = threading.Event()  # lets an abandoned sync tool's thread end after the test
    threads: list[threading.Thread] = []

    told = trio.Event()

    async def get_time(location: str) -> str:
        """Get the current time at a location."""
        told.set()
        return "12:00"  # its outcome is in before anyone sees ``told`` set

    async def get_weather_async(location: str) -> str:
        await told.wait()
        button.ready.set()
        await trio.sleep_forever()
        raise AssertionError  # pragma: no cover

    def get_weather_sync(location: str) -> str:
        threads.append(threading.current_thread())
        trio.from_thread.run(told.wait)
        trio.from_thread.run_sync(button.ready.set)
        release.wait(60)  # ignores cancellation, like any blocking call
        return "too late"

    tools = ToolRegistry([get_time])
    tools.register(
        get_weather_async if kind == "async" else get_weather_sync,
        name="get_weather",
        description="Get the current weather for a location.",
    )
    recorder = Recorder(tmp_path / "r.db")
    try:
        async with trio.open_nursery() as servers:
            sim = await servers.start(serve, SimulatorConfig(ttft=0, tokens_per_second=0))
            config = openai_at(sim.base_url)
            seen = await press_during(
                button,
                lambda bus: converse(
                    bus, "What's the weather and the time in Paris?", tools, provider=config
                ),
                servers,
                recorder,
            )
            servers.cancel_scope.cancel()
        if kind == "sync":
            assert threads[0].is_alive()  # abandoned, not killed: it runs until it returns
    finally:
        release.set()
    first, second = assert_sessions_end_once(seen["fast"]).values()
    assert isinstance(first[-1], Stop) and first[-1].reason == "tool_calls"
    start, *results, stop = second
    assert isinstance(start, Start) and (start.turn, start.conversation) == (
        1,
        first[0].conversation,  # type: ignore[union-attr]
    )
    assert all(isinstance(r, ToolResult) for r in results)
    by_name = {r.name: r for r in results}  # type: ignore[union-attr]
    assert set(by_name) == {"get_weather", "get_time"}
    assert by_name["get_time"].error is None and by_name["get_time"].content == "12:00"
    assert by_name["get_weather"].error == "cancelled"
    assert by_name["get_weather"].content == "Error: get_weather was cancelled before it returned"
    assert isinstance(stop, Stop) and stop.reason == "cancelled" and stop.t_ns == 0
    # what the turn would have sent carries the results too (nothing reached the provider)
    assert start.request is not None
    assert [m["role"] for m in start.request["messages"]] == ["user", "assistant", "tool", "tool"]
    assert len(sim.requests) == 1
    for session, events in sessions_of(seen["fast"]).items():
        assert list(streambus.db.read_events(recorder.db, session)) == events
