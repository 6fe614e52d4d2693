"""The HTTP client side: send one request, read its stream, publish its events. The I/O edge.

Everything stateful about the *format* lives in the sans-I/O decoder and normalizer; this module
only moves bytes (httpx2 under trio), reads the clock, and guarantees the session's contract
whatever happens: ``start`` first, exactly one ``stop`` last, also when the connection fails,
the total timeout runs out, or the caller is cancelled (then ``stop`` is published shielded,
so every subscriber still hears it).

Each network read becomes one published batch: that is what keeps the bus cheap.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
import os
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import httpx2
import msgspec
import trio

from streambus.bus import Bus, Subscription, open_bus
from streambus.errors import ProtocolError, ProviderError, StreambusError
from streambus.events import ErrorKind, Event, Stop
from streambus.message import Message, MessageBuilder
from streambus.normalizers import Normalizer
from streambus.providers import (
    ProviderConfig,
    Request,
    parse_error_body,
    redact,
    resolve_provider,
    scrub,
)
from streambus.retry import RETRY_AFTER_CAP, RETRY_ERROR_TYPES, RETRY_STATUSES, backoff
from streambus.sse import SSEDecoder
from streambus.timeouts import DEFAULT_TIMEOUTS, Timeouts, Watchdog

if TYPE_CHECKING:
    from streambus.tools import ToolOutcome

__all__ = ["new_session_id", "open_stream", "stream"]

logger = logging.getLogger("streambus")

_ERROR_BODY_LIMIT: Final = 64 * 1024


def new_session_id() -> str:
    """A 24-hex-digit id that sorts by creation time (ms) and is unique without coordination."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}"


class _NotAStream(ProtocolError):
    """The server answered 2xx with something other than an event stream."""


async def stream(
    bus: Bus,
    request: Request | str,
    *,
    provider: ProviderConfig | str = "auto",
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    client: httpx2.AsyncClient | None = None,
    timeout: float | None = None,
    timeouts: Timeouts | None = None,
    retries: int = 2,
    session: str | None = None,
    simulator: Any = None,
    conversation: str | None = None,
    turn: int = 0,
    tool_results: Sequence[ToolOutcome] = (),
) -> Message:
    """Stream one request onto ``bus`` and return the assembled message.

    ``provider`` is ``"auto"`` (OpenAI if ``OPENAI_API_KEY`` is set, else Anthropic if
    ``ANTHROPIC_API_KEY`` is, else the simulator), ``"sim"``, ``"openai"``, ``"anthropic"`` or a
    resolved :class:`ProviderConfig`. With ``"sim"`` and no base URL an in-process simulator is
    started for the duration (``simulator`` is its ``SimulatorConfig``).

    Never raises for a failed stream: the returned message's ``stop`` says what happened
    (reason ``error``, a one-line ``error`` and its ``error_kind``). Cancellation propagates
    after ``stop`` with reason ``cancelled`` was published. ``timeouts`` sets the connect,
    first-token, idle, stall and total budgets (:class:`~streambus.timeouts.Timeouts`; its
    defaults when ``None``); ``timeout`` is a shortcut that sets only the total, in seconds.
    ``retries`` counts extra attempts on connection errors, retryable statuses (429, 5xx,
    529…) and in-stream overload errors, only before any content arrived, with exponential
    backoff and full jitter honouring ``retry-after`` (see :mod:`streambus.retry`).
    ``conversation``, ``turn`` and ``tool_results`` are for one turn of a
    tool-calling conversation (see :func:`streambus.conversation.converse`): the outcomes are
    published as ``tool_result`` events right after ``start``.
    """
    if isinstance(request, str):
        request = Request.from_prompt(request)
    budgets = timeouts or DEFAULT_TIMEOUTS
    if timeout is not None:
        budgets = msgspec.structs.replace(budgets, total=timeout)
    where = {"model": model, "base_url": base_url, "api_key": api_key}
    async with open_provider(provider, simulator=simulator, **where) as config:
        runner = _Session(
            bus,
            config,
            request,
            session or new_session_id(),
            budgets,
            retries,
            conversation=conversation,
            turn=turn,
            tool_results=tool_results,
        )
        if client is not None:
            return await runner.run(client)
        # Building a TLS context costs ~50 ms; share one per process. Plain-http servers (the
        # simulator, local gateways) need none: verify=False only skips building it.
        verify: ssl.SSLContext | bool = _tls_context() if config.url.startswith("https:") else False
        async with httpx2.AsyncClient(verify=verify) as own_client:
            return await runner.run(own_client)


@asynccontextmanager
async def open_provider(
    provider: ProviderConfig | str = "auto",
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    simulator: Any = None,
) -> AsyncIterator[ProviderConfig]:
    """The provider resolved and ready to send to, for the duration of the block.

    With ``"sim"`` and no base URL, an in-process simulator (``simulator`` is its
    ``SimulatorConfig``) runs for the block: one for a whole conversation, not one per turn.
    """
    config = (
        provider
        if isinstance(provider, ProviderConfig)
        else resolve_provider(provider, model=model, base_url=base_url, api_key=api_key)
    )
    if config.base_url is not None:
        yield config
        return
    from streambus.simulator import open_simulator

    async with open_simulator(simulator) as sim:
        yield config.with_base_url(sim.base_url)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx2.create_ssl_context()


def opening_events(
    normalizer: Normalizer,
    config: ProviderConfig,
    body: dict[str, Any],
    *,
    conversation: str | None,
    turn: int,
    tool_results: Sequence[ToolOutcome],
) -> list[Event]:
    """A session's first events: ``start`` (where, when, and what is sent, credentials
    scrubbed), then one ``tool_result`` per outcome the request carries, all at ``t_ns`` 0."""
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    start = normalizer.start(
        host=config.host,
        started_at=started_at,
        request=scrub(body),
        conversation=conversation,
        turn=turn,
    )
    results = [
        normalizer.tool_result(
            0,
            index=o.index,
            id=o.id,
            name=o.name,
            content=o.content,
            error=o.error,
            duration_ns=o.duration_ns,
        )
        for o in tool_results
    ]
    return [start, *results]


class _Failure(NamedTuple):
    """A failed attempt, not yet published: the caller decides between retrying and the end.

    ``events`` are what the normalizer already made of it (an in-stream error, or a stream
    that ended early), held back in case the attempt is retried.
    """

    kind: ErrorKind
    message: str
    retryable: bool = False
    retry_after: float | None = None
    events: list[Event] | None = None


class _Session:
    def __init__(
        self,
        bus: Bus,
        config: ProviderConfig,
        request: Request,
        session: str,
        timeouts: Timeouts,
        retries: int,
        *,
        conversation: str | None,
        turn: int,
        tool_results: Sequence[ToolOutcome],
    ) -> None:
        self.bus = bus
        self.config = config
        self.request = request
        self.timeouts = timeouts
        self.retries = max(0, retries)
        self.normalizer = config.normalizer(session, request.model)
        self.builder = MessageBuilder()
        self._t0 = 0.0
        self._host = config.host
        self._body = config.body(request)
        self._deadline = math.inf
        self._last_error: str | None = None
        self.conversation = conversation
        self.turn = turn
        self.tool_results = tool_results
        # Ours are the idle, first-token and stall timeouts (Watchdog); httpx2 only connects.
        connect = timeouts.connect
        self._http_timeout = httpx2.Timeout(connect=connect, read=None, write=None, pool=connect)

    def _now(self) -> int:
        return int((trio.current_time() - self._t0) * 1e9)

    async def _publish(self, events: list[Event], watchdog: Watchdog | None = None) -> None:
        """Publish ``events``; while a full mailbox makes us wait, ``watchdog`` is paused (a
        slow subscriber is not a silent server)."""
        if events:
            last = events[-1]
            if type(last) is Stop and last.error:  # provider texts may echo a key
                events[-1] = msgspec.structs.replace(
                    last, error=redact(last.error, self.config.secrets)
                )
            self.builder.add(events)
            bus, batch = self.bus, tuple(events)
            full = bus._offer(batch)
            if full:
                with watchdog.paused() if watchdog is not None else nullcontext():
                    await bus._wait_full(batch, full)

    async def _publish_final(self, events: list[Event]) -> None:
        """Publish the last word even while cancelled, but never hang on a stuck subscriber."""
        with trio.CancelScope(shield=True), trio.move_on_after(self.bus.grace):
            await self._publish(events)

    async def run(self, client: httpx2.AsyncClient) -> Message:
        self._t0 = trio.current_time()
        opening = opening_events(
            self.normalizer,
            self.config,
            self._body,
            conversation=self.conversation,
            turn=self.turn,
            tool_results=self.tool_results,
        )
        total = self.timeouts.total
        self._deadline = self._t0 + (math.inf if total is None else total)
        try:
            # start is inside: a subscriber that got it must get the stop too
            await self._publish(opening)
            with trio.move_on_at(self._deadline) as scope:
                await self._attempts(client)
        except BaseException as exc:
            if self.normalizer.stopped and self.builder.message.stop is None:
                self.normalizer.abandon_attempt()  # its stop was held back, never published
            if _is_cancellation(exc):
                await self._publish_final(self.normalizer.cancel(self._now()))
            else:  # a bug: still end the session before propagating
                message = f"internal error: {type(exc).__name__}: {exc}"
                await self._publish_final(self.normalizer.fail(message, self._now(), "internal"))
            raise
        if scope.cancelled_caught:
            stop = self.normalizer.fail(self._timed_out(), self._now(), "total_timeout")
            await self._publish_final(stop)
        return self.builder.message

    def _timed_out(self) -> str:
        message = f"total timeout: the {self.timeouts.total:g} s budget ran out"
        attempts = self.normalizer.attempts
        if self._last_error is not None and not self.normalizer.content_seen:
            message += f" after {_plural(attempts, 'attempt')} (last: {self._last_error})"
        return message

    async def _attempts(self, client: httpx2.AsyncClient) -> None:
        body = msgspec.json.encode(self._body)
        normalizer = self.normalizer
        for attempt in range(self.retries + 1):
            normalizer.begin_attempt()
            failure = await self._attempt(client, body)
            if failure is None:
                return
            message = redact(failure.message, self.config.secrets)
            self._last_error = message
            if failure.retryable and attempt < self.retries and not normalizer.content_seen:
                delay = backoff(attempt, failure.retry_after)
                if delay is None:
                    message += (
                        f" (not retried: the server asked to wait {failure.retry_after:g} s, "
                        f"more than {RETRY_AFTER_CAP:g} s)"
                    )
                elif trio.current_time() + delay >= self._deadline:
                    # Sleeping past the budget would only hide this error behind a timeout.
                    total = self.timeouts.total
                    message += f" (no time left to retry within the {total:g} s timeout)"
                else:
                    logger.warning(
                        "%s; retrying in %.1f s (attempt %d of %d)",
                        message,
                        delay,
                        attempt + 2,
                        self.retries + 1,
                    )
                    normalizer.abandon_attempt()  # a cancel while sleeping must find it open
                    await trio.sleep(delay)
                    continue
            if normalizer.attempts > 1:
                message += f" (gave up after {normalizer.attempts} attempts)"
            if failure.events:  # the normalizer's own stop, held back for a retry
                stop = failure.events[-1]
                assert type(stop) is Stop
                failure.events[-1] = msgspec.structs.replace(stop, error=message)
                await self._publish(failure.events)
            else:
                await self._publish(normalizer.fail(message, self._now(), failure.kind))
            return

    async def _attempt(self, client: httpx2.AsyncClient, body: bytes) -> _Failure | None:
        """One request. ``None`` when the session ended (its ``stop`` published), else why not.

        Runs under the watchdog (idle, first-token, stall); the total budget is the caller's.
        """
        host, timeouts = self._host, self.timeouts
        watchdog = Watchdog(timeouts, host, trio.current_time())
        with watchdog.scope:
            try:
                return await self._exchange(client, body, watchdog)
            except ProviderError as exc:
                return _Failure("http", str(exc), exc.status in RETRY_STATUSES, exc.retry_after)
            except (httpx2.ConnectTimeout, httpx2.PoolTimeout):
                message = f"connect timeout: no connection to {host} within {timeouts.connect:g} s"
                return _Failure("connect_timeout", message, retryable=True)
            except httpx2.ConnectError as exc:
                return _Failure("connection", f"cannot connect to {host}: {_describe(exc)}", True)
            except httpx2.DecodingError as exc:
                message = f"cannot decode the body {host} sent: {_describe(exc)}"
                return _Failure("protocol", message)
            except httpx2.HTTPError as exc:
                early = not self.normalizer.content_seen
                what = "before any content" if early else "mid-stream"
                message = f"connection to {host} broke {what}: {_describe(exc)}"
                return _Failure("connection", message, retryable=early)
            except StreambusError as exc:
                return _Failure("protocol", str(exc))
        kind, message = watchdog.fired()
        # A silent connection before any content is as good as a broken one; a slow model
        # (first token) is not retried: it would only be slow again.
        early = not watchdog.content_seen
        return _Failure(kind, message, retryable=kind == "idle_timeout" and early)

    async def _exchange(
        self, client: httpx2.AsyncClient, body: bytes, watchdog: Watchdog
    ) -> _Failure | None:
        config, normalizer = self.config, self.normalizer
        headers = config.headers()
        async with client.stream(
            "POST", config.url, headers=headers, content=body, timeout=self._http_timeout
        ) as response:
            watchdog.on_bytes(trio.current_time())
            if response.status_code >= 400:
                raw = await _read_limited(response, _ERROR_BODY_LIMIT)
                raise parse_error_body(config.name, response.status_code, raw, response.headers)
            content_type = response.headers.get("content-type", "")
            if content_type and not content_type.startswith("text/event-stream"):
                raw = await _read_limited(response, 300)
                snippet = " ".join(raw.decode("utf-8", "replace").split())[:200]
                raise _NotAStream(
                    f"expected an event stream (text/event-stream) but {self._host} sent "
                    f"{content_type}: {snippet}"
                )
            decoder = SSEDecoder()
            # aclosing: we stop reading at the terminator; the generator must not be left open.
            async with aclosing(response.aiter_bytes()) as chunks:
                async for chunk in chunks:
                    now = trio.current_time()
                    watchdog.on_bytes(now)
                    sse_events = decoder.feed(chunk)  # a ProtocolError ends the attempt
                    if not sse_events:
                        continue
                    before = normalizer.content_events
                    events = normalizer.receive(sse_events, int((now - self._t0) * 1e9))
                    if not normalizer.content_seen:
                        if not normalizer.stopped:
                            continue  # nothing but usage so far: it goes out with stop
                        stop = events[-1]
                        assert type(stop) is Stop
                        if stop.reason == "error":  # an in-stream error before any content
                            assert stop.error_kind is not None
                            retry = not normalizer.provider_error.isdisjoint(RETRY_ERROR_TYPES)
                            return _Failure(stop.error_kind, stop.error or "", retry, None, events)
                        # else an answer without content (a budget spent on reasoning): done
                    elif normalizer.content_events > before:
                        watchdog.on_content(now)
                    await self._publish(events, watchdog)
                    if normalizer.stopped:
                        return None
            decoder.close()
            events = normalizer.end_of_stream(self._now(), mid_event=decoder.truncated)
            if not normalizer.content_seen:  # ended before any content: as good as a drop
                return _Failure("truncated", _stop_error(events), True, None, events)
            await self._publish(events)
            return None


def _is_cancellation(exc: BaseException) -> bool:
    """Cancelled or Ctrl-C, also inside a group: trio's ``open_tcp_stream`` raises a group of
    ``Cancelled`` when cancelled while connecting."""
    if isinstance(exc, trio.Cancelled | KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(lambda e: isinstance(e, trio.Cancelled | KeyboardInterrupt)) is not None
    return False


def _stop_error(events: list[Event]) -> str:
    stop = events[-1]
    assert type(stop) is Stop
    return stop.error or ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _read_limited(response: httpx2.Response, limit: int) -> bytes:
    data = bytearray()
    async with aclosing(response.aiter_bytes()) as chunks:
        async for chunk in chunks:
            data += chunk
            if len(data) >= limit:
                break
    return bytes(data[:limit])


@asynccontextmanager
async def open_stream(request: Request | str, **kwargs: Any) -> AsyncIterator[Subscription]:
    """Stream one request and iterate its events: the SDK-style shortcut.

    ``async with open_stream("hi") as events: async for event in events: ...`` — iteration
    ends after the session's ``stop``. Leaving the block early cancels the stream.
    Keyword arguments are those of :func:`stream`.
    """
    async with open_bus() as bus, trio.open_nursery() as nursery:
        events = bus.subscribe(name="open_stream")

        async def drive() -> None:
            try:
                await stream(bus, request, **kwargs)
            finally:
                await bus.aclose()

        nursery.start_soon(drive)
        try:
            yield events
        finally:
            events.close()  # left early: nobody reads it any more, so never wait for it
            nursery.cancel_scope.cancel()
