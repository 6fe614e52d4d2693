"""OpenAI Chat Completions stream → streambus events. Pure: no I/O, no clock.

Also serves OpenAI-compatible servers (vLLM, DeepSeek, OpenRouter, Azure, the simulator):
reasoning arrives in ``delta.reasoning_content`` or ``delta.reasoning``; Azure opens with a chunk
whose ``choices`` is empty; some servers send a whole tool call in one fragment, or reuse a
tool-call index for a new call id. Only choice 0 is followed (streambus never asks for ``n``).

Chunks are decoded with typed msgspec structs: one pass, validated, unknown fields ignored, so a
payload of the wrong shape is a clear error instead of a ``KeyError`` three layers down.
"""

from __future__ import annotations

from typing import Final

import msgspec

from streambus.events import Event
from streambus.normalizers._base import Normalizer, describe_error, normalize_stop_reason
from streambus.sse import ServerSentEvent

__all__ = ["OpenAINormalizer"]


class _Function(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct, gc=False):
    index: int | None = None
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct, gc=False):
    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[_ToolCall] | None = None
    function_call: _Function | None = None  # legacy single-function form


class _Choice(msgspec.Struct, gc=False):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _PromptDetails(msgspec.Struct, gc=False):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct, gc=False):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _Error(msgspec.Struct, gc=False):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class _Chunk(msgspec.Struct, gc=False):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: _Error | None = None


_decode_chunk: Final = msgspec.json.Decoder(_Chunk).decode


class OpenAINormalizer(Normalizer):
    """Normalizes ``chat.completion.chunk`` events; ``data: [DONE]`` is the terminator."""

    provider_format = "openai"
    terminator = "[DONE]"

    def __init__(self, *, session: str, provider: str = "openai", model: str) -> None:
        super().__init__(session=session, provider=provider, model=model)
        # provider's tool-call index -> the call's state; our indexes count calls from 0.
        self._calls: dict[int, _CallState] = {}
        self._n_calls = 0

    def _reset_attempt(self) -> None:
        self._calls.clear()
        self._n_calls = 0

    def _receive_one(self, sse: ServerSentEvent, t_ns: int, out: list[Event]) -> None:
        data = sse.data
        if data == "[DONE]":
            out.extend(self._finish(normalize_stop_reason(self._raw_reason), t_ns))
            return
        try:
            chunk = _decode_chunk(data)
        except msgspec.DecodeError as exc:
            error = f"malformed chunk from server: {exc}"
            out.extend(self._finish("error", t_ns, error=error, error_kind="protocol"))
            return
        if chunk.error is not None:
            err = chunk.error
            message = describe_error(self.provider, err.message, err.type, err.code)
            self.provider_error = frozenset(str(t) for t in (err.type, err.code) if t)
            out.extend(self._finish("error", t_ns, error=message, error_kind="provider"))
            return
        if chunk.usage is not None:
            u = chunk.usage
            self._set_usage(
                input_tokens=u.prompt_tokens,
                output_tokens=u.completion_tokens,
                cached_tokens=u.prompt_tokens_details.cached_tokens
                if u.prompt_tokens_details
                else None,
                reasoning_tokens=u.completion_tokens_details.reasoning_tokens
                if u.completion_tokens_details
                else None,
            )
        if not chunk.choices:
            return  # usage-only chunk, or Azure's prompt_filter_results prelude
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None:
                self._receive_delta(delta, t_ns, out)
            if choice.finish_reason is not None:
                self._raw_reason = choice.finish_reason

    def _receive_delta(self, delta: _Delta, t_ns: int, out: list[Event]) -> None:
        reasoning = delta.reasoning_content or delta.reasoning
        if reasoning:
            out.append(self._delta(reasoning, t_ns, "reasoning"))
        if delta.content:
            out.append(self._delta(delta.content, t_ns, "text"))
        if delta.refusal:
            out.append(self._delta(delta.refusal, t_ns, "refusal"))
        if delta.tool_calls:
            for call in delta.tool_calls:
                self._receive_tool_call(call.index, call.id, call.function, t_ns, out)
        if delta.function_call is not None:
            self._receive_tool_call(0, None, delta.function_call, t_ns, out)

    def _receive_tool_call(
        self,
        provider_index: int | None,
        call_id: str | None,
        function: _Function | None,
        t_ns: int,
        out: list[Event],
    ) -> None:
        key = provider_index if provider_index is not None else 0
        call = self._calls.get(key)
        # A new id on a known index is a new call (some compatible servers reuse index 0).
        if call is None or (call_id is not None and call.id is not None and call.id != call_id):
            call = self._calls[key] = _CallState(self._n_calls)
            self._n_calls += 1
            is_new = True
        else:
            is_new = False
        # Only the first fragment that carries an id / a name passes it on; servers that
        # repeat them on every fragment would otherwise break "fragments concatenate".
        new_id = None
        if call_id and call.id is None:
            call.id = new_id = call_id
        name = function.name if function is not None else None
        new_name = None
        if name and not call.named:
            call.named = True
            new_name = name
        arguments = (function.arguments if function is not None else None) or ""
        if is_new or new_id or new_name or arguments:
            out.append(
                self._tool_delta(call.index, t_ns, id=new_id, name=new_name, arguments=arguments)
            )


class _CallState:
    """What we know of one streamed tool call."""

    __slots__ = ("id", "index", "named")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id: str | None = None
        self.named = False
