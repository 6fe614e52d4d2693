"""The simulator's fault injection, over real loopback sockets.

Each in-body kind is checked at each phase for both providers, byte for byte against the same
request served without the fault (the fault is set on the server, so the body, and with it
every id, stays the same). Where HTTP framing is the point a raw trio socket reads the bytes
before any client library can tidy them up. Pacing is off; the stall and keep-alive tests
are the only ones that wait, for fractions of a second.
"""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import msgspec
import openai
import pytest
import trio

from streambus.simulator import Fault, Simulator, open_simulator, parse_fault
from tests.test_simulator import (
    EN_PROMPT,
    FAST,
    WEATHER_OPENAI,
    as_anthropic,
    chat,
    http,
    messages,
)

pytestmark = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\.:ResourceWarning"
)

PROVIDERS = ("openai", "anthropic")
PHASES = ("body", "text", "arguments", "terminator")
WEATHER_PROMPT = "What's the weather in Paris?"
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
PING = {"openai": b": keep-alive\n\n", "anthropic": b'event: ping\ndata: {"type": "ping"}\n\n'}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(FAST) as simulator:
        yield simulator


def request_body(provider: str, phase: str = "text") -> dict[str, Any]:
    """A streaming request; a tool call for the ``arguments`` phase, text otherwise."""
    if provider == "openai":
        usage = {"stream_options": {"include_usage": True}}
        if phase == "arguments":
            return chat(WEATHER_PROMPT, tools=[WEATHER_OPENAI], **usage)
        return chat(EN_PROMPT, **usage)
    if phase == "arguments":
        return messages(WEATHER_PROMPT, tools=[as_anthropic(WEATHER_OPENAI)])
    return messages(EN_PROMPT)


async def fetch(
    sim: Simulator,
    provider: str,
    body: dict[str, Any],
    fault: Fault | None = None,
    *,
    read_timeout: float = 5.0,
    **config: Any,
) -> tuple[bytes, str]:
    """The body bytes as received (chunked framing removed, nothing decoded) and how it ended:
    ``end``, ``broke`` (the connection closed mid-body) or ``timeout`` (nothing to read for
    ``read_timeout`` seconds). The fault is set server-side, so the request body is unchanged.
    """
    sim.config = msgspec.structs.replace(FAST, fault=fault, **config)
    return await stream_raw(sim.url + PATHS[provider], body, read_timeout=read_timeout)


async def stream_raw(
    url: str, body: dict[str, Any], *, read_timeout: float = 5.0
) -> tuple[bytes, str]:
    received = bytearray()
    async with (
        http(timeout=httpx2.Timeout(5.0, read=read_timeout)) as client,
        client.stream("POST", url, json=body) as response,
    ):
        assert response.status_code == 200
        try:
            async for piece in response.aiter_raw():
                received += piece
        except httpx2.RemoteProtocolError:
            return bytes(received), "broke"
        except httpx2.ReadTimeout:
            return bytes(received), "timeout"
    return bytes(received), "end"


async def exchange(
    sim: Simulator, provider: str, body: dict[str, Any], fault: Fault | None = None, **config: Any
) -> bytes:
    """Everything the server writes back to one request on a raw socket, until it closes."""
    sim.config = msgspec.structs.replace(FAST, fault=fault, **config)
    payload = json.dumps(body).encode()
    head = (
        f"POST {PATHS[provider]} HTTP/1.1\r\nhost: {sim.host}\r\nconnection: close\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
    )
    received = bytearray()
    with trio.fail_after(5):
        async with await trio.open_tcp_stream(sim.host, sim.port) as stream:
            await stream.send_all(head.encode() + payload)
            while data := await stream.receive_some(65536):
                received += data
    return bytes(received)


def dechunk(body: bytes) -> tuple[list[bytes], tuple[int, bytes] | None]:
    """The chunks of a chunked body, and a last chunk cut short as (announced size, bytes that
    came) or None when the body ended with its zero-size chunk."""
    chunks = []
    while True:
        line, sep, body = body.partition(b"\r\n")
        assert sep, "a chunk-size line without its end"
        size = int(line, 16)
        if size == 0:
            assert body == b"\r\n"
            return chunks, None
        if len(body) < size + 2:
            return chunks, (size, body)
        assert body[size : size + 2] == b"\r\n"
        chunks.append(body[:size])
        body = body[size + 2 :]


def dechunked(raw: bytes) -> bytes:
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    chunks, cut = dechunk(rest)
    assert cut is None
    return b"".join(chunks)


def dechunked_or_whole(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    (length,) = [line.split(b": ")[1] for line in lines if line.startswith(b"content-length")]
    assert len(body) == int(length)
    return body


def open_connections() -> int:
    """Connection tasks of the simulators running in this trio run: the children of
    ``serve_http`` other than its listener loops."""
    count = 0
    tasks = [trio.lowlevel.current_root_task()]
    while tasks:
        task = tasks.pop()
        children = [child for nursery in task.child_nurseries for child in nursery.child_tasks]
        if task.name.endswith("._http.serve_http"):
            count += sum(not child.name.endswith("_serve_one_listener") for child in children)
        else:
            tasks += children
    return count


async def all_connections_closed() -> None:
    with trio.fail_after(5):
        while open_connections():  # noqa: ASYNC110 - task trees have no event to wait on
            await trio.sleep(0.01)


def blocks(raw: bytes) -> list[bytes]:
    """SSE events as bytes, each with its blank line (the simulator writes LF line ends)."""
    parts = raw.split(b"\n\n")
    return [part + b"\n\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def delta_of(provider: str, event: bytes) -> dict[str, Any]:
    payload = event.split(b"data: ", 1)[1]
    if payload == b"[DONE]\n\n":
        return {}
    data = json.loads(payload)
    if provider == "openai":
        choices = data.get("choices") or [{}]
        return dict(choices[0].get("delta") or {})
    return dict(data.get("delta") or {}) if data.get("type") == "content_block_delta" else {}


def strike_at(provider: str, phase: str, events: list[bytes]) -> int:
    """Where a fault at ``phase`` (``after_events=2`` at ``text``) must land, worked out from
    the clean stream's own events."""
    if phase == "body":
        return 0
    if phase == "terminator":
        end = b"data: [DONE]\n\n" if provider == "openai" else b"event: message_stop\n"
        assert events[-1].startswith(end)
        return len(events) - 1
    deltas = [delta_of(provider, event) for event in events]
    if phase == "text":
        content = [i for i, d in enumerate(deltas) if d.get("content") or d.get("text")]
        return content[2]
    for index, delta in enumerate(deltas):
        calls = delta.get("tool_calls") or [{}]
        if calls[0].get("function", {}).get("arguments") or delta.get("partial_json"):
            return index + 1
    raise AssertionError("the request made no tool call")


def fault_at(phase: str, kind: str, **fields: Any) -> Fault:
    after = 2 if phase == "text" else 0
    return msgspec.convert({"kind": kind, "at": phase, "after_events": after, **fields}, Fault)


# --- every in-body kind, at every phase, for both providers ---------------------------------

SIZE = 100_000
MATRIX = {
    "disconnect": {},
    "stall": {"stall_seconds": 30},
    "cut_chunk": {},
    "malformed_json": {},
    "invalid_utf8": {},
    "nul_byte": {},
    "wrong_shape": {},
    "error_event": {},
    "ping_stall": {"stall_seconds": 0.25, "ping_interval": 0.1},
    "oversize_event": {"size": SIZE},
    "endless_line": {"size": SIZE, "stall_seconds": 0},
}
ERROR_EVENT = {
    "openai": b'data: {"error":{"message":"simulated failure","type":"server_error",'
    b'"param":null,"code":null}}\n\n',
    "anthropic": b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
    b'"message":"simulated failure"}}\n\n',
}


def check_inserted(provider: str, kind: str, event: bytes) -> None:
    """The one event an inserting fault adds, exactly as a client will see it."""
    if kind == "malformed_json":
        name = b"event: content_block_delta\n" if provider == "anthropic" else b""
        assert event == name + b"data: {not json\n\n"
    elif kind == "wrong_shape":
        assert (
            event
            == {
                "openai": b'data: {"choices": "nope"}\n\n',
                "anthropic": b"event: content_block_delta\n"
                b'data: {"type":"content_block_delta","index":"zero","delta":[1]}\n\n',
            }[provider]
        )
    elif kind in ("invalid_utf8", "nul_byte"):
        raw = b"\xff\xfe" if kind == "invalid_utf8" else b"a\x00b"
        assert event.count(raw) == 1 and event.count(b"\n\n") == 1
        if kind == "invalid_utf8":
            with pytest.raises(UnicodeDecodeError):
                event.decode()
        else:
            with pytest.raises(json.JSONDecodeError):  # JSON strings must escape control chars
                json.loads(event.split(b"data: ", 1)[1])
        delta = delta_of(provider, event.replace(raw, b"ok"))  # otherwise a real text delta
        assert delta.get("content", delta.get("text")) == "ok"
    elif kind == "oversize_event":
        assert len(event) > SIZE and event.count(b"\n\n") == 1
        lines = event[:-2].split(b"\n")
        assert len(lines) > 60 and max(map(len, lines)) <= 1024  # many lines, none long
        if provider == "anthropic":
            assert lines.pop(0) == b"event: ping"
        assert all(line.startswith(b"data: ") for line in lines)
        data = json.loads(b"\n".join(line[6:] for line in lines))  # valid, and ignorable
        if provider == "anthropic":
            assert data["type"] == "ping"
        else:
            assert data["object"] == "chat.completion.chunk" and data["choices"] == []
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("kind", list(MATRIX))
async def test_fault_at_phase(sim: Simulator, kind: str, provider: str, phase: str) -> None:
    body = request_body(provider, phase)
    clean, how = await fetch(sim, provider, body)
    assert how == "end"
    events = blocks(clean)
    at = strike_at(provider, phase, events)
    before, after = b"".join(events[:at]), b"".join(events[at:])
    fault = fault_at(phase, kind, **MATRIX[kind])
    got, how = await fetch(sim, provider, body, fault, read_timeout=0.3 if kind == "stall" else 5)

    if kind == "disconnect":
        assert (got, how) == (before, "broke")
    elif kind == "stall":
        assert (got, how) == (before, "timeout")
    elif kind == "cut_chunk":
        upcoming = events[at]
        assert (got, how) == (before + upcoming[: len(upcoming) // 2], "broke")
    elif kind == "endless_line":
        assert (got, how) == (before + b"data: " + b"x" * SIZE, "broke")
    elif kind == "error_event":
        assert (got, how) == (before + ERROR_EVENT[provider], "end")
    elif kind == "ping_stall":
        assert (got, how) == (before + PING[provider] * 2 + after, "end")
    else:
        assert got.startswith(before) and got.endswith(after) and how == "end"
        check_inserted(provider, kind, got[len(before) : len(got) - len(after)])


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_arguments_phase_without_tool_calls(sim: Simulator, provider: str) -> None:
    """With no argument fragment to follow, the fault strikes after the last content event."""
    body = request_body(provider, "text")
    clean, _ = await fetch(sim, provider, body)
    events = blocks(clean)
    last = max(
        i
        for i, event in enumerate(events)
        if delta_of(provider, event).get("content") or delta_of(provider, event).get("text")
    )
    got = await fetch(sim, provider, body, Fault(kind="disconnect", at="arguments"))
    assert got == (b"".join(events[: last + 1]), "broke")


# --- cut_chunk: the framing itself ----------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_cut_chunk_announces_more_than_it_sends(
    sim: Simulator, provider: str, gzipped: bool
) -> None:
    body = request_body(provider)
    events = blocks(dechunked(await exchange(sim, provider, body)))
    at = strike_at(provider, "text", events)
    raw = await exchange(sim, provider, body, fault_at("text", "cut_chunk"), gzip=gzipped)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks, cut = dechunk(rest)
    assert cut is not None
    announced, partial = cut
    assert 0 < len(partial) < announced
    upcoming = events[at]
    if gzipped:
        unpack = zlib.decompressobj(wbits=31)
        got = b"".join(unpack.decompress(chunk) for chunk in [*chunks, partial])
        assert not unpack.eof
    else:
        got = b"".join(chunks) + partial
        assert announced == len(upcoming)
    assert got == b"".join(events[:at]) + upcoming[: len(upcoming) // 2]


# --- at="headers" ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_disconnect_at_headers_sends_no_byte(
    sim: Simulator, provider: str, stream: bool
) -> None:
    body = {**request_body(provider), "stream": stream}
    fault = Fault(kind="disconnect", at="headers")
    assert await exchange(sim, provider, body, fault) == b""
    async with http() as client:
        with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response"):
            await client.post(sim.url + PATHS[provider], json=body)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_short_stall_at_headers_then_the_clean_answer(sim: Simulator, provider: str) -> None:
    body = request_body(provider)
    clean, _ = await fetch(sim, provider, body)
    fault = Fault(kind="stall", at="headers", stall_seconds=0.05)
    assert await fetch(sim, provider, body, fault) == (clean, "end")


async def test_stall_at_headers_ends_when_the_client_hangs_up(sim: Simulator) -> None:
    body = request_body("openai")
    sim.config = msgspec.structs.replace(FAST, fault=Fault(kind="stall", at="headers"))
    payload = json.dumps(body).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {len(payload)}\r\n"
        "content-type: application/json\r\n\r\n"
    ).encode() + payload
    async with await trio.open_tcp_stream(sim.host, sim.port) as stream:
        await stream.send_all(request)
        with trio.move_on_after(0.3):
            received = await stream.receive_some()
            pytest.fail(f"the stall sent {received!r}")  # not even the response head
        assert len(sim.requests) == 1 and open_connections() == 1  # the server is stalling
    # The client hung up; the server notices although its handler is still asleep (for
    # 3600 s): the connection task ends, nothing is left running.
    await all_connections_closed()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_http_error_at_headers_is_http_error(sim: Simulator, provider: str) -> None:
    body = {**request_body(provider), "stream": False}
    responses = []
    async with http() as client:
        for at in (None, "headers"):
            sim.config = msgspec.structs.replace(
                FAST, fault=Fault(kind="http_error", status=503, at=at)
            )
            responses.append(await client.post(sim.url + PATHS[provider], json=body))
    assert [r.status_code for r in responses] == [503, 503]
    assert responses[0].content == responses[1].content


@pytest.mark.parametrize(
    "kind",
    [
        "malformed_json",
        "error_event",
        "ping_stall",
        "invalid_utf8",
        "nul_byte",
        "endless_line",
        "oversize_event",
        "wrong_shape",
        "cut_chunk",
    ],
)
def test_in_body_kinds_cannot_strike_at_headers(kind: str) -> None:
    with pytest.raises(ValueError, match=f"the {kind} fault cannot strike at 'headers'"):
        msgspec.convert({"kind": kind, "at": "headers"}, Fault)


async def test_fault_fields_are_checked_per_request(sim: Simulator) -> None:
    for fault, message in [
        ({"kind": "nul_byte", "at": "headers"}, "only at body, text, arguments, terminator"),
        ({"kind": "no_done", "at": "terminator"}, "with no phase"),
        ({"kind": "wrong_content_type", "at": "body"}, "with no phase"),
        ({"kind": "http_error", "at": "body"}, "only at headers"),
        ({"kind": "stall", "at": "middle"}, "Invalid enum value 'middle'"),
        ({"kind": "disconnect", "times": 0}, "times must be at least 1"),
        ({"kind": "ping_stall", "ping_interval": 0}, "ping_interval must be > 0"),
        ({"kind": "endless_line", "size": 0}, "size must be at least 1"),
    ]:
        body = chat("hi", simulator={"fault": fault})
        async with http() as client:
            response = await client.post(f"{sim.base_url}/chat/completions", json=body)
        assert response.status_code == 400
        assert message in response.json()["error"]["message"], fault


# --- times ----------------------------------------------------------------------------------


async def test_times_strikes_the_first_requests_of_each_body(sim: Simulator) -> None:
    sim.config = msgspec.structs.replace(FAST, fault=parse_fault("http_error:529x2"))
    url = f"{sim.anthropic_base_url}/v1/messages"
    async with http() as client:
        first = [(await client.post(url, json=messages("hi"))).status_code for _ in range(3)]
        other = [(await client.post(url, json=messages("hello"))).status_code for _ in range(3)]
        again = await client.post(url, json=messages("hi"))
    assert first == other == [529, 529, 200]
    assert again.status_code == 200
    assert b"event: message_stop" in again.content


async def test_times_recovers_a_streamed_fault(sim: Simulator) -> None:
    fault = {"kind": "disconnect", "at": "arguments", "times": 1}
    body = chat(WEATHER_PROMPT, tools=[WEATHER_OPENAI], simulator={"fault": fault})
    url = f"{sim.base_url}/chat/completions"
    cut, how = await stream_raw(url, body)
    assert how == "broke"
    whole, how = await stream_raw(url, body)
    assert how == "end" and whole.endswith(b"data: [DONE]\n\n")
    assert whole.startswith(cut) and len(whole) > len(cut)  # the same stream, this time whole
    arguments = "".join(
        call["function"]["arguments"]
        for event in blocks(whole)[:-1]
        for call in delta_of("openai", event).get("tool_calls", [])
    )
    assert json.loads(arguments) == {"location": "Paris", "unit": "celsius"}


async def test_the_openai_sdk_retry_gets_through(sim: Simulator) -> None:
    fault = Fault(kind="http_error", status=500, retry_after=0.01, times=2)
    sim.config = msgspec.structs.replace(FAST, fault=fault)
    async with openai.AsyncOpenAI(
        base_url=sim.base_url, api_key="sk-test", max_retries=2, http_client=http()
    ) as client:
        completion = await client.chat.completions.create(
            model="sim-1", messages=[{"role": "user", "content": EN_PROMPT}]
        )
    assert completion.choices[0].message.content
    assert len(sim.requests) == 3 and sim.requests[0] == sim.requests[2]


# --- the other new kinds --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_wrong_content_type_is_a_portal_page(
    sim: Simulator, provider: str, stream: bool
) -> None:
    sim.config = msgspec.structs.replace(FAST, fault=Fault(kind="wrong_content_type"))
    async with http() as client:
        body = {**request_body(provider), "stream": stream}
        response = await client.post(sim.url + PATHS[provider], json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-length"] == str(len(response.content))
    assert response.text.startswith("<!DOCTYPE html>") and "</html>" in response.text


async def test_ping_stall_keeps_a_read_timeout_from_firing(sim: Simulator) -> None:
    body = request_body("anthropic")
    clean, _ = await fetch(sim, "anthropic", body)
    events = blocks(clean)
    at = strike_at("anthropic", "text", events)
    pinging = fault_at("text", "ping_stall", stall_seconds=0.6, ping_interval=0.1)
    got, how = await fetch(sim, "anthropic", body, pinging, read_timeout=0.35)
    pings = PING["anthropic"] * 5  # at 0.1 … 0.5 s
    assert (got, how) == (b"".join(events[:at]) + pings + b"".join(events[at:]), "end")
    silent = fault_at("text", "stall", stall_seconds=0.6)
    assert (await fetch(sim, "anthropic", body, silent, read_timeout=0.35))[1] == "timeout"


async def test_endless_line_holds_17_mib_in_bounded_memory(sim: Simulator) -> None:
    sim.config = msgspec.structs.replace(FAST, fault=Fault(kind="endless_line", at="body"))
    expected = len(b"data: ") + 17 * 1024 * 1024
    total = newlines = 0
    tracemalloc.start()
    try:
        async with (
            http() as client,
            client.stream("POST", f"{sim.base_url}/chat/completions", json=chat("hi")) as r,
        ):
            async for piece in r.aiter_raw():
                total += len(piece)
                newlines += piece.count(b"\n")
                if total >= expected:
                    break  # then hang up while the server holds the line open
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (total, newlines) == (expected, 0)
    assert peak < 4 * 1024 * 1024  # neither side ever held the 17 MiB line
    await all_connections_closed()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_error_event_error_type(sim: Simulator, provider: str) -> None:
    overloaded = Fault(kind="error_event", at="body", error_type="overloaded_error")
    got, how = await fetch(sim, provider, request_body(provider), overloaded)
    (event,) = blocks(got)
    data = json.loads(event.split(b"data: ", 1)[1])
    assert data["error"]["type"] == "overloaded_error" and how == "end"
    if provider == "anthropic":
        assert event.startswith(b"event: error\n")
        by_status = Fault(kind="error_event", at="body", status=529)  # the type follows 529
        assert await fetch(sim, provider, request_body(provider), by_status) == (got, "end")
    http_error = Fault(kind="http_error", status=500, error_type="overloaded_error")
    sim.config = msgspec.structs.replace(FAST, fault=http_error)
    async with http() as client:
        response = await client.post(sim.url + PATHS[provider], json=request_body(provider))
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "overloaded_error"


async def test_anthropic_sdk_sees_the_overloaded_error_before_content(
    sim: Simulator,
) -> None:
    fault = Fault(kind="error_event", status=529, message="Overloaded")
    sim.config = msgspec.structs.replace(FAST, fault=fault)
    async with anthropic.AsyncAnthropic(
        base_url=sim.anthropic_base_url, api_key="x", max_retries=0, http_client=http()
    ) as client:
        with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
            async with client.messages.stream(
                model="sim-1", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                async for _ in stream:
                    pass


# --- gzip -----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_gzip_stream_is_flushed_event_by_event(sim: Simulator, provider: str) -> None:
    body = request_body(provider)
    events = blocks(dechunked(await exchange(sim, provider, body)))
    raw = await exchange(sim, provider, body, gzip=True)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"\r\ncontent-encoding: gzip\r\n" in head.lower()
    assert b"content-length" not in head.lower()
    chunks, cut = dechunk(rest)
    assert cut is None and chunks[0].startswith(b"\x1f\x8b")
    unpack = zlib.decompressobj(wbits=31)
    # Each chunk decompresses on its own to exactly one event: nothing waits in the encoder.
    assert [unpack.decompress(chunk) for chunk in chunks[:-1]] == events
    assert unpack.decompress(chunks[-1]) == b"" and unpack.eof  # the gzip trailer

    plain, _ = await fetch(sim, provider, body)
    sim.config = msgspec.structs.replace(FAST, gzip=True)
    async with (
        http() as client,
        client.stream("POST", sim.url + PATHS[provider], json=body) as response,
    ):
        decoded = b"".join([piece async for piece in response.aiter_bytes()])
        assert response.headers["content-encoding"] == "gzip"
    assert decoded == plain == b"".join(events)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_gzip_whole_bodies(sim: Simulator, provider: str) -> None:
    body = {**request_body(provider), "stream": False}
    plain = dechunked_or_whole(await exchange(sim, provider, body))
    packed = dechunked_or_whole(await exchange(sim, provider, body, gzip=True))
    assert gzip.decompress(packed) == plain
    async with http() as client:
        error = Fault(kind="http_error", status=429)
        sim.config = msgspec.structs.replace(FAST, fault=error, gzip=True)
        response = await client.post(sim.url + PATHS[provider], json=body)
    assert response.status_code == 429 and response.headers["content-encoding"] == "gzip"
    assert response.json()["error"]["message"] == "simulated failure"


async def test_official_sdks_read_gzip_streams(sim: Simulator) -> None:
    sim.config = msgspec.structs.replace(FAST, gzip=True)
    async with openai.AsyncOpenAI(
        base_url=sim.base_url, api_key="x", max_retries=0, http_client=http()
    ) as client:
        stream = await client.chat.completions.create(
            model="sim-1", messages=[{"role": "user", "content": EN_PROMPT}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        whole = await client.chat.completions.create(
            model="sim-1", messages=[{"role": "user", "content": EN_PROMPT}]
        )
    assert text and text == whole.choices[0].message.content
    async with (
        anthropic.AsyncAnthropic(
            base_url=sim.anthropic_base_url, api_key="x", max_retries=0, http_client=http()
        ) as claude,
        claude.messages.stream(
            model="sim-1", max_tokens=1024, messages=[{"role": "user", "content": EN_PROMPT}]
        ) as message_stream,
    ):
        message = await message_stream.get_final_message()
    assert message.content[0].type == "text" and message.content[0].text == text


# --- the command-line form ------------------------------------------------------------------


def test_fault_grammar() -> None:
    assert parse_fault("disconnect@arguments") == Fault(kind="disconnect", at="arguments")
    assert parse_fault("http_error:529x2") == Fault(kind="http_error", status=529, times=2)
    assert parse_fault("ping_stall:3") == Fault(kind="ping_stall", after_events=3)
    assert parse_fault("stall@headers") == Fault(kind="stall", at="headers")
    assert parse_fault("stall:2@textx3") == Fault(kind="stall", after_events=2, at="text", times=3)
    assert parse_fault("cut_chunk@terminator") == Fault(kind="cut_chunk", at="terminator")
    assert parse_fault("wrong_content_typex1") == Fault(kind="wrong_content_type", times=1)
    for bad, message in [
        ("explode", "unknown fault 'explode'"),
        ("disconnect@middle", "unknown phase 'middle': choose one of headers, body"),
        ("malformed_json@headers", "cannot strike at 'headers': only at body"),
        ("no_done@terminator", "cannot strike at 'terminator'"),
        ("stall:3@body", "only applies at the text phase"),
        ("http_errorx0", "times must be at least 1"),
        ("stall:2xy", "'2xy' is not a whole number"),
        ("wrong_content_type:3", "takes no number"),
        ("http_error:200x2", "within 400-599"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_fault(bad)
