"""Retries: only before content, each attempt visible, the server's retry-after honoured.

Timing is checked on trio's MockClock through ``httpx2.MockTransport`` (no real I/O, so the
autojump clock is exact); recovery over real loopback uses a hand-made server.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
from typing import Any

import httpx2
import pytest
import trio
import trio.testing

from streambus import Delta, Start, Stop, Timeouts, open_bus, stream
from streambus.retry import BACKOFF_CAP, RETRY_AFTER_CAP, backoff
from streambus.simulator import HTTPRequest, HTTPResponse, serve_http
from tests.test_stream import assert_session, openai_at, request, run
from tests.test_timeouts import DONE, SSE, chunk

KEY = "sk-test-key-0123456789"


def anthropic_at(base_url: str) -> Any:
    from streambus import ProviderConfig

    return ProviderConfig("anthropic", "anthropic", base_url, "sim-1", api_key=KEY)


OVERLOADED = (
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
    b'{"input_tokens":7,"output_tokens":1}}}\n\n'
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
    b'"message":"Overloaded"}}\n\n'
)
ANSWER = (
    b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
    b'{"input_tokens":7,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Hello"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":2}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def answering(responses: list[HTTPResponse]) -> tuple[Any, list[int]]:
    """A handler answering the n-th request with ``responses[n]`` (then the last one again),
    and the list it appends each request's number to."""
    seen: list[int] = []

    async def handler(req: HTTPRequest) -> HTTPResponse:
        seen.append(len(seen))
        return responses[min(len(seen), len(responses)) - 1]

    return handler, seen


async def scripted(bodies: list[bytes]) -> tuple[Any, list[int]]:
    """:func:`answering` with event-stream bodies."""
    return answering([HTTPResponse(200, SSE, body) for body in bodies])


async def on_loopback(handler: Any, config_for: Any, **kwargs: Any) -> tuple[Any, list[Any]]:
    """Serve ``handler`` over real loopback; run one stream against ``config_for(base_url)``."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_http, handler))
        result = await run(config_for(f"http://127.0.0.1:{port}"), request(), **kwargs)
        nursery.cancel_scope.cancel()
    return result


async def test_an_in_stream_overload_before_content_is_retried() -> None:
    handler, seen = await scripted([OVERLOADED, ANSWER])
    message, events = await on_loopback(handler, anthropic_at, retries=2)
    stop = assert_session(events)  # one start, seqs without a gap: the failed try left no trace
    assert (stop.reason, stop.error, stop.attempts) == ("stop", None, 2)
    assert message.text == "Hello" and len(seen) == 2
    assert [type(e).__name__ for e in events] == ["Start", "Delta", "Usage", "Stop"]


async def test_an_in_stream_overload_after_retries_names_itself() -> None:
    handler, seen = await scripted([OVERLOADED])
    _, events = await on_loopback(handler, anthropic_at, retries=1)
    stop = assert_session(events)
    assert stop.error_kind == "provider" and stop.attempts == 2 and len(seen) == 2
    assert stop.error == (
        "anthropic stream error: Overloaded (overloaded_error) (gave up after 2 attempts)"
    )


async def test_an_in_stream_error_of_another_type_is_not_retried() -> None:
    bad = OVERLOADED.replace(b"overloaded_error", b"invalid_request_error")
    handler, seen = await scripted([bad, ANSWER])
    _, events = await on_loopback(handler, anthropic_at, retries=2)
    stop = assert_session(events)
    assert stop.error == "anthropic stream error: Overloaded (invalid_request_error)"
    assert stop.attempts == 1 and len(seen) == 1


async def test_nothing_is_retried_once_content_was_published() -> None:
    cut = chunk("Hello") + OVERLOADED  # nonsense for OpenAI after content: ends it
    openai_error = chunk("Hello") + b'data: {"error":{"message":"boom","type":"server_error"}}\n\n'
    for body in (cut, openai_error):
        handler, seen = await scripted([body, chunk("again") + DONE])
        message, events = await on_loopback(handler, lambda b: openai_at(b + "/v1"), retries=3)
        stop = assert_session(events)
        assert stop.reason == "error" and stop.attempts == 1 and len(seen) == 1
        assert message.text == "Hello"  # not "Helloagain"


async def test_a_body_that_ends_before_content_is_retried() -> None:
    handler, _seen = await scripted([b"", chunk("Hi") + DONE])
    message, events = await on_loopback(handler, lambda b: openai_at(b + "/v1"), retries=1)
    stop = assert_session(events)
    assert (stop.reason, stop.attempts, message.text) == ("stop", 2, "Hi")


async def test_each_retry_is_one_warning_line_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler, _ = await scripted([OVERLOADED, OVERLOADED, ANSWER])
    with caplog.at_level(logging.WARNING, logger="streambus"):
        await on_loopback(handler, anthropic_at, retries=2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("anthropic stream error: Overloaded (overloaded_error); retrying")
    assert lines[0].endswith("(attempt 2 of 3)") and lines[1].endswith("(attempt 3 of 3)")
    assert not any(KEY in line for line in lines)


# --- timing, on the mock clock ------------------------------------------------------------


def mock_client(responses: list[httpx2.Response], times: list[float]) -> httpx2.AsyncClient:
    def handler(req: httpx2.Request) -> httpx2.Response:
        times.append(trio.current_time())
        return responses[min(len(times) - 1, len(responses) - 1)]

    return httpx2.AsyncClient(transport=httpx2.MockTransport(handler))


def busy(**headers: str) -> httpx2.Response:
    body = b'{"error": {"message": "Busy", "type": "server_error"}}'
    return httpx2.Response(
        503, headers={"content-type": "application/json", **headers}, content=body
    )


def ok() -> httpx2.Response:
    return httpx2.Response(200, headers=dict(SSE), content=chunk("ok") + DONE)


async def stream_with(client: httpx2.AsyncClient, **kwargs: Any) -> list[Any]:
    seen: list[Any] = []
    async with open_bus() as bus:
        bus.subscribe(seen.append)
        await stream(bus, "hi", provider=openai_at("http://x.invalid/v1"), client=client, **kwargs)
    return seen


@pytest.mark.parametrize(
    ("headers", "wait"),
    [({"retry-after": "7"}, 7.0), ({"retry-after-ms": "2500"}, 2.5), ({"retry-after": "0"}, 0)],
)
async def test_retry_after_is_honoured_exactly(
    headers: dict[str, str], wait: float, autojump_clock: trio.testing.MockClock
) -> None:
    times: list[float] = []
    async with mock_client([busy(**headers), ok()], times) as client:
        events = await stream_with(client, retries=1)
    assert times[1] - times[0] == pytest.approx(wait)
    stop = events[-1]
    assert isinstance(stop, Stop) and (stop.reason, stop.attempts) == ("stop", 2)


async def test_a_retry_after_beyond_the_cap_is_not_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []
    async with mock_client([busy(**{"retry-after": "3600"}), ok()], times) as client:
        events = await stream_with(client, retries=3)
    assert len(times) == 1
    stop = events[-1]
    assert isinstance(stop, Stop) and stop.attempts == 1
    assert stop.error == (
        "openai returned HTTP 503: Busy (server_error) "
        f"(not retried: the server asked to wait 3600 s, more than {RETRY_AFTER_CAP:g} s)"
    )


async def test_backoff_sleeps_grow_and_stay_within_the_full_jitter_bounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    random.seed(7)
    times: list[float] = []
    async with mock_client([busy()], times) as client:
        events = await stream_with(client, retries=5, timeouts=Timeouts(total=None))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 5
    for attempt, gap in enumerate(gaps):
        assert 0 <= gap <= min(BACKOFF_CAP, 0.5 * 2**attempt)
    stop = events[-1]
    assert isinstance(stop, Stop) and stop.attempts == 6 and stop.error_kind == "http"


async def test_the_backoff_sleep_is_cancellable(autojump_clock: trio.testing.MockClock) -> None:
    times: list[float] = []
    seen: list[Any] = []
    async with mock_client([busy(**{"retry-after": "50"}), ok()], times) as client:
        with trio.move_on_after(10):
            async with open_bus() as bus:
                bus.subscribe(seen.append)
                await stream(bus, "hi", provider=openai_at("http://x/v1"), client=client)
    assert len(times) == 1 and trio.current_time() == pytest.approx(10)
    assert isinstance(seen[0], Start) and isinstance(seen[-1], Stop)
    assert seen[-1].reason == "cancelled" and not any(isinstance(e, Delta) for e in seen)


def test_full_jitter_never_exceeds_the_cap() -> None:
    rng_draws = [backoff(attempt, None) for attempt in range(20) for _ in range(50)]
    assert all(d is not None and 0 <= d <= BACKOFF_CAP for d in rng_draws)
    assert backoff(0, 12.5) == 12.5 and backoff(0, RETRY_AFTER_CAP + 1) is None
