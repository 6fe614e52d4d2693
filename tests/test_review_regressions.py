"""Regressions found by reviewing the reliability work (issue 5), each over real loopback."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import streambus.client
from streambus import Event, Stop, Timeouts, open_bus, stream
from streambus.simulator import HTTPRequest, HTTPResponse, serve_http
from tests.test_retry import ANSWER, OVERLOADED, answering, anthropic_at
from tests.test_retry import on_loopback as serve_and_run
from tests.test_stream import assert_session, openai_at, request
from tests.test_timeouts import DONE, SSE, chunk

EMPTY_ANSWER = (
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n'
    b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":64}}\n\n'
    b"data: [DONE]\n\n"
)


async def on_loopback(responses: list[HTTPResponse], **kwargs: Any) -> tuple[Any, list[Event]]:
    """Answer the n-th request with ``responses[n]`` (then the last again); run one stream."""
    handler, _ = answering(responses)
    return await serve_and_run(handler, lambda base: openai_at(base + "/v1"), **kwargs)


async def test_an_answer_without_content_ends_normally() -> None:
    """A reasoning budget spent before any text: no content, finish reason length."""
    message, events = await on_loopback([HTTPResponse(200, SSE, EMPTY_ANSWER)], retries=2)
    stop = assert_session(events)
    assert (stop.reason, stop.error, stop.attempts) == ("length", None, 1)
    assert message.usage is not None and message.usage.output_tokens == 64


async def test_a_retry_after_date_in_minus_zero_zone_is_a_date() -> None:
    headers = [("content-type", "application/json")]
    busy = HTTPResponse(
        503,
        [*headers, ("retry-after", "Wed, 21 Oct 2015 07:28:00 -0000")],  # long past: now
        b'{"error":{"message":"busy","type":"server_error"}}',
    )
    _, events = await on_loopback([busy, HTTPResponse(200, SSE, chunk("ok") + DONE)], retries=1)
    stop = assert_session(events)
    assert (stop.reason, stop.attempts) == ("stop", 2)


async def test_a_slow_subscriber_is_not_a_silent_server() -> None:
    """Backpressure from a lossless subscriber (a pager, a locked database) must not count
    against the idle and stall budgets: the server was not silent."""

    async def body() -> AsyncIterator[bytes]:
        for i in range(40):
            yield chunk(f"w{i} ")
            await trio.sleep(0.001)
        yield DONE

    seen: list[Event] = []

    async def slow(event: Event) -> None:
        if len(seen) == 5:
            await trio.sleep(1.0)
        seen.append(event)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(serve_http, lambda req: _response(HTTPResponse(200, SSE, body())))
        )
        async with open_bus(buffer=1) as bus:
            bus.subscribe(slow)
            budgets = Timeouts(idle=0.5, stall=0.5, first_token=5, connect=5)
            config = openai_at(f"http://127.0.0.1:{port}/v1")
            await stream(bus, request(), provider=config, retries=0, timeouts=budgets)
        nursery.cancel_scope.cancel()
    stop = assert_session(seen)
    assert (stop.reason, stop.error) == ("stop", None)


async def _response(response: HTTPResponse) -> HTTPResponse:
    return response


@pytest.mark.parametrize("first", ["overload", "truncated"])
async def test_a_cancel_during_the_backoff_after_a_held_back_stop_still_ends_it(
    first: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failed attempt's stop was held back for the retry; a Ctrl-C during the back-off
    must still end the session with a cancelled stop."""
    monkeypatch.setattr(streambus.client, "backoff", lambda attempt, retry_after: 5.0)
    body = OVERLOADED if first == "overload" else OVERLOADED.split(b"event: error")[0]
    requests = 0

    async def handler(req: HTTPRequest) -> HTTPResponse:
        nonlocal requests
        requests += 1
        return HTTPResponse(200, SSE, body if requests == 1 else ANSWER)

    seen: list[Event] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_http, handler))
        async with open_bus() as bus:
            bus.subscribe(seen.append)
            with trio.move_on_after(1.0):  # during the 5 s back-off
                config = anthropic_at(f"http://127.0.0.1:{port}")
                await stream(bus, request(), provider=config, retries=2)
        nursery.cancel_scope.cancel()
    assert requests == 1
    stop = assert_session(seen)
    assert stop.reason == "cancelled"


async def test_a_total_timeout_mid_stream_does_not_blame_a_recovered_attempt() -> None:
    async def trickle() -> AsyncIterator[bytes]:
        while True:
            yield chunk("la ")
            await trio.sleep(0.02)

    busy = HTTPResponse(
        503,
        [("content-type", "application/json"), ("retry-after", "0")],
        b'{"error":{"message":"Busy","type":"server_error"}}',
    )
    _, events = await on_loopback([busy, HTTPResponse(200, SSE, trickle())], timeout=0.6)
    stop = assert_session(events)
    assert stop.error == "total timeout: the 0.6 s budget ran out"
    assert isinstance(stop, Stop) and stop.attempts == 2


async def test_an_openai_in_stream_rate_limit_is_retried_by_its_code() -> None:
    limited = (
        b'data: {"error":{"message":"slow down","type":"tokens","code":"rate_limit_exceeded"}}\n\n'
    )
    ok = chunk("ok") + DONE
    message, events = await on_loopback(
        [HTTPResponse(200, SSE, limited), HTTPResponse(200, SSE, ok)], retries=1
    )
    stop = assert_session(events)
    assert (stop.reason, stop.attempts, message.text) == ("stop", 2, "ok")
