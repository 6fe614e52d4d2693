"""How the simulator behaves: pacing, determinism and injected faults.

Both types are msgspec structs so a request can override any field with a JSON object
(``"simulator": {...}`` in the body) converted over the server's own config.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

__all__ = ["FAULT_KINDS", "Fault", "FaultKind", "SimulatorConfig", "merge_config", "parse_fault"]

FaultKind: TypeAlias = Literal[
    "http_error", "disconnect", "stall", "malformed_json", "no_done", "error_event"
]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "http_error",
    "disconnect",
    "stall",
    "malformed_json",
    "no_done",
    "error_event",
)


class Fault(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One failure to inject, the way real providers fail.

    - ``http_error``: answer ``status`` with the provider's JSON error body before any stream
      (``retry_after`` becomes a ``retry-after`` header).
    - ``disconnect``: close the socket mid-body, without the terminating chunk.
    - ``stall``: send nothing for ``stall_seconds``, then carry on.
    - ``malformed_json``: send one event whose data is ``{not json``.
    - ``no_done``: end the body cleanly without ``data: [DONE]`` (Anthropic: ``message_stop``).
    - ``error_event``: an error event after HTTP 200 (OpenAI ``data: {"error": …}``, Anthropic
      ``event: error``), then end the body.

    Mid-stream faults strike after ``after_events`` content events.
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    message: str = "simulated failure"
    after_events: int = 0
    stall_seconds: float = 3600.0


class SimulatorConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Server-wide behaviour; every field can be overridden per request.

    ``tokens_per_second`` 0 means no delay at all (tests); ``jitter`` is the fraction by which
    each delay varies, drawn from a generator seeded by ``seed`` and the request, so the same
    request paces the same way every time.
    """

    seed: int = 0
    ttft: float = 0.25
    tokens_per_second: float = 60.0
    jitter: float = 0.2
    chunk_tokens: int = 1
    model: str = "sim-1"
    fault: Fault | None = None
    include_reasoning: bool = False

    def __post_init__(self) -> None:
        if self.chunk_tokens < 1:
            raise ValueError("chunk_tokens must be at least 1")
        if self.ttft < 0 or self.tokens_per_second < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("ttft and tokens_per_second must be >= 0, jitter within [0, 1]")


def merge_config(base: SimulatorConfig, override: Any) -> SimulatorConfig:
    """Apply a request's ``simulator`` object over ``base``.

    Raises ``msgspec.ValidationError`` (or ``ValueError``) with a readable message when the
    override names an unknown field or a wrong type.
    """
    if not isinstance(override, dict):
        raise msgspec.ValidationError("`simulator` must be an object")
    merged = msgspec.to_builtins(base)
    merged.update(override)
    return msgspec.convert(merged, SimulatorConfig)


def parse_fault(spec: str) -> Fault:
    """A fault from its command-line form ``KIND[:N]``.

    ``N`` is the HTTP status for ``http_error`` (default 500) and the number of content events
    sent first for the mid-stream kinds (default 0); ``no_done`` takes none.
    """
    kind, _, number = spec.partition(":")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r}: choose one of {', '.join(FAULT_KINDS)}")
    if not number:
        return Fault(kind=kind)
    if kind == "no_done":
        raise ValueError("the no_done fault takes no number")
    if not number.isdigit():
        raise ValueError(f"fault {spec!r}: {number!r} is not a whole number")
    if kind == "http_error":
        status = int(number)
        if not 400 <= status <= 599:
            raise ValueError(f"fault {spec!r}: the status must be within 400-599")
        return Fault(kind=kind, status=status)
    return Fault(kind=kind, after_events=int(number))
