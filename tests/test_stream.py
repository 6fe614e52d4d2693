"""The provider edge end to end over real loopback HTTP: our simulator (or canned bytes) on one
side, ``stream()`` with httpx2 on the other. Real clock: trio's autojump misfires with real I/O.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
import trio

from streambus import (
    Delta,
    Event,
    ProviderConfig,
    Request,
    Start,
    Stop,
    Usage,
    open_bus,
    open_stream,
    stream,
)
from streambus.simulator import (
    Canned,
    HTTPRequest,
    HTTPResponse,
    Simulator,
    SimulatorConfig,
    open_simulator,
    serve_canned,
    serve_http,
)

FAST = SimulatorConfig(ttft=0, tokens_per_second=0, jitter=0)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(FAST) as simulator:
        yield simulator


def openai_at(base_url: str, key: str = "sk-test-key-0123456789") -> ProviderConfig:
    return ProviderConfig("openai", "openai", base_url, "sim-1", api_key=key)


def request(prompt: str = "Tell me about streaming", **simulator: Any) -> Request:
    extra = {"simulator": simulator} if simulator else {}
    return Request.from_prompt(prompt, extra=extra)


async def run(config: ProviderConfig, req: Request, **kwargs: Any) -> tuple[Any, list[Event]]:
    seen: list[Event] = []
    async with open_bus() as bus:
        bus.subscribe(seen.append)
        message = await stream(bus, req, provider=config, **kwargs)
    return message, seen


def assert_session(events: list[Event]) -> Stop:
    assert isinstance(events[0], Start)
    assert [e.seq for e in events] == list(range(len(events)))
    assert sum(isinstance(e, Stop) for e in events) == 1
    assert isinstance(events[-1], Stop)
    times = [e.t_ns for e in events]
    assert times == sorted(times)
    return events[-1]


async def test_korean_prompt_streams_korean_text_with_usage(sim: Simulator) -> None:
    message, events = await run(openai_at(sim.base_url), request("안녕하세요, 스트리밍이 뭐예요?"))
    stop = assert_session(events)
    assert (stop.reason, stop.raw_reason, stop.error) == ("stop", "stop", None)
    assert any("\uac00" <= ch <= "\ud7a3" for ch in message.text)  # Hangul syllables
    assert sum(isinstance(e, Delta) for e in events) > 5
    assert isinstance(events[-2], Usage) and events[-2].output_tokens
    assert message.ttft_s is not None and message.duration_s is not None
    body = sim.requests[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_anthropic_format_against_the_simulator(sim: Simulator) -> None:
    config = ProviderConfig("anthropic", "anthropic", sim.anthropic_base_url, "claude-sim", "k")
    message, events = await run(config, request("What is streaming?"))
    stop = assert_session(events)
    assert stop.reason == "stop" and stop.raw_reason == "end_turn"
    assert message.text and message.usage.input_tokens


async def test_provider_sim_starts_its_own_simulator() -> None:
    message, events = await run(
        ProviderConfig("sim", "openai", None, "sim-1", "sim"), request(), retries=0
    )
    assert events[0].provider == "sim"  # type: ignore[union-attr]
    assert message.stop.reason == "stop" and message.text


async def test_retryable_status_is_retried_then_reported(sim: Simulator) -> None:
    fault = {"kind": "http_error", "status": 429, "retry_after": 0.01, "message": "Slow down"}
    _, events = await run(openai_at(sim.base_url), request(fault=fault), retries=2)
    stop = assert_session(events)
    assert len(sim.requests) == 3
    assert stop.reason == "error"
    assert stop.error is not None
    assert stop.error.startswith("openai returned HTTP 429: Slow down")
    assert len(events) == 2  # start, stop: nothing published twice


async def test_non_retryable_status_fails_at_once(sim: Simulator) -> None:
    fault = {"kind": "http_error", "status": 401, "message": "Incorrect API key provided"}
    message, _ = await run(openai_at(sim.base_url), request(fault=fault), retries=2)
    assert len(sim.requests) == 1
    assert message.stop.error.startswith("openai returned HTTP 401: Incorrect API key provided")


async def test_disconnect_mid_stream_keeps_what_arrived_and_never_retries(sim: Simulator) -> None:
    fault = {"kind": "disconnect", "after_events": 5}
    message, events = await run(openai_at(sim.base_url), request(fault=fault), retries=2)
    stop = assert_session(events)
    assert len(sim.requests) == 1
    assert stop.reason == "error" and "broke mid-stream" in stop.error
    assert sum(isinstance(e, Delta) for e in events) == 5
    assert message.text


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "no_done"}, "stream ended before [DONE]"),
        ({"kind": "malformed_json", "after_events": 3}, "malformed chunk from server"),
        (
            {"kind": "error_event", "after_events": 3, "message": "boom"},
            "openai stream error: boom",
        ),
    ],
)
async def test_mid_stream_faults_end_with_a_clear_error(
    sim: Simulator, fault: dict[str, Any], error: str
) -> None:
    message, events = await run(openai_at(sim.base_url), request(fault=fault))
    stop = assert_session(events)
    assert stop.reason == "error" and error in stop.error
    assert message.text  # what arrived before the fault is kept
    if "after_events" in fault:
        assert sum(isinstance(e, Delta) for e in events) == fault["after_events"]


async def test_total_timeout_ends_a_stalled_stream(sim: Simulator) -> None:
    fault = {"kind": "stall", "after_events": 2, "stall_seconds": 60}
    with trio.fail_after(10):
        _, events = await run(openai_at(sim.base_url), request(fault=fault), timeout=0.5)
    stop = assert_session(events)
    assert stop.error == "total timeout: the 0.5 s budget ran out"
    assert stop.error_kind == "total_timeout" and stop.attempts == 1
    assert sum(isinstance(e, Delta) for e in events) == 2


async def test_cancellation_reaches_every_subscriber_as_a_final_stop() -> None:
    slow = SimulatorConfig(ttft=0, tokens_per_second=50, jitter=0)
    seen: dict[str, list[Event]] = {"a": [], "b": [], "iterator": []}
    async with open_simulator(slow) as sim:
        with trio.move_on_after(0.3) as scope:
            async with open_bus() as bus, trio.open_nursery() as nursery:
                bus.subscribe(seen["a"].append, name="a")

                async def slow_subscriber(event: Event) -> None:
                    await trio.sleep(0.01)
                    seen["b"].append(event)

                bus.subscribe(slow_subscriber, name="b")
                await stream(bus, request(), provider=openai_at(sim.base_url))
                nursery.cancel_scope.cancel()
    assert scope.cancelled_caught
    for name in ("a", "b"):
        stop = assert_session(seen[name])
        assert stop.reason == "cancelled", name
        assert any(isinstance(e, Delta) for e in seen[name]), name


async def test_connection_refused_is_retried_then_reported() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    _, events = await run(openai_at(f"http://127.0.0.1:{port}/v1"), request(), retries=1)
    stop = assert_session(events)
    assert stop.error.startswith(f"cannot connect to 127.0.0.1:{port}")


async def test_a_body_that_is_not_an_event_stream_is_a_clear_error() -> None:
    canned = Canned(
        b'{"id": "chatcmpl-1", "choices": []}', headers=(("content-type", "application/json"),)
    )
    async with serve_canned({"/v1/chat/completions": canned}) as server:
        message, _ = await run(openai_at(server.url + "/v1"), request())
    assert message.stop.error.startswith("expected an event stream (text/event-stream)")
    assert "application/json" in message.stop.error


async def test_api_key_echoed_by_the_server_is_redacted() -> None:
    key = "sk-proj-SECRETSECRET1234567890"
    body = (
        b'{"error": {"message": "Incorrect API key provided: sk-proj-SECR***7890.",'
        b' "type": "invalid_request_error", "code": "invalid_api_key"}}'
    )
    canned = Canned(body, status=401, headers=(("content-type", "application/json"),))
    async with serve_canned({"/v1/chat/completions": canned}) as server:
        message, _ = await run(openai_at(server.url + "/v1", key), request())
        sent = server.requests[0].headers
    assert dict(sent)["authorization"] == f"Bearer {key}"
    error = message.stop.error
    assert error.startswith("openai returned HTTP 401: Incorrect API key provided: [redacted]")
    assert key[:8] not in error and "invalid_request_error" in error


async def test_open_stream_iterates_one_session_and_ends() -> None:
    events: list[Event] = []
    async with open_stream(request(), provider="sim", simulator=FAST) as subscription:
        async for event in subscription:
            events.append(event)
    stop = assert_session(events)
    assert stop.reason == "stop"


async def test_a_failing_subscriber_does_not_disturb_the_stream(sim: Simulator) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("bad handler")

    seen: list[Event] = []
    async with open_bus() as bus:
        bus.subscribe(broken)
        bus.subscribe(seen.append)
        message = await stream(bus, request(), provider=openai_at(sim.base_url))
    assert message.stop.reason == "stop"
    assert_session(seen)
    assert [str(f) for f in bus.failures] == [
        "subscriber 'test_a_failing_subscriber_does_not_disturb_the_stream.<locals>.broken' "
        "failed: RuntimeError: bad handler"
    ]


# -- regressions found in review ------------------------------------------------------------------


async def test_a_key_echoed_in_a_mid_stream_error_is_redacted() -> None:
    key = "sk-SECRET1234567890abcdef"
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
        b'data: {"error":{"message":"Incorrect API key provided: sk-SECRET1234567890abcdef",'
        b'"type":"invalid_request_error"}}\n\n'
    )
    async with serve_canned({"/v1/chat/completions": Canned(body)}) as server:
        message, events = await run(openai_at(server.url + "/v1", key), request())
    stop = assert_session(events)
    assert (
        stop.error == "openai stream error: Incorrect API key provided: [redacted] "
        "(invalid_request_error)"
    )
    assert message.stop.error == stop.error


async def test_credentials_in_the_base_url_never_show(sim: Simulator) -> None:
    base = sim.base_url.replace("http://", "http://user:hunter2pass@")
    config = ProviderConfig("openai", "openai", base, "sim-1", "k")
    _, events = await run(config, request())
    start = events[0]
    assert isinstance(start, Start) and start.host == f"127.0.0.1:{sim.port}"
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    bad = ProviderConfig(
        "openai", "openai", f"http://user:hunter2pass@127.0.0.1:{port}/v1", "m", "k"
    )
    message, _ = await run(bad, request(), retries=0)
    assert "hunter2pass" not in message.stop.error and "user:" not in message.stop.error


async def test_a_subscriber_that_got_start_gets_a_stop_even_if_cancelled_right_away() -> None:
    got: list[Event] = []

    async def slow(event: Event) -> None:
        await trio.sleep(10)

    async with open_bus(buffer=1, grace=1) as bus:
        bus.subscribe(slow)
        bus.subscribe(got.append)
        await bus.publish([Delta(session="x", seq=0, t_ns=0, text="a")])  # slow takes it
        await bus.publish([Delta(session="x", seq=1, t_ns=0, text="b")])  # slow is now full
        with trio.move_on_after(0.05):
            await stream(bus, request(), provider=openai_at("http://127.0.0.1:9/v1"))
    mine = [e for e in got if e.session != "x"]
    assert [type(e) for e in mine] == [Start, Stop]
    assert mine[-1].reason == "cancelled"  # type: ignore[union-attr]


async def test_the_total_timeout_names_the_last_error_while_retrying(sim: Simulator) -> None:
    fault = {"kind": "http_error", "status": 503, "retry_after": 0.2, "message": "Busy"}
    _, events = await run(openai_at(sim.base_url), request(fault=fault), retries=10, timeout=0.5)
    stop = assert_session(events)
    assert stop.error is not None
    assert stop.error.startswith("openai returned HTTP 503: Busy")
    assert "(no time left to retry within the 0.5 s timeout)" in stop.error
    assert stop.error.endswith(f"(gave up after {stop.attempts} attempts)")
    assert stop.error_kind == "http" and stop.attempts >= 2
    assert stop.t_ns < 0.5e9  # it did not sleep into the timeout first


async def test_leaving_open_stream_early_is_immediate() -> None:
    start = trio.current_time()
    async with open_stream(request(), provider="sim", simulator=FAST) as events:
        async for event in events:
            if isinstance(event, Delta):
                break
        await trio.sleep(0.2)  # the stream keeps publishing meanwhile
    assert trio.current_time() - start < 2  # not the bus's 5 s grace


async def test_a_timeout_during_a_retry_names_the_error_that_caused_it() -> None:
    answers = 0

    async def handler(req: HTTPRequest) -> HTTPResponse:
        nonlocal answers
        answers += 1
        if answers == 1:
            body = b'{"error": {"message": "Overloaded", "type": "server_error"}}'
            return HTTPResponse(
                503, [("content-type", "application/json"), ("retry-after", "0")], body
            )
        await trio.sleep(60)  # the retry hangs until the total timeout strikes
        return HTTPResponse(500)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_http, handler))
        _, events = await run(openai_at(f"http://127.0.0.1:{port}/v1"), request(), timeout=0.5)
        nursery.cancel_scope.cancel()
    stop = assert_session(events)
    assert stop.error == (
        "total timeout: the 0.5 s budget ran out after 2 attempts "
        "(last: openai returned HTTP 503: Overloaded (server_error))"
    )
    assert stop.error_kind == "total_timeout" and stop.attempts == 2


class _ConnectingTransport(httpx2.AsyncBaseTransport):
    """Connects the way trio's open_tcp_stream does: in a nursery of attempts."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        async with trio.open_nursery() as attempts:
            attempts.start_soon(trio.sleep_forever)
            attempts.start_soon(trio.sleep_forever)
        raise AssertionError("unreachable")


async def test_cancelled_while_connecting_is_a_cancelled_stop_not_an_internal_error(
    autojump_clock: Any,
) -> None:
    """Cancelling a nursery of connection attempts raises a *group* of Cancelled."""
    seen: list[Event] = []
    async with httpx2.AsyncClient(transport=_ConnectingTransport()) as client:
        with trio.move_on_after(1) as scope:
            async with open_bus() as bus:
                bus.subscribe(seen.append)
                await stream(bus, "hi", provider=openai_at("http://x/v1"), client=client)
    assert scope.cancelled_caught
    stop = assert_session(seen)
    assert (stop.reason, stop.error, stop.error_kind) == ("cancelled", None, None)


async def test_a_key_in_the_base_url_query_goes_there_and_never_shows() -> None:
    """The endpoint was appended after the query: the key went to the wrong path, and the
    server's 404, echoing the URL, showed it."""
    key = "AIzaSy-QUERY-KEY-0123456789"
    echo = f'{{"error": {{"message": "Invalid URL (POST /v1/chat/completions?key={key})"}}}}'
    canned = Canned(echo.encode(), status=404, headers=(("content-type", "application/json"),))
    async with serve_canned({"/v1/chat/completions": canned}) as server:
        config = ProviderConfig("openai", "openai", f"{server.url}/v1?key={key}", "m")
        _, events = await run(config, request(), retries=0)
    assert server.requests[0].path == f"/v1/chat/completions?key={key}"
    stop = assert_session(events)
    assert stop.error.endswith("(POST /v1/chat/completions?key=[redacted]")
    assert key[:12] not in repr(events)
