"""How the simulator behaves: pacing, determinism and injected faults.

Both types are msgspec structs so a request can override any field with a JSON object
(``"simulator": {...}`` in the body) converted over the server's own config.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias, get_args

import msgspec

__all__ = [
    "FAULT_KINDS",
    "FAULT_PHASES",
    "Fault",
    "FaultKind",
    "FaultPhase",
    "SimulatorConfig",
    "merge_config",
    "parse_fault",
]

FaultKind: TypeAlias = Literal[
    "http_error",
    "disconnect",
    "stall",
    "malformed_json",
    "no_done",
    "error_event",
    "ping_stall",
    "invalid_utf8",
    "nul_byte",
    "endless_line",
    "oversize_event",
    "wrong_shape",
    "wrong_content_type",
    "cut_chunk",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
FaultPhase: TypeAlias = Literal["headers", "body", "text", "arguments", "terminator"]
FAULT_PHASES: tuple[FaultPhase, ...] = get_args(FaultPhase)

_IN_BODY: tuple[FaultPhase, ...] = ("body", "text", "arguments", "terminator")
# Where each kind may strike (``at``); None is always allowed and means the kind's default.
_PHASES_OF: dict[FaultKind, tuple[FaultPhase, ...]] = {
    "http_error": ("headers",),
    "wrong_content_type": (),
    "no_done": (),
    "disconnect": FAULT_PHASES,
    "stall": FAULT_PHASES,
    **{
        kind: _IN_BODY
        for kind in (
            "malformed_json",
            "error_event",
            "ping_stall",
            "invalid_utf8",
            "nul_byte",
            "endless_line",
            "oversize_event",
            "wrong_shape",
            "cut_chunk",
        )
    },
}


class Fault(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One failure to inject, the way real providers (and the networks between) fail.

    - ``http_error``: answer ``status`` with the provider's JSON error body before any stream
      (``retry_after`` becomes a ``retry-after`` header, ``error_type`` the error's type).
    - ``wrong_content_type``: HTTP 200 with a small ``text/html`` page instead of the answer,
      like a captive portal or a misconfigured proxy.
    - ``disconnect``: close the socket (mid-body, without the terminating chunk; at
      ``headers``: before any response byte).
    - ``stall``: send nothing for ``stall_seconds``, then carry on.
    - ``ping_stall``: for ``stall_seconds`` send only keep-alives, every ``ping_interval``
      seconds (OpenAI ``: keep-alive`` comments, Anthropic ``ping`` events), then carry on.
    - ``malformed_json``: one event whose data is ``{not json``.
    - ``invalid_utf8`` / ``nul_byte``: one text-delta event whose JSON string holds the bytes
      ``\\xff\\xfe`` (not UTF-8) / a raw NUL byte (``a\\x00b``).
    - ``wrong_shape``: one event of valid JSON in the wrong shape.
    - ``endless_line``: ``data: `` and ``size`` bytes with no line end, then the connection is
      held open until the client hangs up or ``stall_seconds`` pass, then dropped.
    - ``oversize_event``: one valid but ignorable event of many ``data:`` lines, more than
      ``size`` bytes in all.
    - ``cut_chunk``: a chunk-size line announcing the next event, only part of it, then the
      socket closes.
    - ``no_done``: end the body cleanly without ``data: [DONE]`` (Anthropic: ``message_stop``).
    - ``error_event``: an error event after HTTP 200 (OpenAI ``data: {"error": …}``, Anthropic
      ``event: error``), then end the body.

    ``at`` picks where the fault strikes: ``headers`` (before the response head), ``body``
    (before the first event), ``text`` (after ``after_events`` content events: the default),
    ``arguments`` (after the first tool call's first argument fragment) or ``terminator``
    (right before ``[DONE]`` / ``message_stop``). ``times`` limits the fault to the first
    ``times`` requests with the same body, so a client's retry then succeeds.
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    message: str = "simulated failure"
    after_events: int = 0
    stall_seconds: float = 3600.0
    at: FaultPhase | None = None
    times: int | None = None
    ping_interval: float = 1.0
    size: int = 17 * 1024 * 1024
    error_type: str | None = None

    def __post_init__(self) -> None:
        allowed = _PHASES_OF[self.kind]
        if self.at is not None and self.at not in allowed:
            where = f"at {', '.join(allowed)}" if allowed else "with no phase (at must be null)"
            raise ValueError(f"the {self.kind} fault cannot strike at {self.at!r}: only {where}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or null: every request)")
        if self.after_events < 0 or self.stall_seconds < 0:
            raise ValueError("after_events and stall_seconds must be >= 0")
        if not self.ping_interval > 0:
            raise ValueError("ping_interval must be > 0")
        if self.size < 1:
            raise ValueError("size must be at least 1")


class SimulatorConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Server-wide behaviour; every field can be overridden per request.

    ``tokens_per_second`` 0 means no delay at all (tests); ``jitter`` is the fraction by which
    each delay varies, drawn from a generator seeded by ``seed`` and the request, so the same
    request paces the same way every time. ``gzip`` sends every answer gzip-encoded (streams
    flushed per event), whatever the request's ``accept-encoding``.
    """

    seed: int = 0
    ttft: float = 0.25
    tokens_per_second: float = 60.0
    jitter: float = 0.2
    chunk_tokens: int = 1
    model: str = "sim-1"
    fault: Fault | None = None
    include_reasoning: bool = False
    gzip: bool = False

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


_GRAMMAR = "KIND[:N][@PHASE][xTIMES]"


def parse_fault(spec: str) -> Fault:
    """A fault from its command-line form ``KIND[:N][@PHASE][xTIMES]``.

    ``N`` is the HTTP status for ``http_error`` (default 500) and the number of content events
    sent first for the other kinds (default 0, only at the default ``text`` phase);
    ``no_done`` and ``wrong_content_type`` take none. ``PHASE`` is ``Fault.at``; ``TIMES``
    limits the fault to the first attempts of each request body. For example
    ``disconnect@arguments``, ``http_error:529x2``, ``ping_stall:3``, ``stall@headers``.
    """
    rest, times = spec, None
    head, sep, count = spec.rpartition("x")
    if sep and head and count.isdigit():
        rest, times = head, int(count)
    rest, sep, phase = rest.partition("@")
    at: FaultPhase | None = None
    if sep:
        if phase not in FAULT_PHASES:
            choices = ", ".join(FAULT_PHASES)
            raise ValueError(f"fault {spec!r}: unknown phase {phase!r}: choose one of {choices}")
        at = phase
    kind, _, number = rest.partition(":")
    if kind not in FAULT_KINDS:
        raise ValueError(
            f"unknown fault {kind!r}: choose one of {', '.join(FAULT_KINDS)} (written {_GRAMMAR})"
        )
    fields: dict[str, Any] = {}
    if number:
        if kind in ("no_done", "wrong_content_type"):
            raise ValueError(f"the {kind} fault takes no number")
        if not number.isdigit():
            raise ValueError(f"fault {spec!r}: {number!r} is not a whole number ({_GRAMMAR})")
        if kind == "http_error":
            status = int(number)
            if not 400 <= status <= 599:
                raise ValueError(f"fault {spec!r}: the status must be within 400-599")
            fields["status"] = status
        elif at not in (None, "text"):
            raise ValueError(
                f"fault {spec!r}: N counts content events first, which only applies at the "
                "text phase"
            )
        else:
            fields["after_events"] = int(number)
    try:
        return Fault(kind=kind, at=at, times=times, **fields)
    except ValueError as exc:
        raise ValueError(f"fault {spec!r}: {exc}") from None
