"""Anthropic Messages stream → streambus events. Pure: no I/O, no clock.

Anthropic numbers *content blocks* (text, thinking and tool_use alike); our ``tool_delta.index``
counts only the tool calls, so blocks are mapped as they open. A ``tool_use`` block whose
``input_json_delta`` stream is empty means input ``{}``: we emit that so fragments always
concatenate to valid JSON. New event and delta types appear over time and are ignored, never
fatal. ``message_stop`` is the terminator; an ``error`` event after HTTP 200 ends the session.
"""

from __future__ import annotations

from typing import Final

import msgspec

from streambus.events import Event
from streambus.normalizers._base import Normalizer, describe_error, normalize_stop_reason
from streambus.sse import ServerSentEvent

__all__ = ["AnthropicNormalizer"]


class _OutputDetails(msgspec.Struct, gc=False):
    thinking_tokens: int | None = None


class _Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: _OutputDetails | None = None


class _Message(msgspec.Struct, gc=False):
    usage: _Usage | None = None


class _Block(msgspec.Struct, gc=False):
    type: str = ""
    id: str | None = None
    name: str | None = None
    text: str | None = None
    thinking: str | None = None
    input: msgspec.Raw = msgspec.Raw()


class _Delta(msgspec.Struct, gc=False):
    type: str = ""
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _Error(msgspec.Struct, gc=False):
    type: str | None = None
    message: str | None = None


class _Event(msgspec.Struct, gc=False):
    """Every Anthropic stream event in one shape, so unknown types decode and are skipped."""

    type: str = ""
    index: int | None = None
    message: _Message | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _Error | None = None


_decode_event: Final = msgspec.json.Decoder(_Event).decode
_EMPTY_INPUTS: Final = (b"{}", b"", b"null")


class _ToolBlock:
    __slots__ = ("has_arguments", "index", "start_input")

    def __init__(self, index: int, start_input: bytes) -> None:
        self.index = index
        self.start_input = start_input
        self.has_arguments = False


class AnthropicNormalizer(Normalizer):
    """Normalizes Messages stream events; ``message_stop`` is the terminator."""

    provider_format = "anthropic"
    terminator = "message_stop"

    def __init__(self, *, session: str, provider: str = "anthropic", model: str) -> None:
        super().__init__(session=session, provider=provider, model=model)
        self._tool_blocks: dict[int, _ToolBlock] = {}  # content-block index -> tool call
        self._n_calls = 0

    def _reset_attempt(self) -> None:
        self._tool_blocks.clear()
        self._n_calls = 0

    def _receive_one(self, sse: ServerSentEvent, t_ns: int, out: list[Event]) -> None:
        if sse.event == "ping":
            return
        try:
            event = _decode_event(sse.data)
        except msgspec.DecodeError as exc:
            error = f"malformed event from server: {exc}"
            out.extend(self._finish("error", t_ns, error=error, error_kind="protocol"))
            return
        kind = event.type or sse.event
        if kind == "content_block_delta":
            if event.delta is not None and event.index is not None:
                self._receive_delta(event.index, event.delta, t_ns, out)
        elif kind == "content_block_start":
            if event.content_block is not None and event.index is not None:
                self._open_block(event.index, event.content_block, t_ns, out)
        elif kind == "content_block_stop":
            if event.index is not None:
                self._close_block(event.index, t_ns, out)
        elif kind == "message_start":
            usage = event.message.usage if event.message is not None else None
            if usage is not None:
                self._receive_usage(usage)
        elif kind == "message_delta":
            if event.delta is not None and event.delta.stop_reason is not None:
                self._raw_reason = event.delta.stop_reason
            if event.usage is not None:
                self._receive_usage(event.usage)
        elif kind == "message_stop":
            out.extend(self._finish(normalize_stop_reason(self._raw_reason), t_ns))
        elif kind == "error":
            err = event.error or _Error()
            message = describe_error(self.provider, err.message, err.type, None)
            self.provider_error = frozenset([err.type] if err.type else [])
            out.extend(self._finish("error", t_ns, error=message, error_kind="provider"))
        # anything else (ping, new event types) is ignored on purpose

    def _receive_usage(self, usage: _Usage) -> None:
        self._set_usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cache_read_input_tokens,
            reasoning_tokens=usage.output_tokens_details.thinking_tokens
            if usage.output_tokens_details
            else None,
        )

    def _open_block(self, index: int, block: _Block, t_ns: int, out: list[Event]) -> None:
        kind = block.type
        if kind == "text":
            if block.text:
                out.append(self._delta(block.text, t_ns, "text"))
        elif kind == "thinking":
            if block.thinking:
                out.append(self._delta(block.thinking, t_ns, "reasoning"))
        elif kind == "tool_use":
            start_input = bytes(block.input)
            tool = self._tool_blocks[index] = _ToolBlock(self._n_calls, start_input)
            self._n_calls += 1
            out.append(
                self._tool_delta(tool.index, t_ns, id=block.id, name=block.name, arguments="")
            )
        # redacted_thinking, server_tool_use and server tool results carry nothing we publish

    def _receive_delta(self, index: int, delta: _Delta, t_ns: int, out: list[Event]) -> None:
        kind = delta.type
        if kind == "text_delta":
            if delta.text:
                out.append(self._delta(delta.text, t_ns, "text"))
        elif kind == "thinking_delta":
            if delta.thinking:
                out.append(self._delta(delta.thinking, t_ns, "reasoning"))
        elif kind == "signature_delta":
            if delta.signature:
                out.append(self._delta("", t_ns, "reasoning", signature=delta.signature))
        elif kind == "input_json_delta":
            tool = self._tool_blocks.get(index)
            if tool is not None and delta.partial_json:
                tool.has_arguments = True
                out.append(
                    self._tool_delta(
                        tool.index, t_ns, id=None, name=None, arguments=delta.partial_json
                    )
                )
        # citations_delta and new delta types are ignored on purpose

    def _close_block(self, index: int, t_ns: int, out: list[Event]) -> None:
        tool = self._tool_blocks.get(index)
        if tool is None or tool.has_arguments:
            return
        # No input_json_delta at all: the input is what content_block_start said, usually {}.
        start = tool.start_input
        arguments = "{}" if start in _EMPTY_INPUTS else start.decode()
        tool.has_arguments = True
        out.append(self._tool_delta(tool.index, t_ns, id=None, name=None, arguments=arguments))
