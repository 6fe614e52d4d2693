"""Each timeout fires on its own, names itself, and keeps what arrived: over real loopback.

The servers here are hand-made with ``serve_http`` so each test controls exactly when bytes
flow (keep-alives without content, silence, a connection that never completes). Real clock,
short budgets: trio's autojump clock misfires with real I/O.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

from streambus import Delta, Stop, Timeouts
from streambus.simulator import HTTPRequest, HTTPResponse, serve_http
from tests.test_stream import assert_session, openai_at, request, run

SSE = [("content-type", "text/event-stream")]


def chunk(content: str) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % content.encode()


DONE = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'

Body = Callable[[], AsyncIterator[bytes]]


async def serve(
    nursery: trio.Nursery, body: Body, *, before_headers: float = 0.0, requests: list[int]
) -> str:
    """A server answering every POST with ``body()``; its OpenAI base URL."""

    async def handler(req: HTTPRequest) -> HTTPResponse:
        requests.append(len(requests))
        if before_headers:
            await trio.sleep(before_headers)
        return HTTPResponse(200, SSE, body())

    port = await nursery.start(functools.partial(serve_http, handler))
    return f"http://127.0.0.1:{port}/v1"


async def with_server(
    body: Body, test: Callable[[str, list[int]], Awaitable[Any]], **kwargs: Any
) -> Any:
    requests: list[int] = []
    async with trio.open_nursery() as nursery:
        base = await serve(nursery, body, requests=requests, **kwargs)
        result = await test(base, requests)
        nursery.cancel_scope.cancel()
    return result


def budgets(**seconds: float | None) -> Timeouts:
    """Short budgets for tests: everything 10 s unless said otherwise."""
    base: dict[str, float | None] = {
        "connect": 10,
        "first_token": 10,
        "idle": 10,
        "stall": 10,
        "total": 20,
    }
    return Timeouts(**{**base, **seconds})


async def test_pings_do_not_keep_a_stalled_stream_alive() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield chunk("Hello")
        yield chunk(" world")
        while True:  # keep-alive comments, forever: bytes, but no content
            await trio.sleep(0.02)
            yield b": keep-alive\n\n"

    async def test(base: str, requests: list[int]) -> tuple[Any, list[Any]]:
        return await run(openai_at(base), request(), timeouts=budgets(stall=0.3, idle=0.1))

    message, events = await with_server(body, test)
    stop = assert_session(events)
    assert stop.error_kind == "stall_timeout"
    assert stop.error == (
        "stall timeout: no content from 127.0.0.1:"
        + stop.error.split("127.0.0.1:")[1].split(" ")[0]
        + " for 0.3 s (keep-alives do not count)"
    )
    assert message.text == "Hello world"  # what arrived is kept
    assert stop.attempts == 1


async def test_silence_mid_stream_is_the_idle_timeout() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield chunk("Hello")
        await trio.sleep(60)
        yield DONE

    async def test(base: str, requests: list[int]) -> tuple[Any, list[Any]]:
        return await run(openai_at(base), request(), timeouts=budgets(idle=0.2))

    message, events = await with_server(body, test)
    stop = assert_session(events)
    assert stop.error_kind == "idle_timeout"
    assert stop.error is not None and stop.error.endswith("sent no bytes for 0.2 s")
    assert stop.error.startswith("idle timeout: 127.0.0.1:")
    assert message.text == "Hello"
    assert stop.attempts == 1  # content was published: never retried


async def test_a_slow_first_token_is_not_retried() -> None:
    async def body() -> AsyncIterator[bytes]:
        while True:  # a reasoning model behind a proxy: pings, no content
            yield b": keep-alive\n\n"
            await trio.sleep(0.02)

    async def test(base: str, requests: list[int]) -> tuple[Any, list[Any]]:
        result = await run(
            openai_at(base), request(), timeouts=budgets(first_token=0.3, idle=0.1), retries=3
        )
        assert len(requests) == 1
        return result

    message, events = await with_server(body, test)
    stop = assert_session(events)
    assert stop.error_kind == "first_token_timeout"
    assert stop.error is not None and stop.error.endswith("within 0.3 s of the request")
    assert [type(e).__name__ for e in events] == ["Start", "Stop"]
    assert message.text == ""


async def test_silence_before_the_headers_is_idle_and_retried() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield chunk("Hi")
        yield DONE

    async def test(base: str, requests: list[int]) -> tuple[Any, list[Any]]:
        return await run(openai_at(base), request(), timeouts=budgets(idle=0.2), retries=1)

    _message, events = await with_server(body, test, before_headers=60)
    stop = assert_session(events)
    assert stop.error_kind == "idle_timeout"
    assert stop.attempts == 2  # a silent server is as good as a dead one: retried once
    assert stop.error is not None and stop.error.endswith("(gave up after 2 attempts)")


@pytest.fixture
def unanswered_port() -> AsyncIterator[int]:
    """A port whose accept queue is full, so a new connection hangs in the handshake."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    held = []
    for _ in range(8):  # fill the queue (Linux queues backlog + 1), then the next SYN is dropped
        client = socket.socket()
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            client.connect(("127.0.0.1", port))
        held.append(client)
    try:
        yield port
    finally:
        for client in held:
            client.close()
        server.close()


async def test_a_connection_that_never_completes_is_the_connect_timeout(
    unanswered_port: int,
) -> None:
    base = f"http://127.0.0.1:{unanswered_port}/v1"
    started = trio.current_time()
    _, events = await run(openai_at(base), request(), timeouts=budgets(connect=0.2), retries=1)
    stop = assert_session(events)
    assert stop.error_kind == "connect_timeout"
    assert stop.error == (
        f"connect timeout: no connection to 127.0.0.1:{unanswered_port} within 0.2 s "
        "(gave up after 2 attempts)"
    )
    assert trio.current_time() - started < 5


async def test_the_total_budget_bounds_a_stream_that_trickles() -> None:
    async def body() -> AsyncIterator[bytes]:
        while True:  # content keeps coming: no other budget ever runs out
            yield chunk("la ")
            await trio.sleep(0.02)

    async def test(base: str, requests: list[int]) -> tuple[Any, list[Any]]:
        return await run(openai_at(base), request(), timeouts=budgets(total=0.5))

    message, events = await with_server(body, test)
    stop = assert_session(events)
    assert stop.error_kind == "total_timeout"
    assert stop.error == "total timeout: the 0.5 s budget ran out"
    assert message.text.startswith("la la la")


async def test_no_budget_at_all_still_streams() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield chunk("ok")
        yield DONE

    async def test(base: str, requests: list[int]) -> tuple[Any, list[Any]]:
        off = Timeouts(connect=None, first_token=None, idle=None, stall=None, total=None)
        return await run(openai_at(base), request(), timeouts=off)

    message, events = await with_server(body, test)
    stop = assert_session(events)
    assert (stop.reason, stop.error, message.text) == ("stop", None, "ok")
    assert any(isinstance(e, Delta) for e in events) and isinstance(events[-1], Stop)


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_a_budget_must_be_a_positive_number(value: float) -> None:
    with pytest.raises(ValueError, match="the stall timeout must be a positive number"):
        Timeouts(stall=value)


def test_the_defaults_suit_real_providers() -> None:
    t = Timeouts()
    assert (t.connect, t.first_token, t.idle, t.stall, t.total) == (10, 600, 600, 120, None)
