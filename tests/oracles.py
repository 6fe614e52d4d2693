"""Reference results for the stream fixtures, computed by the official provider SDKs.

``openai_oracle(base_url)`` and ``anthropic_oracle(base_url)`` send ONE streaming request to a
server at ``base_url`` (one that answers with a fixture's bytes), let the official async SDK
parse and accumulate the stream with its own helpers, and return the same dict shape as the
fixture's ``.json`` (see ``tests/fixtures/README.md``)::

    id, model, text, reasoning, refusal, signature, tool_calls[{id, name, arguments}],
    raw_finish_reason, finish_reason, input_tokens, output_tokens, cached_tokens,
    reasoning_tokens, terminated, error

OpenAI: ``client.chat.completions.create(..., stream=True)`` chunks are fed to
``openai.lib.streaming.chat.ChatCompletionStreamState`` (skipping non-chunk objects exactly as
the SDK's own ``.stream()`` helper does), then ``get_final_completion()``.
Anthropic: ``client.messages.stream(...)`` then ``get_final_message()``.

When the SDK raises mid-stream, ``error`` is ``str()`` of the exception and the fields come from
the SDK's snapshot accumulated so far. ``terminated`` is whether the SDK's own SSE decoder saw
``[DONE]`` (OpenAI) or the SDK yielded ``message_stop`` (Anthropic).

Where the SDK's view legitimately differs from ours, the fixture's ``sdk_differs`` names the
fields to skip. Known SDK behaviours (openai 3.54 / anthropic 2.12):

* neither SDK raises when the body ends without ``[DONE]`` / ``message_stop``;
* ``get_final_completion()`` raises ``LengthFinishReasonError`` / ``ContentFilterFinishReasonError``
  for ``finish_reason`` ``length`` / ``content_filter`` even without a response_format; the
  oracle then reads ``current_completion_snapshot`` instead;
* the openai accumulator keeps unknown delta fields, so ``reasoning_content`` / ``reasoning``
  strings are concatenated onto the message like ``content``;
* the anthropic SDK keeps tool input as a parsed dict; ``arguments`` here is
  ``json.dumps(input, ensure_ascii=False)``, equal to the wire string only when the model used
  ``", "`` / ``": "`` separators (compare tool arguments as parsed JSON to be safe);
* an Anthropic ``event: error`` after HTTP 200 raises a plain ``APIStatusError`` (status 200)
  whose message is the ``repr`` of the parsed body;
* both SDK SSE decoders keep a leading UTF-8 BOM (the first field name becomes
  ``"\\ufeffdata"`` / ``"\\ufeffevent"``, so the first event is lost) and dispatch data-less
  blocks (``retry:`` only, or a comment block once an ``id:`` was seen) as events with data
  ``""``; the openai stream then fails on ``json.loads("")``, the anthropic one skips them;
* feeding Azure's first chunk (``"object": ""``, ``prompt_filter_results``) to
  ``ChatCompletionStreamState`` would make the snapshot's ``id``/``model`` empty (the first
  chunk wins), hence the filter above; every chunk overwrites the snapshot's ``usage``, so a
  chunk without usage after the usage chunk erases it;
* under trio both SDKs leave async generators unexhausted (openai breaks out at ``[DONE]``,
  either SDK when it raises mid-stream) and trio warns ``ResourceWarning: Async generator …
  was garbage collected`` as it finalizes them. The oracles silence exactly those warnings and
  let trio finish finalizing before returning, so they pass under ``-W error``. Each oracle
  call takes ~0.1-0.2 s (a fresh SDK client per call).
"""

from __future__ import annotations

import contextlib
import gc
import json
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import openai
import trio
from openai.lib.streaming.chat import ChatCompletionStreamState

__all__ = ["ORACLE_KEYS", "anthropic_oracle", "normalize_reason", "openai_oracle"]

ORACLE_KEYS = (
    "id",
    "model",
    "text",
    "reasoning",
    "refusal",
    "signature",
    "tool_calls",
    "raw_finish_reason",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "terminated",
    "error",
)

_NORMALIZED = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
}

_API_KEY = "test-key"
_FINALIZE_TICKS = 16
_PROMPT: list[Any] = [{"role": "user", "content": "Hello"}]


def normalize_reason(raw: str | None, *, error: str | None, terminated: bool) -> str:
    """Our normalized stop reason for a finished stream."""
    if error is not None or not terminated:
        return "error"
    if raw is None:
        return "stop"
    return _NORMALIZED.get(raw, "stop")


def _result(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": None,
        "model": None,
        "text": "",
        "reasoning": "",
        "refusal": "",
        "signature": None,
        "tool_calls": [],
        "raw_finish_reason": None,
        "input_tokens": None,
        "output_tokens": None,
        "cached_tokens": None,
        "reasoning_tokens": None,
        "terminated": False,
        "error": None,
    }
    out.update(fields)
    out["finish_reason"] = normalize_reason(
        out["raw_finish_reason"], error=out["error"], terminated=out["terminated"]
    )
    return {k: out[k] for k in ORACLE_KEYS}


class _Run:
    """Per-call state shared between an oracle and its warnings guard."""

    failed = False


@contextlib.asynccontextmanager
async def _quiet_sdk_asyncgens() -> AsyncIterator[_Run]:
    run = _Run()
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"Async generator '(openai|anthropic|oracles|httpx2|httpcore2)\.",
            category=ResourceWarning,
        )
        try:
            yield run
        finally:
            if run.failed:
                # an exception's traceback can hold the abandoned generators in a cycle
                gc.collect()
            # trio finalizes abandoned async generators in its system task, one level of the
            # SDK's generator chain per tick: let that cascade finish inside the filter.
            for _ in range(_FINALIZE_TICKS):
                await trio.lowlevel.checkpoint()


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, (openai.OpenAIError, anthropic.AnthropicError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------
# OpenAI
# ---------------------------------------------------------------------------------------------


class _DoneWatchingDecoder:
    """Wraps the SDK's own SSE decoder and remembers whether it produced a ``[DONE]`` event."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.saw_done = False

    def iter_bytes(self, iterator: Iterator[bytes]) -> Iterator[Any]:
        for sse in self._inner.iter_bytes(iterator):
            if sse.data.startswith("[DONE]"):
                self.saw_done = True
            yield sse

    async def aiter_bytes(self, iterator: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for sse in self._inner.aiter_bytes(iterator):
            if sse.data.startswith("[DONE]"):
                self.saw_done = True
            yield sse


class _WatchedAsyncOpenAI(openai.AsyncOpenAI):
    watcher: _DoneWatchingDecoder | None = None

    def _make_sse_decoder(self) -> Any:
        self.watcher = _DoneWatchingDecoder(super()._make_sse_decoder())
        return self.watcher


def _is_chat_completion_chunk(chunk: Any) -> bool:
    # Same filter as the SDK's ChatCompletionStream (`_is_valid_chat_completion_chunk_weak`):
    # Azure's prompt_filter_results / async-filter objects carry `"object": ""`.
    return getattr(chunk, "object", None) == "chat.completion.chunk"


async def openai_oracle(base_url: str) -> dict[str, Any]:
    """Stream one chat completion from ``base_url`` (ends in ``/v1``) through the openai SDK."""
    async with _quiet_sdk_asyncgens() as run:
        result = await _openai_oracle(base_url)
        run.failed = result["error"] is not None
        return result


async def _openai_oracle(base_url: str) -> dict[str, Any]:
    client = _WatchedAsyncOpenAI(api_key=_API_KEY, base_url=base_url, max_retries=0)
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    seen_chunk = False
    error: str | None = None
    try:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=_PROMPT,
            stream=True,
            stream_options={"include_usage": True},
        )
        try:
            async for chunk in stream:
                if not _is_chat_completion_chunk(chunk):
                    continue
                state.handle_chunk(chunk)
                seen_chunk = True
        finally:
            await stream.close()
    except Exception as exc:
        error = _error_text(exc)
    finally:
        await client.close()

    terminated = client.watcher is not None and client.watcher.saw_done
    if not seen_chunk:
        return _result(terminated=terminated, error=error)

    completion: Any
    try:
        completion = state.get_final_completion()
    except (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError):
        # parse_chat_completion refuses these finish reasons even with no response_format.
        completion = state.current_completion_snapshot
    except Exception as exc:  # pragma: no cover - accumulator failure is itself a finding
        completion = state.current_completion_snapshot
        error = error or _error_text(exc)

    fields: dict[str, Any] = {
        "id": completion.id or None,
        "model": completion.model or None,
        "terminated": terminated,
        "error": error,
    }
    if completion.choices:
        choice = completion.choices[0]
        message = choice.message
        fields["text"] = message.content or ""
        fields["refusal"] = message.refusal or ""
        # Unknown delta fields survive the SDK's accumulate_delta as extra attributes.
        reasoning = getattr(message, "reasoning_content", None)
        if reasoning is None:
            reasoning = getattr(message, "reasoning", None)
        fields["reasoning"] = reasoning if isinstance(reasoning, str) else ""
        calls = []
        for call in message.tool_calls or []:
            fn = call.function
            calls.append({"id": call.id, "name": fn.name, "arguments": fn.arguments or ""})
        if not calls and message.function_call is not None:
            fc = message.function_call
            calls.append({"id": None, "name": fc.name, "arguments": fc.arguments or ""})
        fields["tool_calls"] = calls
        fields["raw_finish_reason"] = choice.finish_reason
    usage = completion.usage
    if usage is not None:
        fields["input_tokens"] = usage.prompt_tokens
        fields["output_tokens"] = usage.completion_tokens
        if usage.prompt_tokens_details is not None:
            fields["cached_tokens"] = usage.prompt_tokens_details.cached_tokens
        if usage.completion_tokens_details is not None:
            fields["reasoning_tokens"] = usage.completion_tokens_details.reasoning_tokens
    return _result(**fields)


# ---------------------------------------------------------------------------------------------
# Anthropic
# ---------------------------------------------------------------------------------------------


async def anthropic_oracle(base_url: str) -> dict[str, Any]:
    """Stream one message from ``base_url`` (no ``/v1``) through the anthropic SDK."""
    async with _quiet_sdk_asyncgens() as run:
        result = await _anthropic_oracle(base_url)
        run.failed = result["error"] is not None
        return result


async def _anthropic_oracle(base_url: str) -> dict[str, Any]:
    client = anthropic.AsyncAnthropic(api_key=_API_KEY, base_url=base_url, max_retries=0)
    terminated = False
    error: str | None = None
    message: Any = None
    try:
        async with client.messages.stream(
            model="claude-haiku-4-5",  # any; not on the SDK's deprecation list
            max_tokens=1024,
            messages=_PROMPT,
        ) as stream:
            try:
                async for event in stream:
                    if event.type == "message_stop":
                        terminated = True
                message = await stream.get_final_message()
            except Exception as exc:
                error = _error_text(exc)
                try:
                    message = stream.current_message_snapshot
                except AssertionError:  # no message_start was accumulated
                    message = None
    except Exception as exc:
        error = error or _error_text(exc)
    finally:
        await client.close()

    if message is None:
        return _result(terminated=terminated, error=error)

    text: list[str] = []
    reasoning: list[str] = []
    signature: str | None = None
    calls: list[dict[str, Any]] = []
    for block in message.content:
        kind = getattr(block, "type", None)
        if kind == "text":
            text.append(block.text)
        elif kind == "thinking":
            reasoning.append(block.thinking)
            if block.signature:
                signature = block.signature
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.id,
                    "name": block.name,
                    "arguments": json.dumps(block.input, ensure_ascii=False),
                }
            )

    usage = message.usage
    details = getattr(usage, "output_tokens_details", None)
    return _result(
        id=message.id,
        model=message.model,
        text="".join(text),
        reasoning="".join(reasoning),
        signature=signature,
        tool_calls=calls,
        raw_finish_reason=message.stop_reason,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cache_read_input_tokens,
        reasoning_tokens=details.thinking_tokens if details is not None else None,
        terminated=terminated,
        error=error,
    )
