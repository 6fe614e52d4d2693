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
import random
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import httpx2
import msgspec
import trio

from streambus.bus import Bus, Subscription, open_bus
from streambus.errors import ProtocolError, ProviderError, StreambusError, TransportError
from streambus.events import Event, Stop
from streambus.message import Message, MessageBuilder
from streambus.providers import (
    ProviderConfig,
    Request,
    parse_error_body,
    redact,
    resolve_provider,
    scrub,
)
from streambus.sse import SSEDecoder

if TYPE_CHECKING:
    from streambus.tools import ToolOutcome

__all__ = ["RETRY_STATUSES", "new_session_id", "open_stream", "stream"]

logger = logging.getLogger("streambus")

RETRY_STATUSES: Final = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
"""HTTP statuses worth another attempt, before any content arrived."""
_BACKOFF_BASE: Final = 0.5
_BACKOFF_CAP: Final = 30.0
_ERROR_BODY_LIMIT: Final = 64 * 1024
DEFAULT_TIMEOUT: Final = httpx2.Timeout(connect=10.0, read=300.0, write=30.0, pool=10.0)
"""Connect 10 s; 300 s without a byte is a dead stream (reasoning models think for minutes)."""


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
    (reason ``error`` with a one-line ``error``). Cancellation propagates after ``stop`` with
    reason ``cancelled`` was published. ``timeout`` is the whole session's budget in seconds;
    ``retries`` counts extra attempts on connection errors and retryable statuses (429, 5xx,
    529…) before any content arrived, with exponential backoff and full jitter honouring
    ``retry-after``. ``conversation``, ``turn`` and ``tool_results`` are for one turn of a
    tool-calling conversation (see :func:`streambus.conversation.converse`): the outcomes are
    published as ``tool_result`` events right after ``start``.
    """
    if isinstance(request, str):
        request = Request.from_prompt(request)
    where = {"model": model, "base_url": base_url, "api_key": api_key}
    async with open_provider(provider, simulator=simulator, **where) as config:
        runner = _Session(
            bus,
            config,
            request,
            session or new_session_id(),
            timeout,
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
        async with httpx2.AsyncClient(timeout=DEFAULT_TIMEOUT, verify=verify) as own_client:
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


class _Session:
    def __init__(
        self,
        bus: Bus,
        config: ProviderConfig,
        request: Request,
        session: str,
        timeout: float | None,
        retries: int,
        *,
        conversation: str | None,
        turn: int,
        tool_results: Sequence[ToolOutcome],
    ) -> None:
        self.bus = bus
        self.config = config
        self.request = request
        self.timeout = timeout
        self.retries = max(0, retries)
        self.normalizer = config.normalizer(session, request.model)
        self.builder = MessageBuilder()
        self._t0 = 0.0
        self._published = 0
        self._host = config.host
        self._body = config.body(request)
        self._deadline = math.inf
        self._last_error: str | None = None
        self._attempt_count = 0
        self.conversation = conversation
        self.turn = turn
        self.tool_results = tool_results

    def _now(self) -> int:
        return int((trio.current_time() - self._t0) * 1e9)

    async def _publish(self, events: list[Event]) -> None:
        if events:
            last = events[-1]
            if type(last) is Stop and last.error:  # provider texts may echo a key
                events[-1] = msgspec.structs.replace(
                    last, error=redact(last.error, self.config.secrets)
                )
            self.builder.add(events)
            self._published += len(events)
            await self.bus.publish(events)

    async def _publish_final(self, events: list[Event]) -> None:
        """Publish the last word even while cancelled, but never hang on a stuck subscriber."""
        with trio.CancelScope(shield=True), trio.move_on_after(self.bus.grace):
            await self._publish(events)

    async def run(self, client: httpx2.AsyncClient) -> Message:
        self._t0 = trio.current_time()
        started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
        start = self.normalizer.start(
            host=self._host,
            started_at=started_at,
            request=scrub(self._body),
            conversation=self.conversation,
            turn=self.turn,
        )
        results = [
            self.normalizer.tool_result(
                0,
                index=o.index,
                id=o.id,
                name=o.name,
                content=o.content,
                error=o.error,
                duration_ns=o.duration_ns,
            )
            for o in self.tool_results
        ]
        budget = math.inf if self.timeout is None else self.timeout
        self._deadline = self._t0 + budget
        try:
            # start is inside: a subscriber that got it must get the stop too
            await self._publish([start, *results])
            with trio.move_on_at(self._deadline) as scope:
                await self._attempts(client)
        except (trio.Cancelled, KeyboardInterrupt):
            await self._publish_final(self.normalizer.cancel(self._now()))
            raise
        except BaseException as exc:  # a bug: still end the session before propagating
            message = f"internal error: {type(exc).__name__}: {exc}"
            await self._publish_final(self.normalizer.fail(message, self._now()))
            raise
        if scope.cancelled_caught:
            await self._publish_final(self.normalizer.fail(self._timed_out(), self._now()))
        return self.builder.message

    def _timed_out(self) -> str:
        message = f"timed out: the total timeout of {self.timeout:g} s ran out"
        if self._last_error is not None:
            message += f" after {self._attempt_count} attempts (last: {self._last_error})"
        return message

    async def _attempts(self, client: httpx2.AsyncClient) -> None:
        body = msgspec.json.encode(self._body)
        for attempt in range(self.retries + 1):
            retryable = False
            wait: float | None = None
            self._attempt_count = attempt + 1
            try:
                await self._attempt(client, body)
                return
            except ProviderError as exc:
                error: Exception = exc
                retryable, wait = exc.status in RETRY_STATUSES, exc.retry_after
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                error = TransportError(f"cannot connect to {self._host}: {_describe(exc)}")
                retryable = True
            except httpx2.ReadTimeout as exc:
                error = TransportError(f"read timeout: {self._host} sent nothing: {_describe(exc)}")
            except httpx2.HTTPError as exc:
                what = "mid-stream" if self._published > 1 else "before any content"
                error = TransportError(f"connection to {self._host} broke {what}: {_describe(exc)}")
                retryable = self._published <= 1
            except StreambusError as exc:
                error = exc
            message = redact(str(error), self.config.secrets)
            self._last_error = message
            delay = _backoff(attempt, wait)
            may_retry = retryable and self._published <= 1 and attempt < self.retries
            if may_retry and trio.current_time() + delay >= self._deadline:
                # Sleeping past the budget would only hide this error behind a timeout.
                message += f" (no time left to retry within the {self.timeout:g} s timeout)"
            elif may_retry:
                logger.warning(
                    "%s; retrying in %.1f s (attempt %d of %d)",
                    message,
                    delay,
                    attempt + 2,
                    self.retries + 1,
                )
                await trio.sleep(delay)
                continue
            await self._publish(self.normalizer.fail(message, self._now()))
            return

    async def _attempt(self, client: httpx2.AsyncClient, body: bytes) -> None:
        config, normalizer = self.config, self.normalizer
        headers = config.headers()
        async with client.stream("POST", config.url, headers=headers, content=body) as response:
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
                    now = self._now()
                    try:
                        sse_events = decoder.feed(chunk)
                    except ProtocolError as exc:
                        await self._publish(normalizer.fail(str(exc), now))
                        return
                    if sse_events:
                        await self._publish(normalizer.receive(sse_events, now))
                        if normalizer.stopped:
                            return
            decoder.close()
            await self._publish(normalizer.end_of_stream(self._now(), mid_event=decoder.truncated))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _backoff(attempt: int, retry_after: float | None) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base·2^attempt)]."""
    if retry_after is not None:
        return min(retry_after, _BACKOFF_CAP)
    return random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))


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
