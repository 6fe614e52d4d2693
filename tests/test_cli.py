"""The installed `streambus` command, run for real in a subprocess against the simulator."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from streambus import Delta, Start, Stop, decode_event

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--sim-tps", "0", "--sim-ttft", "0"]
HANGUL = re.compile("[\uac00-\ud7a3]")


def find_command() -> str:
    """The `streambus` script installed beside this Python, checked against the source tree."""
    bin_dir = Path(sys.executable).parent
    command = bin_dir / "streambus"
    if not command.exists():
        pytest.fail(f"no streambus command in {bin_dir}: run pip install '.[test]' first")
    out = subprocess.run(
        [sys.executable, "-c", "import streambus, os; print(os.path.dirname(streambus.__file__))"],
        capture_output=True,
        text=True,
        cwd="/",
        check=True,
    )
    installed = Path(out.stdout.strip())
    stale = (
        [] if (installed / "_cli.py").read_bytes() == (ROOT / "cli.py").read_bytes() else ["cli.py"]
    )
    for source in (ROOT / "streambus").rglob("*.py"):
        copy = installed / source.relative_to(ROOT / "streambus")
        if not copy.exists() or copy.read_bytes() != source.read_bytes():
            stale.append(str(source.relative_to(ROOT)))
    if stale:
        pytest.fail(
            "the installed streambus is older than the source "
            f"({', '.join(stale[:5])}…): reinstall with pip install '.[test]'"
        )
    return str(command)


@pytest.fixture(scope="module")
def streambus_cmd() -> str:
    return find_command()


DB: dict[str, str] = {}


@pytest.fixture(autouse=True)
def fresh_database(tmp_path: Path) -> Path:
    """Every test records into its own database, never the user's."""
    DB["path"] = str(tmp_path / "recordings.db")
    return Path(DB["path"])


def clean_env(**extra: str) -> dict[str, str]:
    prefixes = ("OPENAI_", "ANTHROPIC_", "STREAMBUS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    if "path" in DB:
        env["STREAMBUS_DB"] = DB["path"]
    env.update(extra)
    return env


def run(
    cmd: str, *args: str, input: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cmd, *args], capture_output=True, text=True, input=input, env=clean_env(**env), timeout=60
    )


def test_run_streams_korean_on_the_simulator(streambus_cmd: str) -> None:
    result = run(streambus_cmd, "run", *FAST, "안녕하세요, 스트리밍이 뭐예요?")
    assert result.returncode == 0, result.stderr
    assert HANGUL.search(result.stdout)
    assert "\x1b[" not in result.stdout + result.stderr  # not a terminal: plain output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("streambus: using the built-in simulator (no OPENAI_API_KEY")
    assert re.match(r"\[stop · \d+ in / \d+ out tokens · TTFT", lines[-2]), lines[-2]
    assert re.fullmatch(r"streambus: session [0-9a-f]{24} \(recorded\)", lines[-1]), lines[-1]


def test_jsonl_prints_exactly_the_documented_events(streambus_cmd: str) -> None:
    result = run(streambus_cmd, "run", *FAST, "--format", "jsonl", "What is streaming?")
    assert result.returncode == 0, result.stderr
    events = [decode_event(line) for line in result.stdout.splitlines()]
    assert isinstance(events[0], Start) and events[0].provider == "sim"
    assert isinstance(events[-1], Stop) and events[-1].reason == "stop"
    assert [e.seq for e in events] == list(range(len(events)))
    first = msgspec.json.decode(result.stdout.splitlines()[0])
    assert list(first) == [
        *("type", "session", "seq", "t_ns"),
        *("provider", "model", "host", "started_at", "request", "conversation", "turn"),
    ]
    assert first["t_ns"] == 0 and first["host"].startswith("127.0.0.1:")
    assert first["request"]["messages"] == [{"role": "user", "content": "What is streaming?"}]


def test_prompt_from_standard_input(streambus_cmd: str) -> None:
    result = run(streambus_cmd, "run", *FAST, "--format", "jsonl", input="Tell me about tokens\n")
    assert result.returncode == 0, result.stderr
    assert any(isinstance(decode_event(line), Delta) for line in result.stdout.splitlines())


def test_no_prompt_is_a_usage_error(streambus_cmd: str) -> None:
    result = run(streambus_cmd, "run", input="")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "streambus: error: no prompt: give one as an argument or on standard input"
    )


def test_http_error_is_one_clear_line(streambus_cmd: str) -> None:
    result = run(streambus_cmd, "run", *FAST, "--sim-fault", "http_error:401", "hi")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("streambus: error: sim returned HTTP 401: ")


def test_retries_are_announced_on_stderr(streambus_cmd: str) -> None:
    result = run(
        streambus_cmd, "run", *FAST, "--sim-fault", "http_error:503", "--retries", "1", "hi"
    )
    assert result.returncode == 1
    assert "retrying in" in result.stderr and "(attempt 2 of 2)" in result.stderr


def test_disconnect_keeps_what_arrived_and_exits_1(streambus_cmd: str) -> None:
    result = run(streambus_cmd, "run", *FAST, "--sim-fault", "disconnect:8", "What is streaming?")
    assert result.returncode == 1
    assert len(result.stdout.split()) >= 3  # the partial answer is on stdout
    assert "broke mid-stream" in result.stderr.splitlines()[-1]


def test_missing_api_key_is_a_config_error(streambus_cmd: str) -> None:
    result = run(streambus_cmd, "run", "--provider", "openai", "hi")
    assert result.returncode == 2
    assert result.stderr.startswith("streambus: error: OPENAI_API_KEY is not set")


def test_api_key_never_appears_in_output(streambus_cmd: str) -> None:
    key = "sk-live-DO-NOT-PRINT-0123456789abcdef"
    with subprocess.Popen(
        [streambus_cmd, "sim", "--port", "0", "--fault", "http_error:401"],
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    ) as server:
        try:
            base = read_base_url(server)
            result = run(
                streambus_cmd, "run", "-p", "openai", "--base-url", base, "--api-key", key, "hi"
            )
        finally:
            server.send_signal(signal.SIGINT)
    assert result.returncode == 1
    assert key not in result.stdout + result.stderr
    assert key[:8] not in result.stdout + result.stderr


def read_base_url(server: subprocess.Popen[str]) -> str:
    assert server.stderr is not None
    for line in server.stderr:
        match = re.search(r"OpenAI base URL:\s+(\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError("the simulator did not print its URL")


def test_sim_command_serves_the_official_openai_client(streambus_cmd: str) -> None:
    import openai

    with subprocess.Popen(
        [streambus_cmd, "sim", "--port", "0", "--tps", "0", "--ttft", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    ) as server:
        try:
            base_url = read_base_url(server)
            with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0) as client:
                chunks = client.chat.completions.create(
                    model="sim-1", messages=[{"role": "user", "content": "hello"}], stream=True
                )
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finally:
            server.send_signal(signal.SIGINT)
        assert server.wait(timeout=10) == 130
    assert len(text.split()) > 5


class Running:
    """A CLI process started by :func:`running`: its output so far, and signals to send it."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stdout = b""
        self.stderr = b""
        self.closed = {"stdout": trio.Event(), "stderr": trio.Event()}

    async def collect(self, name: str) -> None:
        stream = getattr(self.process, name)
        while chunk := await stream.receive_some():
            setattr(self, name, getattr(self, name) + chunk)
        self.closed[name].set()

    async def wait_for(self, ready: Callable[[], bool]) -> None:
        """Until ``ready()`` holds, checked every 10 ms (it may look at the output so far or
        at outside state: a marker file, a server); fails if the command ends first."""
        while not ready():
            assert not all(done.is_set() for done in self.closed.values()), (
                "the command ended before it could be interrupted: "
                + self.stderr.decode(errors="replace")
            )
            await trio.sleep(0.01)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def finish(self) -> tuple[int, bytes, bytes]:
        """The exit code and everything the command printed."""
        code = await self.process.wait()
        for done in self.closed.values():
            await done.wait()
        return code, self.stdout, self.stderr


def _default_sigint() -> None:
    """In the child: Ctrl-C as a terminal delivers it. A shell without job control starts
    background commands with SIGINT ignored, and Python then never turns it into
    KeyboardInterrupt, so a test run in the background would wait for nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@asynccontextmanager
async def running(cmd: list[str], **env: str) -> AsyncIterator[Running]:
    """Start the CLI with its stdout and stderr collected in the background; killed if the
    block is left while it still runs (a failed test must not leave it behind)."""
    process = await trio.lowlevel.open_process(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(**env),
        preexec_fn=_default_sigint,
    )
    cli = Running(process)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cli.collect, "stdout")
        nursery.start_soon(cli.collect, "stderr")
        try:
            yield cli
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()


async def interrupt_when(
    cmd: list[str], ready: Callable[[bytes], bool], signum: int = signal.SIGINT
) -> tuple[int, bytes, bytes]:
    """Start the CLI, wait until its stdout satisfies ``ready``, signal it, collect the rest."""
    async with running(cmd) as cli:
        with trio.fail_after(30):
            await cli.wait_for(lambda: ready(cli.stdout))
            cli.signal(signum)
            return await cli.finish()


async def interrupt_mid_stream(cmd: list[str], signum: int) -> tuple[int, bytes, bytes]:
    """Signal the CLI once the answer has begun (20 bytes on stdout)."""
    return await interrupt_when(cmd, lambda out: len(out) >= 20, signum)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_signal_mid_stream_cancels_cleanly(
    streambus_cmd: str, signum: int, code: int
) -> None:
    cmd = [streambus_cmd, "run", "--sim-tps", "30", "--sim-ttft", "0", "What is streaming?"]
    returncode, stdout, stderr = await interrupt_mid_stream(cmd, signum)
    assert returncode == code
    assert len(stdout.split()) >= 3  # the partial text stays
    assert b"Traceback" not in stderr
    lines = stderr.decode().strip().splitlines()
    assert lines[-2].startswith("[cancelled"), lines
    assert lines[-1].startswith("streambus: session ")


async def test_ctrl_c_in_jsonl_ends_with_a_cancelled_stop(streambus_cmd: str) -> None:
    cmd = [streambus_cmd, "run", "--sim-tps", "30", "--sim-ttft", "0", "-f", "jsonl", "Hello"]
    returncode, stdout, _ = await interrupt_mid_stream(cmd, signal.SIGINT)
    assert returncode == 130
    events: list[Any] = [decode_event(line) for line in stdout.decode().splitlines()]
    assert isinstance(events[-1], Stop) and events[-1].reason == "cancelled"
    assert sum(isinstance(e, Stop) for e in events) == 1
    assert any(isinstance(e, Delta) for e in events)


def test_a_closed_stdout_ends_the_run_quietly(streambus_cmd: str) -> None:
    cmd = [streambus_cmd, "run", "--sim-tps", "50", "--sim-ttft", "0", "-f", "jsonl", "Hello"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(cmd, **pipes, env=clean_env()) as process:  # type: ignore[call-overload]
        first = process.stdout.readline()
        process.stdout.close()  # `| head -1`
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=20) == 141
    assert isinstance(decode_event(first), Start)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert "BrokenPipe" not in stderr


def test_an_argument_never_waits_for_standard_input(streambus_cmd: str) -> None:
    """`while read q; do streambus run "$q"; done < file` must not swallow the file."""
    cmd = [streambus_cmd, "run", *FAST, "What is streaming?"]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(cmd, **pipes, env=clean_env()) as process:  # type: ignore[call-overload]
        out = process.stdout.read()  # stdin stays open: reading it would hang the CLI
        process.wait(timeout=20)
    assert process.returncode == 0 and out


def test_a_key_echoed_by_the_server_is_redacted(streambus_cmd: str) -> None:
    key = "sk-live-ECHOED-BACK-0123456789abcdef"
    server_cmd = [sys.executable, "-c", ECHO_SERVER, key]
    with subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True, env=clean_env()) as server:
        try:
            assert server.stdout is not None
            base = server.stdout.readline().strip()
            result = run(
                streambus_cmd, "run", "-p", "openai", "--base-url", base, "--api-key", key, "hi"
            )
        finally:
            server.kill()
    assert result.returncode == 1
    assert key not in result.stdout + result.stderr
    assert "Incorrect API key provided: [redacted]" in result.stderr
    db = Path(DB["path"])
    assert db.exists()  # the failed session was recorded…
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    assert key.encode() not in stored  # …without the key, in the database or its WAL


# A server that answers 401 echoing the key it was sent, as api.openai.com does (partly).
ECHO_SERVER = """
import sys, trio
from streambus.simulator import HTTPResponse, serve_http
async def handler(request):
    key = dict(request.headers)["authorization"].removeprefix("Bearer ")
    body = ('{"error": {"message": "Incorrect API key provided: %s", "type": '
            '"invalid_request_error"}}' % key).encode()
    return HTTPResponse(401, [("content-type", "application/json")], body)
async def main():
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, handler)
        print(f"http://127.0.0.1:{port}/v1", flush=True)
trio.run(main)
"""
