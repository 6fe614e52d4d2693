"""Exceptions raised by streambus.

The tree::

    StreambusError
    ├── ConfigError              – a provider cannot be used as configured (missing key, bad URL)
    ├── ProtocolError            – a stream broke the rules of its format
    │   ├── LocalProtocolError   – the caller misused a sans-I/O object (fed after it ended)
    │   └── RemoteProtocolError  – the peer sent bytes we must not accept (bad UTF-8, oversize)
    └── ProviderError            – the provider answered an HTTP error instead of a stream

A stream that fails does not raise to subscribers: it ends with a ``stop`` event of reason
``error`` whose ``error`` is one line naming the cause (never a credential) and whose
``error_kind`` classifies it (a timeout, a broken connection, an HTTP error…; see
``streambus.events.ErrorKind``).

Lifecycle errors of the bus reuse trio's vocabulary (``trio.ClosedResourceError``,
``trio.BrokenResourceError``) instead of inventing ours.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "LocalProtocolError",
    "ProtocolError",
    "ProviderError",
    "RemoteProtocolError",
    "StreambusError",
]


class StreambusError(Exception):
    """Base class of every error streambus raises on purpose."""


class ConfigError(StreambusError):
    """A provider cannot be used as configured."""


class ProtocolError(StreambusError):
    """A stream broke the rules of its format. Abstract: raise a subclass."""


class LocalProtocolError(ProtocolError):
    """The caller used a sans-I/O object wrongly (for example fed it after it ended)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something we must not accept. The object that raised stays broken."""


class ProviderError(StreambusError):
    """The provider answered with an HTTP error status instead of a stream."""

    def __init__(
        self,
        provider: str,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        self.message = message
        self.error_type = error_type
        self.retry_after = retry_after
        detail = f"{message} ({error_type})" if error_type else message
        super().__init__(f"{provider} returned HTTP {status}: {detail}")
