"""Realistic stream bodies for the parse benchmarks, rendered by the simulator's wire formats.

The simulator renders every event the way api.openai.com / api.anthropic.com send them (ids,
``created``, ``system_fingerprint``, ``service_tier``, ``obfuscation``, ``usage``, pings, an
empty first ``input_json_delta``…); here only the answer is made long: corpus text (Korean and
English, so 4 KiB reads split multi-byte characters) repeated to the size asked for, or tool
calls whose arguments hold such text. One token per event (``chunk_tokens=1``), as the real
services stream.
"""

from __future__ import annotations

import dataclasses
import itertools

import msgspec

from streambus.simulator import anthropic_api, openai_api
from streambus.simulator.config import SimulatorConfig
from streambus.simulator.corpus import CORPUS, tokenize
from streambus.simulator.plan import Conversation, Plan, PlannedCall

__all__ = ["BULK_READ", "Payload", "bulk_reads", "live_reads", "payloads"]

BULK_READ = 4096
"""Bytes per network read in the ``bulk`` shape (an HTTP client's usual read size)."""

_OPENAI_MODEL = "gpt-4o-mini-2024-07-18"
_ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"
_CONFIG = SimulatorConfig(chunk_tokens=1, tokens_per_second=0, ttft=0, jitter=0)


@dataclasses.dataclass(frozen=True)
class Payload:
    """One stream body, and the answer it carries (what every contender must extract)."""

    name: str
    provider: str  # "openai" | "anthropic"
    body: bytes
    events: list[bytes]  # the body, one SSE event each (the ``live`` read shape)
    text: str
    arguments: list[str]  # each tool call's arguments, as the wire string
    finish: str  # the provider's raw finish / stop reason
    output_tokens: int


def _text_tokens(tokens: int) -> tuple[str, ...]:
    """About ``tokens`` tokens of answer text, alternating Korean and English paragraphs."""
    entries = [e for pair in zip(CORPUS["ko"], CORPUS["en"], strict=False) for e in pair]
    out: list[str] = []
    for entry in itertools.cycle(entries):
        out += tokenize(entry.text + "\n\n")
        if len(out) >= tokens:
            return tuple(out[:tokens])
    raise AssertionError  # pragma: no cover - cycle never ends


def _calls(n_calls: int, tokens: int) -> tuple[PlannedCall, ...]:
    """``n_calls`` tool calls (a file writer, as coding agents call) splitting ``tokens``
    argument fragments; the simulator cuts each call's JSON into 2-6 character fragments."""
    per_call = "".join(_text_tokens(tokens))[: tokens * 4 // n_calls]  # ~4 chars a fragment
    return tuple(
        PlannedCall(
            name="write_file",
            arguments={"path": f"docs/notes/part-{i}.md", "content": per_call, "overwrite": True},
        )
        for i in range(n_calls)
    )


def _plan(key: str, text: tuple[str, ...], calls: tuple[PlannedCall, ...]) -> Plan:
    return Plan(
        key=key,
        language="ko",
        reasoning=(),
        text=text,
        preamble=tuple(tokenize("I'll write those files now.")) if calls else (),
        calls=calls,
        prompt_tokens=1234,
    )


def _conversation() -> Conversation:
    return Conversation(prompt="스트리밍이 뭐예요?", context="", messages=1)


def _split_events(body: bytes) -> list[bytes]:
    parts = body.split(b"\n\n")
    assert parts[-1] == b""
    return [p + b"\n\n" for p in parts[:-1]]


def _payload(name: str, provider: str, steps: list, output) -> Payload:  # type: ignore[no-untyped-def]
    events = [step.data for step in steps]
    body = b"".join(events)
    assert _split_events(body) == events  # every step is one event
    finish = output.finish
    if provider == "anthropic":  # the simulator's own spelling, as its message_delta says
        finish = next(
            msgspec.json.decode(event.split(b"data: ", 1)[1])["delta"]["stop_reason"]
            for event in events
            if event.startswith(b"event: message_delta\n")
        )
    return Payload(
        name=name,
        provider=provider,
        body=body,
        events=events,
        text="".join(output.text),
        arguments=[call.arguments for call in output.calls],
        finish=finish,
        output_tokens=output.completion_tokens,
    )


def payloads(events: int) -> list[Payload]:
    """The four benchmark streams, each about ``events`` SSE events long."""
    out = []
    text = _text_tokens(events)
    openai_request = openai_api.OpenAIRequest(
        conversation=_conversation(),
        model=_OPENAI_MODEL,
        stream=True,
        include_usage=True,
        obfuscate=True,
    )
    anthropic_request = anthropic_api.AnthropicRequest(
        conversation=_conversation(), model=_ANTHROPIC_MODEL, stream=True
    )
    for kind, plan in (
        ("text", _plan("bench-text", text, ())),
        ("tools", _plan("bench-tools", (), _calls(4, events))),
    ):
        steps, output = openai_api.stream_steps(plan, openai_request, _CONFIG)
        name = "openai text" if kind == "text" else "openai parallel tool calls"
        out.append(_payload(name, "openai", steps, output))
        steps, output = anthropic_api.stream_steps(plan, anthropic_request, _CONFIG)
        name = "anthropic text" if kind == "text" else "anthropic tool use"
        out.append(_payload(name, "anthropic", steps, output))
    order = ["openai text", "openai parallel tool calls", "anthropic text", "anthropic tool use"]
    return sorted(out, key=lambda p: order.index(p.name))


def bulk_reads(payload: Payload) -> list[bytes]:
    """The body as ``BULK_READ``-byte network reads (many events a read, cut anywhere)."""
    body = payload.body
    return [body[i : i + BULK_READ] for i in range(0, len(body), BULK_READ)]


def live_reads(payload: Payload) -> list[bytes]:
    """The body as one network read per event, as a live stream arrives token by token."""
    return list(payload.events)
