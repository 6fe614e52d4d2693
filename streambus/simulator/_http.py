"""A minimal HTTP/1.1 server on h11 and trio.

Why our own: the simulator must stream each SSE event as its own chunk the moment it is made
(no buffering), drop a connection mid-body on purpose, and run inside the caller's nursery.
A framework would hide exactly the bytes we want to control.

One task per connection: read a request (body read fully), call the handler, write the
response, repeat while keep-alive holds. A streamed body is sent with chunked transfer
encoding, one chunk per item. While the handler runs and its response is being written a
watcher reads the socket, so a client that hangs up during a long pause (a stall fault, even
one before the response head) ends the exchange at once.
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import h11
import msgspec
import trio

__all__ = [
    "Canned",
    "CannedServer",
    "Disconnect",
    "HTTPRequest",
    "HTTPResponse",
    "Handler",
    "canned_handler",
    "gzip_response",
    "serve_canned",
    "serve_http",
]

log = logging.getLogger("streambus.simulator")

MAX_BODY_BYTES = 32 * 1024 * 1024
_READ_SIZE = 65536
_SERVER_HEADER = ("server", "streambus-simulator")


class Disconnect(Exception):
    """Raised by a response body iterator (or the handler itself) to drop the connection.

    The socket is closed without the terminating chunk, so the client sees a truncated body,
    exactly like a provider connection that broke; raised by the handler, the client gets no
    response byte at all. With ``partial``, a chunked body ends instead with a chunk cut in
    the middle: written raw past h11's framing, a chunk-size line announcing
    ``len(partial) + missing`` bytes (at least one more than follow), then only ``partial``.
    """

    def __init__(self, partial: bytes = b"", *, missing: int = 0) -> None:
        super().__init__("connection dropped on purpose")
        self.partial = partial
        self.missing = max(missing, 1) if partial else 0


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """One request, body read fully. Header names are lowercase; repeated headers are joined."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A response. ``bytes`` bodies get a Content-Length; iterators are sent chunked."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes | AsyncIterator[bytes] = b""


Handler = Callable[[HTTPRequest], Awaitable[HTTPResponse]]


def _json_error(status: int, message: str) -> HTTPResponse:
    body = msgspec.json.encode(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    )
    return HTTPResponse(status, [("content-type", "application/json")], body)


class _Connection:
    """The h11 state machine of one accepted socket, plus the I/O that drives it."""

    def __init__(self, stream: trio.abc.Stream, handler: Handler) -> None:
        self.stream = stream
        self.handler = handler
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self.peer_gone = False
        self.aborted = False
        self.chunked = False

    async def run(self) -> None:
        try:
            while True:
                try:
                    request = await self._read_request()
                except h11.RemoteProtocolError as exc:
                    await self._send_simple(_json_error(exc.error_status_hint, str(exc)))
                    return
                except _BodyTooLarge:
                    await self._send_simple(_json_error(413, "request body too large"))
                    return
                if request is None:
                    return
                await self._respond(functools.partial(self._call_handler, request))
                if self.peer_gone or self.aborted or self.conn.our_state is not h11.DONE:
                    return
                if self.conn.their_state is not h11.DONE:
                    return
                self.conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _receive(self) -> None:
        data = await self.stream.receive_some(_READ_SIZE)
        self.conn.receive_data(bytes(data))

    async def _read_request(self) -> HTTPRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if self.conn.they_are_waiting_for_100_continue:
                    await self._send(h11.InformationalResponse(status_code=100, headers=[]))
                try:
                    await self._receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise _BodyTooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return _make_request(head, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None
            else:  # pragma: no cover - PAUSED cannot happen while reading a request
                return None

    async def _call_handler(self, request: HTTPRequest) -> HTTPResponse:
        try:
            return await self.handler(request)
        except Disconnect:
            raise
        except Exception:
            path = request.path.partition("?")[0]  # a query may carry a key: never log it
            log.exception("simulator handler failed for %s %s", request.method, path)
            return _json_error(500, "internal simulator error")

    async def _send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await self.stream.send_all(data)

    async def _send_simple(self, response: HTTPResponse) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return

        async def fixed() -> HTTPResponse:
            return response

        with suppress(trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            await self._respond(fixed)

    async def _respond(self, make: Callable[[], Awaitable[HTTPResponse]]) -> None:
        """Make the response and write it, both watched for a client that hangs up; on return
        the connection may be reused only if both sides are DONE. Our own errors are caught
        inside the nursery so they never surface wrapped in an exception group."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_peer, nursery.cancel_scope)
            try:
                await self._write(await make())
            except Disconnect as exc:
                self.aborted = True
                if exc.partial:
                    await self._send_cut_chunk(exc.partial, exc.missing)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.peer_gone = True
            except Exception:
                log.exception("simulator response failed mid-body; dropping the connection")
                self.aborted = True
            finally:
                nursery.cancel_scope.cancel()

    async def _send_cut_chunk(self, partial: bytes, missing: int) -> None:
        """Bypass h11: a chunk-size line promising more than ``partial``, then ``partial``."""
        if self.conn.our_state is not h11.SEND_BODY:
            return  # no head sent yet: dropping the connection says it all
        head = f"{len(partial) + missing:x}\r\n".encode() if self.chunked else b""
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.send_all(head + partial)

    async def _watch_peer(self, scope: trio.CancelScope) -> None:
        """Notice a client that hangs up while we are writing (or pausing) a response."""
        try:
            while True:
                data = await self.stream.receive_some(_READ_SIZE)
                if not data:
                    break
                self.conn.receive_data(bytes(data))
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        self.peer_gone = True
        scope.cancel()

    async def _write(self, response: HTTPResponse) -> None:
        self.chunked = False
        headers = [(name.lower(), value) for name, value in response.headers]
        if not any(name == "server" for name, _ in headers):
            headers.append(_SERVER_HEADER)
        body = response.body
        if isinstance(body, bytes):
            headers = [
                (n, v) for n, v in headers if n not in ("content-length", "transfer-encoding")
            ]
            headers.append(("content-length", str(len(body))))
            await self._send(h11.Response(status_code=response.status, headers=headers))
            if body:
                await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
            return
        try:
            head = self.conn.send(h11.Response(status_code=response.status, headers=headers))
            self.chunked = b"\r\ntransfer-encoding: chunked\r\n" in (head or b"").lower()
            if head:
                await self.stream.send_all(head)
            async for chunk in body:
                if chunk:
                    await self._send(h11.Data(data=chunk))
            await self._send(h11.EndOfMessage())
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()


class _BodyTooLarge(Exception):
    pass


def gzip_response(response: HTTPResponse) -> HTTPResponse:
    """``response`` with ``content-encoding: gzip``: a bytes body compressed whole, a streamed
    one incrementally with a sync flush per item, so each event still arrives (and decodes)
    the moment it is made."""
    headers = [
        (name, value)
        for name, value in response.headers
        if name.lower() not in ("content-encoding", "content-length")
    ]
    headers.append(("content-encoding", "gzip"))
    if isinstance(response.body, bytes):
        packer = zlib.compressobj(wbits=31)
        body = packer.compress(response.body) + packer.flush()
        return HTTPResponse(response.status, headers, body)
    return HTTPResponse(response.status, headers, _gzip_stream(response.body))


async def _gzip_stream(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    packer = zlib.compressobj(wbits=31)
    try:
        async for piece in body:
            if piece:
                yield packer.compress(piece) + packer.flush(zlib.Z_SYNC_FLUSH)
        yield packer.flush()
    except Disconnect as exc:
        if not exc.partial:
            raise
        # The partial event compressed and flushed, still announced as longer than it is.
        whole = packer.compress(exc.partial) + packer.flush(zlib.Z_SYNC_FLUSH)
        raise Disconnect(whole, missing=exc.missing) from None
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()


def _make_request(head: h11.Request, body: bytes) -> HTTPRequest:
    headers: dict[str, str] = {}
    for raw_name, raw_value in head.headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return HTTPRequest(
        method=head.method.decode("ascii"),
        path=head.target.decode("latin-1"),
        headers=headers,
        body=body,
    )


async def serve_http(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` until cancelled. Reports the bound port via ``task_status.started``."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    if port == 0 and len(listeners) > 1:
        # Port 0 on a name with several addresses binds each to a different port: keep one.
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    bound = int(listeners[0].socket.getsockname()[1])

    async def on_connection(stream: trio.SocketStream) -> None:
        await _Connection(stream, handler).run()

    task_status.started(bound)
    await trio.serve_listeners(on_connection, listeners)


# --- canned responses (replaying recorded bytes) --------------------------------------------


@dataclass(frozen=True, slots=True)
class Canned:
    """Fixed bytes to serve for one path, to replay a recorded provider stream exactly.

    ``chunk_size`` None sends the body whole with a Content-Length; a number streams it with
    chunked encoding in pieces of that many bytes (1 splits every UTF-8 character), waiting
    ``delay`` seconds between pieces. ``abort`` drops the connection after the body instead of
    ending it, as a provider whose connection broke.
    """

    body: bytes
    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("content-type", "text/event-stream; charset=utf-8"),)
    chunk_size: int | None = None
    delay: float = 0.0
    abort: bool = False


async def _pieces(canned: Canned) -> AsyncIterator[bytes]:
    size = canned.chunk_size or len(canned.body) or 1
    for start in range(0, len(canned.body), size):
        if start and canned.delay > 0:
            await trio.sleep(canned.delay)
        yield canned.body[start : start + size]
    if canned.abort:
        raise Disconnect


def canned_handler(
    routes: Mapping[str, Canned], *, requests: list[HTTPRequest] | None = None
) -> Handler:
    """A handler serving ``routes`` (path without query → response) to any method.

    Received requests are appended to ``requests`` when given, so a test can check what the
    client sent.
    """

    async def handle(request: HTTPRequest) -> HTTPResponse:
        if requests is not None:
            requests.append(request)
        canned = routes.get(request.path.partition("?")[0])
        if canned is None:
            return _json_error(404, f"no canned response for {request.method} {request.path}")
        if canned.chunk_size is None and not canned.abort:
            return HTTPResponse(canned.status, canned.headers, canned.body)
        return HTTPResponse(canned.status, canned.headers, _pieces(canned))

    return handle


@dataclass(slots=True)
class CannedServer:
    """A running canned server: ``url`` is ``http://host:port`` with no path."""

    host: str
    port: int
    requests: list[HTTPRequest] = field(default_factory=list)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@asynccontextmanager
async def serve_canned(
    routes: Mapping[str, Canned], *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[CannedServer]:
    """Serve ``routes`` on loopback for the duration of the block.

    For example ``serve_canned({"/v1/chat/completions": Canned(recorded, chunk_size=1)})``
    and point a client at ``server.url + "/v1"``.
    """
    server = CannedServer(host=host, port=0)
    handler = canned_handler(routes, requests=server.requests)
    async with trio.open_nursery() as nursery:
        server.port = await nursery.start(
            functools.partial(serve_http, handler, host=host, port=port)
        )
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
