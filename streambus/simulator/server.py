"""The provider simulator: a real loopback HTTP server speaking OpenAI and Anthropic.

It lets the whole client path (HTTP, SSE, normalizers) run for real without an API key, and
lets tests pick failures per request. Endpoints:

- ``POST /v1/chat/completions``: OpenAI Chat Completions (streamed, or one JSON completion)
- ``POST /v1/messages``: Anthropic Messages (streamed, or one JSON message)
- ``GET /v1/models``: a one-model list, Anthropic-shaped when ``anthropic-version`` is sent

A request body may carry ``"simulator": {...}`` with any ``SimulatorConfig`` fields, applied
over the server's config for that request only (the official SDKs pass it with
``extra_body``). Credentials are accepted whatever they are and never recorded or logged.

Faults that strike before the response body (``http_error``, ``wrong_content_type`` and any
``at="headers"``) are decided here; the ones inside a stream belong to ``pacing``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import msgspec
import trio

from . import anthropic_api, openai_api
from ._http import Disconnect, HTTPRequest, HTTPResponse, gzip_response, serve_http
from .config import Fault, SimulatorConfig, merge_config
from .plan import BadRequest, derive_id, make_plan, request_key

__all__ = ["Fault", "Simulator", "SimulatorConfig", "open_simulator", "serve"]

log = logging.getLogger("streambus.simulator")

Provider = Literal["openai", "anthropic"]
_ROUTES: dict[tuple[str, str], Provider] = {
    ("POST", "/v1/chat/completions"): "openai",
    ("POST", "/v1/messages"): "anthropic",
}
# What a captive portal or a misconfigured proxy answers in place of the API.
_PORTAL_TYPE = ("content-type", "text/html; charset=utf-8")
_PORTAL_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to the network</title></head>\n"
    b"<body><h1>Sign in required</h1><p>Log in to continue to the internet.</p></body></html>\n"
)


class Simulator:
    """A simulator's address and state; ``handle`` is its HTTP handler.

    ``config`` may be replaced while running (the next request uses it). ``requests`` keeps
    every parsed JSON body received, in order, for tests to inspect. A fault with ``times``
    strikes the first ``times`` requests of each body only; the counts live here, so a
    client's retry of the same body is served normally once they run out.
    """

    def __init__(self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1") -> None:
        self.config = config or SimulatorConfig()
        self.host = host
        self.port = 0
        self.requests: list[Any] = []
        self._strikes: dict[tuple[str, bytes], int] = {}

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI convention: the base includes ``/v1``."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Anthropic convention: the base has no version."""
        return self.url

    async def handle(self, request: HTTPRequest) -> HTTPResponse:
        path = request.path.partition("?")[0].rstrip("/")
        log.debug("simulator %s %s", request.method, path)
        provider = _ROUTES.get((request.method, path))
        if provider is not None:
            return await self._generate(provider, request)
        flavour: Provider = "anthropic" if "anthropic-version" in request.headers else "openai"
        if path == "/v1/models" and request.method == "GET":
            model = self.config.model
            if flavour == "anthropic":
                return anthropic_api.models_response(model)
            return openai_api.models_response(model)
        known = {route_path for _, route_path in _ROUTES} | {"/v1/models"}
        status = 405 if path in known else 404
        if path.endswith("/messages"):
            flavour = "anthropic"
        message = f"Invalid URL ({request.method} {request.path})"
        return _error(flavour, status, message, request_id=_request_id(request.body))

    async def _generate(self, provider: Provider, request: HTTPRequest) -> HTTPResponse:
        request_id = _request_id(request.body)
        try:
            body = msgspec.json.decode(request.body)
        except msgspec.DecodeError:
            message = "We could not parse the JSON body of your request."
            return _error(provider, 400, message, request_id=request_id)
        self.requests.append(body)
        config = self.config
        if isinstance(body, dict) and "simulator" in body:
            try:
                config = merge_config(config, body["simulator"])
            except (msgspec.ValidationError, ValueError) as exc:
                return _error(provider, 400, f"simulator: {exc}", request_id=request_id)
        config = self._count_strike(body, config)
        response = await self._answer(provider, body, config, request_id)
        return gzip_response(response) if config.gzip else response

    def _count_strike(self, body: Any, config: SimulatorConfig) -> SimulatorConfig:
        """``config``, without its fault once it struck ``times`` requests of this body."""
        fault = config.fault
        if fault is None or fault.times is None:
            return config
        key = (request_key(body, config.seed), msgspec.json.encode(fault))
        struck = self._strikes.get(key, 0)
        if struck >= fault.times:
            return msgspec.structs.replace(config, fault=None)
        self._strikes[key] = struck + 1
        return config

    async def _answer(
        self, provider: Provider, body: Any, config: SimulatorConfig, request_id: str
    ) -> HTTPResponse:
        fault = config.fault
        if fault is not None and (
            fault.at == "headers" or fault.kind in ("http_error", "wrong_content_type")
        ):
            if fault.kind == "disconnect":
                raise Disconnect  # before any response byte
            if fault.kind == "http_error":
                return _error(
                    provider,
                    fault.status,
                    fault.message,
                    request_id=request_id,
                    retry_after=fault.retry_after,
                    error_type=fault.error_type,
                )
            if fault.kind == "wrong_content_type":
                return HTTPResponse(200, [_PORTAL_TYPE], _PORTAL_PAGE)
            await trio.sleep(fault.stall_seconds)  # a stall: no head yet; then a clean answer
            config = msgspec.structs.replace(config, fault=None)
        try:
            if provider == "openai":
                return await self._openai(body, config, request_id)
            return await self._anthropic(body, config, request_id)
        except BadRequest as exc:
            return _error(provider, 400, exc.message, request_id=request_id, param=exc.param)

    async def _openai(self, body: Any, config: SimulatorConfig, request_id: str) -> HTTPResponse:
        parsed = openai_api.parse_request(body)
        plan = make_plan(parsed.conversation, config, request_key(body, config.seed))
        if parsed.stream:
            return openai_api.stream_response(plan, parsed, config, request_id)
        data, tokens = openai_api.completion(plan, parsed, config)
        headers = [("content-type", "application/json"), ("x-request-id", request_id)]
        return await _whole(data, tokens, headers, config)

    async def _anthropic(self, body: Any, config: SimulatorConfig, request_id: str) -> HTTPResponse:
        parsed = anthropic_api.parse_request(body)
        plan = make_plan(parsed.conversation, config, request_key(body, config.seed))
        if parsed.stream:
            return anthropic_api.stream_response(plan, parsed, config, request_id)
        data, tokens = anthropic_api.message(plan, parsed)
        headers = [("content-type", "application/json"), ("request-id", request_id)]
        return await _whole(data, tokens, headers, config)


def _request_id(body: bytes) -> str:
    return derive_id("req_", 24, "request", body)


def _error(
    provider: Provider,
    status: int,
    message: str,
    *,
    request_id: str,
    retry_after: float | None = None,
    param: str | None = None,
    error_type: str | None = None,
) -> HTTPResponse:
    if provider == "anthropic":
        return anthropic_api.error_response(
            status, message, request_id=request_id, retry_after=retry_after, error_type=error_type
        )
    return openai_api.error_response(
        status,
        message,
        request_id=request_id,
        retry_after=retry_after,
        param=param,
        error_type=error_type,
    )


async def _disconnect_now() -> AsyncIterator[bytes]:
    raise Disconnect
    yield b""  # pragma: no cover - makes this an async generator


async def _whole(
    data: bytes, tokens: int, headers: list[tuple[str, str]], config: SimulatorConfig
) -> HTTPResponse:
    """A non-streaming answer: wait as long as generating it would take, then send it whole.
    Of the in-body faults only ``disconnect``, ``stall`` and ``malformed_json`` make sense
    here (whatever their phase); the others are ignored."""
    delay = config.ttft
    if config.tokens_per_second > 0:
        delay += tokens / config.tokens_per_second
    await trio.sleep(delay)
    fault = config.fault
    if fault is not None:
        if fault.kind == "disconnect":
            return HTTPResponse(200, headers, _disconnect_now())
        if fault.kind == "stall":
            await trio.sleep(fault.stall_seconds)
        if fault.kind == "malformed_json":
            data = b"{not json"
    return HTTPResponse(200, headers, data)


async def serve(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[Simulator] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a simulator until cancelled; ``task_status.started`` reports the ``Simulator``."""
    simulator = Simulator(config, host=host)
    async with trio.open_nursery() as nursery:
        simulator.port = await nursery.start(
            functools.partial(serve_http, simulator.handle, host=host, port=port)
        )
        task_status.started(simulator)


@asynccontextmanager
async def open_simulator(
    config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Simulator]:
    """Run a simulator for the duration of the block, in the caller's task tree.

    ``port=0`` picks a free port; read it from ``simulator.port`` or use ``base_url``.
    Nothing is left running after the block exits.
    """
    async with trio.open_nursery() as nursery:
        simulator: Simulator = await nursery.start(functools.partial(serve, config, host, port))
        try:
            yield simulator
        finally:
            nursery.cancel_scope.cancel()
