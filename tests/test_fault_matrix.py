"""The fault-injection matrix: fault × phase × recovery, over real loopback sockets.

Every simulator fault is injected at every phase where it can strike (before the headers,
after them, mid-text, mid-tool-arguments, just before the terminator), once with retries off
and once with retries on and the fault striking only the first attempt. Each run goes
through the real client, a recorder and a collecting subscriber, and must end as
``expected()`` says: the final ``stop`` (reason, ``error_kind``, attempts, a message naming the
cause), the text (a prefix of the fault-free answer; all of it after a recovery), and a
recording holding exactly the events that were published.

``test_cli_…`` at the end runs a slice of the matrix through ``streambus run`` for the exit
code, the stderr lines and the recording.
"""

from __future__ import annotations

import json
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from streambus import (
    Event,
    ProviderConfig,
    Recorder,
    Request,
    Stop,
    Timeouts,
    decode_event,
    open_bus,
    open_db,
    stream,
)
from streambus.db import read_events
from streambus.simulator import Simulator, SimulatorConfig, open_simulator
from tests.test_cli import clean_env, find_command

FAST = SimulatorConfig(ttft=0, tokens_per_second=0, jitter=0)
# Short budgets, loose enough for a loaded CI machine: the faults below stall for a minute.
BUDGETS = Timeouts(connect=5, first_token=1.0, idle=0.6, stall=1.0, total=30)

PHASES = ("headers", "body", "text", "arguments", "terminator")
CONTENT_PHASES = ("text", "arguments", "terminator")
IN_BODY = (
    "disconnect",
    "stall",
    "ping_stall",
    "malformed_json",
    "invalid_utf8",
    "nul_byte",
    "wrong_shape",
    "endless_line",
    "oversize_event",
    "cut_chunk",
    "error_event",
)
AT_HEADERS = ("disconnect", "stall", "http_error")
PHASELESS = ("no_done", "wrong_content_type")

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather for a location.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


class Expected(NamedTuple):
    reason: str  # the stop's reason
    kind: str | None  # its error_kind
    attempts: int
    says: str  # a piece of the error message
    content: bool  # content published before the fault (so the text is a non-empty prefix)


def expected(kind: str, at: str | None, retry: bool) -> Expected:
    """What the user must see, from first principles: retried only before content, only for
    what the issue lists (connection errors, retryable statuses, overload, a silent server)."""
    content = at in CONTENT_PHASES or kind == "no_done"
    if kind in ("http_error", "wrong_content_type"):
        kind_of, says = ("http", "HTTP 503") if kind == "http_error" else ("protocol", "text/html")
        retryable = kind == "http_error"
    elif kind in ("disconnect", "cut_chunk"):
        kind_of, retryable = "connection", not content
        says = "broke mid-stream" if content else "broke before any content"
    elif kind == "stall":
        kind_of, says, retryable = "idle_timeout", "sent no bytes for 0.6 s", not content
    elif kind == "ping_stall":  # keep-alives keep idle happy, never stall / first token
        if content:
            kind_of, says = "stall_timeout", "no content from"
        else:
            kind_of, says = "first_token_timeout", "within 1 s of the request"
        retryable = False  # a slow model is not retried
    elif kind == "error_event":
        kind_of, says, retryable = "provider", "stream error: simulated failure", not content
    elif kind == "no_done":
        kind_of, says, retryable = "truncated", "stream ended before", False
    else:
        says = {
            "malformed_json": "malformed",
            "nul_byte": "malformed",
            "wrong_shape": "malformed",
            "invalid_utf8": "invalid UTF-8",
            "endless_line": "exceeds the 16 MiB limit",
            "oversize_event": "exceeds the 16 MiB limit",
        }[kind]
        kind_of, retryable = "protocol", False
    if retry and retryable:
        return Expected("stop", None, 2, "", content)
    return Expected("error", kind_of, 1, says, content)


def cases() -> list[Any]:
    """Every combination, each on one provider (alternating, to keep the matrix quick), and
    on both for the kinds whose bytes differ most between them."""
    combos: list[tuple[str, str | None]] = [(k, "headers") for k in AT_HEADERS]
    combos += [(k, at) for k in IN_BODY for at in PHASES[1:]]
    combos += [(k, None) for k in PHASELESS]
    params = []
    for i, (kind, at) in enumerate(combos):
        for retry, mode in ((False, "once"), (True, "recover")):
            both = kind in ("error_event", "ping_stall", "wrong_shape")
            providers = ("openai", "anthropic") if both else (("openai", "anthropic")[i % 2],)
            for provider in providers:
                name = f"{kind}@{at or '-'}-{mode}-{provider}"
                params.append(pytest.param(kind, at, retry, provider, id=name))
    return params


def fault_for(kind: str, at: str | None, retry: bool) -> dict[str, Any]:
    fault: dict[str, Any] = {"kind": kind, "stall_seconds": 60}
    if at is not None:
        fault["at"] = at
    if at == "text":
        fault["after_events"] = 2
    if kind == "http_error":
        fault["status"] = 503
    if kind == "error_event":
        fault["status"] = 529  # Anthropic: overloaded_error; OpenAI: server_error
    if kind == "ping_stall":
        fault["ping_interval"] = 0.1
    if retry:
        fault["times"] = 1
    return fault


def build_request(provider: str, fault: dict[str, Any] | None, tool: bool) -> Request:
    extra: dict[str, Any] = {"simulator": {"fault": fault}} if fault else {}
    prompt = "Tell me about streaming"
    if tool:
        prompt = "What's the weather in Paris?"
        if provider == "openai":
            extra["tools"] = [{"type": "function", "function": WEATHER}]
        else:
            spec = {k: v for k, v in WEATHER.items() if k != "parameters"}
            extra["tools"] = [{**spec, "input_schema": WEATHER["parameters"]}]
    return Request.from_prompt(prompt, extra=extra)


def config_for(provider: str, sim: Simulator) -> ProviderConfig:
    if provider == "anthropic":
        url = sim.anthropic_base_url
        return ProviderConfig("anthropic", "anthropic", url, "sim-1", api_key="sk-ant-test")
    return ProviderConfig("openai", "openai", sim.base_url, "sim-1", api_key="sk-test")


async def run_case(
    provider: str, request: Request, db_path: Path, retries: int
) -> tuple[Any, list[Event]]:
    seen: list[Event] = []
    async with open_simulator(FAST) as sim, open_bus() as bus:
        recorder = Recorder(db_path)
        bus.subscribe(recorder)
        bus.subscribe(seen.append)
        message = await stream(
            bus, request, provider=config_for(provider, sim), timeouts=BUDGETS, retries=retries
        )
    recorder.db.conn.close()
    return message, seen


_BASELINES: dict[tuple[str, bool], list[str]] = {}


async def baseline(provider: str, tool: bool, tmp_path: Path) -> list[str]:
    """The fault-free answer (text, then each call's name and arguments), to compare with."""
    key = (provider, tool)
    if key not in _BASELINES:
        message, _ = await run_case(provider, build_request(provider, None, tool), tmp_path, 0)
        assert message.stop.reason in ("stop", "tool_calls")
        _BASELINES[key] = parts(message)
    return _BASELINES[key]


def parts(message: Any) -> list[str]:
    return [message.text, *(f"{c.name}:{c.arguments}" for c in message.tool_calls)]


def is_prefix(got: list[str], full: list[str]) -> bool:
    """Each part a prefix of the full one, and only the last part may be cut short."""
    if len(got) > len(full):
        return False
    cut = [i for i, (a, b) in enumerate(zip(got, full, strict=False)) if a != b]
    return all(full[i].startswith(got[i]) for i in cut) and cut in ([], [len(got) - 1])


@pytest.mark.parametrize(("kind", "at", "retry", "provider"), cases())
async def test_fault(kind: str, at: str | None, retry: bool, provider: str, tmp_path: Path) -> None:
    tool = at == "arguments"
    want = expected(kind, at, retry)
    request = build_request(provider, fault_for(kind, at, retry), tool)
    message, seen = await run_case(provider, request, tmp_path / "r.db", 2 if retry else 0)

    # exactly one stop, last, with gapless numbering
    stops = [e for e in seen if isinstance(e, Stop)]
    assert len(stops) == 1 and seen[-1] is stops[0]
    assert [e.seq for e in seen] == list(range(len(seen)))
    stop = stops[0]
    got = (stop.reason if stop.reason == "error" else "stop", stop.error_kind, stop.attempts)
    assert got == (want.reason, want.kind, want.attempts), stop.error
    assert want.says in (stop.error or ""), stop.error

    # the text: all of it after a recovery, else a prefix (non-empty once content was sent)
    full = await baseline(provider, tool, tmp_path / "baseline.db")
    got_parts = parts(message)
    if want.reason == "stop":
        assert got_parts == full
    else:
        assert is_prefix(got_parts, full), (got_parts, full)
        assert bool(message.text or message.tool_calls) == want.content

    # the recording holds exactly what was published
    db = open_db(tmp_path / "r.db")
    assert list(read_events(db, seen[0].session)) == seen
    row = db.execute(
        "select status, error_kind, attempts from sessions where id = ?", [seen[0].session]
    ).fetchone()
    assert row == ("ok" if want.reason == "stop" else "error", want.kind, want.attempts)


def test_the_matrix_covers_every_fault_at_every_phase() -> None:
    from streambus.simulator.config import FAULT_KINDS

    covered = {(p.values[0], p.values[1]) for p in cases()}
    assert {kind for kind, _ in covered} == set(FAULT_KINDS)
    for kind in IN_BODY:
        assert set(PHASES[1:]) <= {at for k, at in covered if k == kind}, kind
    modes = {(p.values[0], p.values[1], p.values[2]) for p in cases()}
    assert len(modes) == 2 * len(covered)  # every combination with and without recovery


# --- through the command line: exit code, stderr, recording ---------------------------------

CLI_CASES = [
    # (--sim-fault, extra args, exit code, a piece of the last stderr line, attempts)
    ("http_error:503x1", ["--retries", "2"], 0, "(recorded)", 2),
    ("http_error:503", ["--retries", "0"], 1, "sim returned HTTP 503", 1),
    ("ping_stall:2", ["--stall-timeout", "0.5", "--idle-timeout", "5"], 1, "stall timeout", 1),
    ("stall@headersx1", ["--idle-timeout", "0.5", "--retries", "1"], 0, "(recorded)", 2),
    ("cut_chunk:3", [], 1, "broke mid-stream", 1),
    ("invalid_utf8:2", [], 1, "invalid UTF-8", 1),
    ("endless_line:1", [], 1, "exceeds the 16 MiB limit", 1),
    ("wrong_content_type", [], 1, "expected an event stream", 1),
    ("no_done", [], 1, "stream ended before [DONE]", 1),
]


@pytest.mark.parametrize(("fault", "args", "code", "says", "attempts"), CLI_CASES)
def test_cli(
    fault: str, args: list[str], code: int, says: str, attempts: int, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    cmd = [find_command(), "run", "-p", "sim", "--sim-ttft", "0", "--sim-tps", "0"]
    cmd += ["--sim-fault", fault, "--db", str(db), "-f", "jsonl", *args, "Tell me about streaming"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=clean_env())
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert says in lines[-1], lines
    assert "Traceback" not in result.stderr
    retry_lines = [line for line in lines if "; retrying in " in line]
    assert len(retry_lines) == attempts - 1, lines
    published = [decode_event(line) for line in result.stdout.splitlines()]
    stop = published[-1]
    assert isinstance(stop, Stop) and stop.attempts == attempts
    conn = open_db(db)
    assert list(read_events(conn, published[0].session)) == published
    status = conn.execute("select status, attempts from sessions").fetchall()
    assert status == [("ok" if code == 0 else "error", attempts)]
    assert json.loads(conn.execute("select request from sessions").fetchone()[0])["stream"]


# --- hostile bytes: bounded memory, compressed streams ---------------------------------------


async def test_an_endless_line_costs_bounded_memory(tmp_path: Path) -> None:
    """64 MiB without a line end: the decoder stops at its 16 MiB limit, keeping what came."""
    fault = {"kind": "endless_line", "size": 64 * 2**20, "after_events": 2}
    tracemalloc.start()
    try:
        message, seen = await run_case(
            "openai", build_request("openai", fault, False), tmp_path / "r.db", 0
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    stop = seen[-1]
    assert isinstance(stop, Stop) and stop.error_kind == "protocol"
    assert "exceeds the 16 MiB limit" in (stop.error or "")
    assert message.text  # the two events before it are kept
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_gzip_stream_reads_like_a_plain_one(provider: str, tmp_path: Path) -> None:
    full = await baseline(provider, False, tmp_path / "baseline.db")
    request = build_request(provider, None, False)
    request.extra["simulator"] = {"gzip": True}
    message, _ = await run_case(provider, request, tmp_path / "r.db", 0)
    assert message.stop.reason == "stop" and parts(message) == full


async def test_a_gzip_stream_cut_mid_chunk_keeps_what_came(tmp_path: Path) -> None:
    full = await baseline("anthropic", False, tmp_path / "baseline.db")
    request = build_request("anthropic", fault_for("cut_chunk", "text", False), False)
    request.extra["simulator"]["gzip"] = True
    message, seen = await run_case("anthropic", request, tmp_path / "r.db", 2)
    stop = seen[-1]
    assert isinstance(stop, Stop) and stop.error_kind == "connection" and stop.attempts == 1
    assert message.text and full[0].startswith(message.text)


async def test_an_undecodable_compressed_body_is_a_protocol_error(tmp_path: Path) -> None:
    from streambus.simulator import Canned, serve_canned

    headers = (("content-type", "text/event-stream"), ("content-encoding", "gzip"))
    canned = Canned(b"\x1f\x8b\x08\x00 this is not gzip at all", headers=headers, chunk_size=8)
    seen: list[Event] = []
    async with serve_canned({"/v1/chat/completions": canned}) as server, open_bus() as bus:
        bus.subscribe(seen.append)
        config = ProviderConfig("openai", "openai", f"{server.url}/v1", "m", api_key="sk-x")
        await stream(bus, "hi", provider=config, retries=2)
    stop = seen[-1]
    assert isinstance(stop, Stop) and stop.error_kind == "protocol" and stop.attempts == 1
    assert (stop.error or "").startswith("cannot decode the body 127.0.0.1:")
