"""The recorded provider streams under tests/fixtures, and our view of a stream in the same
shape as the fixtures' expectations and the SDK oracles (tests/oracles.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streambus import Delta, Event, Message

from .oracles import ORACLE_KEYS

FIXTURES = Path(__file__).parent / "fixtures"

# What we compare: everything the oracles report except the response's own id and model,
# which are not part of our event vocabulary.
COMPARED = tuple(key for key in ORACLE_KEYS if key not in ("id", "model"))


@dataclass(frozen=True)
class Case:
    provider: str  # "openai" | "anthropic"
    name: str
    body: bytes
    expected: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.name}"


def load_cases() -> list[Case]:
    cases = []
    for provider in ("openai", "anthropic"):
        for sse in sorted((FIXTURES / provider).glob("*.sse")):
            expected = json.loads(sse.with_suffix(".json").read_text(encoding="utf-8"))
            cases.append(Case(provider, sse.stem, sse.read_bytes(), expected))
    return cases


CASES = load_cases()


def our_view(message: Message, events: list[Event]) -> dict[str, Any]:
    """A stream as we saw it, in the fixtures' shape."""
    stop = message.stop
    assert stop is not None
    usage = message.usage
    signatures = [e.signature for e in events if isinstance(e, Delta) and e.signature]
    return {
        "text": message.text,
        "reasoning": message.reasoning,
        "refusal": message.refusal,
        "signature": "".join(signatures) or None,
        "tool_calls": [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls
        ],
        "raw_finish_reason": stop.raw_reason,
        "finish_reason": stop.reason,
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "cached_tokens": usage.cached_tokens if usage else None,
        "reasoning_tokens": usage.reasoning_tokens if usage else None,
        "terminated": stop.reason != "error",
        "error": stop.error,
    }


def assert_matches(ours: dict[str, Any], expected: dict[str, Any], *, skip: set[str]) -> None:
    """Field by field; ``error`` in ``expected`` is a substring; tool arguments as parsed JSON
    when ``parsed_arguments`` (the anthropic SDK re-serializes tool input)."""
    for key in COMPARED:
        if key in skip:
            continue
        want, got = expected.get(key), ours[key]
        if key == "error" and want is not None:
            assert got is not None and want in got, f"error: {want!r} not in {got!r}"
        elif key == "tool_calls":
            assert [_call(c) for c in got] == [_call(c) for c in want], key
        else:
            assert got == want, f"{key}: ours {got!r} != expected {want!r}"


def _call(call: dict[str, Any]) -> tuple[Any, Any, Any]:
    return (call["id"], call["name"], json.loads(call["arguments"] or "null"))
