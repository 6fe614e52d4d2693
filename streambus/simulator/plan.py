"""What the simulator will say to a request, before any provider formatting.

Each provider module reduces its request to a ``Conversation``; ``make_plan`` decides the
answer (corpus text, tool calls, or an answer built on tool results) and ``make_output``
applies the token budget (``max_tokens``) and the provider's argument formatting. Everything
is derived from the seed and the request body, so the same request yields the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import msgspec

from .config import SimulatorConfig
from .corpus import Language, choose_entry, detect_language, reasoning_for, tokenize
from .tools import (
    ToolChoice,
    ToolResult,
    ToolSpec,
    arguments_json,
    build_arguments,
    fragment,
    preamble,
    result_answer,
    select_tools,
)

__all__ = [
    "BadRequest",
    "Conversation",
    "Output",
    "OutputCall",
    "Plan",
    "PlannedCall",
    "derive_id",
    "make_output",
    "make_plan",
    "request_key",
    "text_of",
]

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class BadRequest(Exception):
    """The request is invalid; each provider renders it as its own 400 error body."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def text_of(content: Any) -> str:
    """The text of a message's ``content``: a string, or a list of parts/blocks with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    """A request reduced to what decides the answer, whichever provider it came from."""

    prompt: str
    context: str
    messages: int
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    tool_results: tuple[ToolResult, ...] = ()
    max_tokens: int | None = None
    wants_reasoning: bool = False


class PlannedCall(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    arguments: dict[str, Any]


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """The full answer: reasoning tokens, text tokens, or tool calls (with a preamble that only
    Anthropic-style output uses)."""

    key: str
    language: Language
    reasoning: tuple[str, ...]
    text: tuple[str, ...]
    preamble: tuple[str, ...]
    calls: tuple[PlannedCall, ...]
    prompt_tokens: int


class OutputCall(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    fragments: tuple[str, ...]

    @property
    def arguments(self) -> str:
        return "".join(self.fragments)


class Output(msgspec.Struct, frozen=True, kw_only=True):
    """What is actually sent, after the token budget. ``truncated`` means it hit the budget."""

    reasoning: tuple[str, ...]
    text: tuple[str, ...]
    calls: tuple[OutputCall, ...]
    truncated: bool
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        calls = sum(1 + len(call.fragments) for call in self.calls)
        return len(self.reasoning) + len(self.text) + calls

    @property
    def finish(self) -> str:
        """OpenAI's vocabulary; each provider maps it to its own."""
        if self.truncated:
            return "length"
        return "tool_calls" if self.calls else "stop"


def request_key(body: Any, seed: int) -> str:
    """A digest of the request and seed, the root of every id and random choice."""
    encoded = msgspec.json.encode(body, order="sorted")
    return hashlib.sha256(b"%d:" % seed + encoded).hexdigest()


def derive_id(prefix: str, length: int, *parts: object) -> str:
    """A provider-looking id (``chatcmpl-…``, ``toolu_01…``) derived from ``parts``."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, rest = divmod(number, 62)
        chars.append(_BASE62[rest])
    return prefix + "".join(chars)


def make_plan(conversation: Conversation, config: SimulatorConfig, key: str) -> Plan:
    """Decide the answer: a tool-result answer, tool calls, or a corpus entry."""
    language = detect_language(conversation.prompt)
    calls: tuple[PlannedCall, ...] = ()
    text = ""
    if conversation.tool_results:
        text = result_answer(conversation.tool_results, conversation.prompt, language)
    else:
        chosen = select_tools(conversation.prompt, conversation.tools, conversation.tool_choice)
        calls = tuple(
            PlannedCall(
                name=tool.name,
                arguments=build_arguments(tool.parameters, conversation.prompt, language),
            )
            for tool in chosen
        )
        if not calls:
            text = choose_entry(conversation.prompt, config.seed, language).text
    reasoning = ""
    if config.include_reasoning or conversation.wants_reasoning:
        reasoning = reasoning_for(conversation.prompt, language)
    prompt_tokens = len(tokenize(conversation.context)) + 3 * conversation.messages + 3
    return Plan(
        key=key,
        language=language,
        reasoning=tuple(tokenize(reasoning)),
        text=tuple(tokenize(text)),
        preamble=tuple(tokenize(preamble(language))) if calls else (),
        calls=calls,
        prompt_tokens=prompt_tokens,
    )


def make_output(
    plan: Plan,
    *,
    max_tokens: int | None,
    compact_json: bool,
    call_id: Callable[[int], str],
    with_preamble: bool,
) -> Output:
    """Apply the budget: reasoning first, then text, then each call (1 token for its name plus
    one per argument fragment). A call whose name does not fit is dropped."""
    budget = max_tokens if max_tokens is not None and max_tokens >= 0 else None
    truncated = False

    def take(tokens: tuple[str, ...]) -> tuple[str, ...]:
        nonlocal budget, truncated
        if budget is None:
            return tokens
        if len(tokens) > budget:
            truncated = True
            tokens = tokens[:budget]
        budget -= len(tokens)
        return tokens

    reasoning = take(plan.reasoning)
    text = take(plan.text + (plan.preamble if with_preamble else ()))
    calls: list[OutputCall] = []
    for index, call in enumerate(plan.calls):
        if budget is not None and budget < 1:
            truncated = True
            break
        if budget is not None:
            budget -= 1
        body = arguments_json(call.arguments, compact=compact_json)
        fragments = take(tuple(fragment(body, (plan.key, index))))
        calls.append(OutputCall(id=call_id(index), name=call.name, fragments=fragments))
    return Output(
        reasoning=reasoning,
        text=text,
        calls=tuple(calls),
        truncated=truncated,
        prompt_tokens=plan.prompt_tokens,
    )
