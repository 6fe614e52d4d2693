"""When a failed attempt deserves another, and how long to wait first.

Only failures before the first content event are retried: once text was published, a new
attempt would show and record it twice. What counts as worth retrying is what the official
SDKs retry (connection errors, 408, 409, 429, 5xx, Anthropic's 529 ``overloaded_error``), plus
the same overload reported inside a 200 stream before any content.
"""

from __future__ import annotations

import random
from typing import Final

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "RETRY_AFTER_CAP",
    "RETRY_ERROR_TYPES",
    "RETRY_STATUSES",
    "backoff",
]

RETRY_STATUSES: Final = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
"""HTTP statuses worth another attempt, before any content arrived."""

RETRY_ERROR_TYPES: Final = frozenset(
    {
        "overloaded_error",  # Anthropic, also as an in-stream `event: error`
        "rate_limit_error",  # Anthropic
        "api_error",  # Anthropic: an internal error
        "server_error",  # OpenAI
        "rate_limit_exceeded",  # OpenAI's code
    }
)
"""In-stream error types (an error event after HTTP 200) worth another attempt, before content."""

BACKOFF_BASE: Final = 0.5
BACKOFF_CAP: Final = 8.0
RETRY_AFTER_CAP: Final = 60.0
"""The longest ``retry-after`` honoured; a server asking for more is not retried at all."""


def backoff(attempt: int, retry_after: float | None) -> float | None:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0).

    The server's ``retry-after`` / ``retry-after-ms`` when it sent one (exactly: it knows its
    own load), else full jitter (AWS architecture blog): uniform in
    ``[0, min(BACKOFF_CAP, BACKOFF_BASE · 2^attempt)]``. ``None`` when the server asked for
    more than :data:`RETRY_AFTER_CAP`: waiting that long inside one request helps nobody.
    """
    if retry_after is not None:
        return retry_after if retry_after <= RETRY_AFTER_CAP else None
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
