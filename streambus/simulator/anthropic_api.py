"""The Anthropic Messages wire format, as api.anthropic.com sends it.

Every event is ``event: <type>`` plus ``data: <json>`` with the same type. Content blocks are
indexed in order: an optional thinking block (with a signature), the text block, then one
``tool_use`` block per call, whose input arrives as ``input_json_delta`` fragments starting
with an empty one, like Claude's. A ``ping`` follows the first block start, as in the real
stream, and again every 40 content events.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import Mapping
from typing import Any

import msgspec

from ._http import HTTPResponse
from .config import SimulatorConfig
from .corpus import stable_int
from .pacing import INVALID_UTF8, NUL_TEXT, FaultEvents, Step, fill_text, paced
from .plan import BadRequest, Conversation, Output, Plan, derive_id, make_output, text_of
from .tools import ToolChoice, ToolResult, ToolSpec

__all__ = [
    "AnthropicRequest",
    "error_event",
    "error_response",
    "message",
    "models_response",
    "parse_request",
    "stream_response",
]

_encode = msgspec.json.Encoder().encode
_JSON = ("content-type", "application/json")
_SSE_HEADERS = (("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache"))
_PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_PING_EVERY = 40
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicRequest(msgspec.Struct, frozen=True, kw_only=True):
    conversation: Conversation
    model: str
    stream: bool


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(
    status: int, message: str, request_id: str | None = None, error_type: str | None = None
) -> bytes:
    """The error object; its ``type`` follows ``status`` unless ``error_type`` is given."""
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": error_type or _error_type(status), "message": message},
    }
    if request_id is not None:
        body["request_id"] = request_id
    return _encode(body)


def error_response(
    status: int,
    message: str,
    *,
    request_id: str,
    retry_after: float | None = None,
    error_type: str | None = None,
) -> HTTPResponse:
    """An HTTP error before any stream: ``{"type": "error", "error": {"type", "message"}}``."""
    headers = [_JSON, ("request-id", request_id)]
    if retry_after is not None:
        headers.append(("retry-after", f"{retry_after:g}"))
    return HTTPResponse(status, headers, error_body(status, message, request_id, error_type))


def error_event(status: int, message: str, error_type: str | None = None) -> bytes:
    """An ``event: error`` after HTTP 200, as Anthropic sends when overloaded mid-stream."""
    return b"event: error\ndata: " + error_body(status, message, None, error_type) + b"\n\n"


def _event(kind: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encode({"type": kind, **payload}) + b"\n\n"


def _tools(body: Mapping[str, Any]) -> tuple[ToolSpec, ...]:
    specs = []
    for tool in body.get("tools") or ():
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            specs.append(
                ToolSpec(
                    name=tool["name"],
                    description=str(tool.get("description") or ""),
                    parameters=tool.get("input_schema") or {},
                )
            )
    return tuple(specs)


def _tool_choice(body: Mapping[str, Any]) -> ToolChoice:
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        return ToolChoice()
    parallel = choice.get("disable_parallel_tool_use") is not True
    kind = choice.get("type")
    if kind == "none":
        return ToolChoice(mode="none", parallel=parallel)
    if kind == "any":
        return ToolChoice(mode="required", parallel=parallel)
    if kind == "tool":
        return ToolChoice(mode="required", name=choice.get("name"), parallel=parallel)
    return ToolChoice(parallel=parallel)


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return [block for block in content if isinstance(block, dict)]
    return []


def parse_request(body: Any) -> AnthropicRequest:
    """Validate like the real API (model, max_tokens, messages required); reduce the request."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            raise BadRequest(f"{field}: Field required")
    model = body["model"]
    limit = body["max_tokens"]
    messages = body["messages"]
    if not isinstance(model, str) or not model:
        raise BadRequest("model: String should have at least 1 character")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise BadRequest("max_tokens: Input should be greater than or equal to 1")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRequest("messages: Input should be a valid list")

    uses: dict[str, tuple[str, dict[str, Any]]] = {}
    context = [text_of(body.get("system"))]
    prompt = ""
    for msg in messages:
        text = text_of(msg.get("content"))
        context.append(text)
        if msg.get("role") == "user" and text:
            prompt = text
        for block in _blocks(msg.get("content")):
            if block.get("type") == "tool_use":
                given = block.get("input")
                arguments: dict[str, Any] = given if isinstance(given, dict) else {}
                uses[str(block.get("id"))] = (str(block.get("name", "")), arguments)
                context.append(json.dumps(arguments, ensure_ascii=False))
            elif block.get("type") == "tool_result":
                context.append(text_of(block.get("content")))
    results: list[ToolResult] = []
    if messages and messages[-1].get("role") == "user":
        for block in _blocks(messages[-1].get("content")):
            if block.get("type") == "tool_result":
                name, arguments = uses.get(str(block.get("tool_use_id")), (None, {}))
                content = text_of(block.get("content"))
                results.append(ToolResult(name=name, arguments=arguments, content=content))
    if body.get("tools"):
        context.append(json.dumps(body["tools"], ensure_ascii=False))
    thinking = body.get("thinking")
    return AnthropicRequest(
        conversation=Conversation(
            prompt=prompt,
            context="\n".join(context),
            messages=len(messages),
            tools=_tools(body),
            tool_choice=_tool_choice(body),
            tool_results=tuple(results),
            max_tokens=limit,
            wants_reasoning=isinstance(thinking, dict) and thinking.get("type") == "enabled",
        ),
        model=model,
        stream=body.get("stream") is True,
    )


def _message_id(plan: Plan) -> str:
    return derive_id("msg_01", 22, plan.key, "message")


def _signature(plan: Plan) -> str:
    digest = b"".join(hashlib.sha256(f"{plan.key}:{n}".encode()).digest() for n in range(3))
    return base64.b64encode(digest).decode()


def _output(plan: Plan, request: AnthropicRequest) -> Output:
    return make_output(
        plan,
        max_tokens=request.conversation.max_tokens,
        compact_json=False,
        call_id=lambda index: derive_id("toolu_01", 22, plan.key, "tool", index),
        with_preamble=True,
    )


def _usage(output: Output, *, start: bool = False) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": output.prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    if start:
        usage["cache_creation"] = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
        usage["output_tokens"] = 1
        usage["service_tier"] = "standard"
    else:
        usage["output_tokens"] = output.completion_tokens
    return usage


def _groups(tokens: tuple[str, ...], size: int) -> list[tuple[str, int]]:
    return [
        ("".join(tokens[start : start + size]), len(tokens[start : start + size]))
        for start in range(0, len(tokens), size)
    ]


def stream_steps(
    plan: Plan, request: AnthropicRequest, config: SimulatorConfig
) -> tuple[list[Step], Output]:
    """Every event of the stream, in order, ready for pacing."""
    output = _output(plan, request)
    size = config.chunk_tokens
    steps: list[Step] = []
    start: dict[str, Any] = {
        "model": request.model,
        "id": _message_id(plan),
        "type": "message",
        "role": "assistant",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(output, start=True),
    }
    steps.append(Step(_event("message_start", {"message": start})))
    index = 0
    content_events = 0

    def block_start(block: dict[str, Any]) -> None:
        steps.append(Step(_event("content_block_start", {"index": index, "content_block": block})))
        if index == 0:
            steps.append(Step(_PING))

    def block_delta(delta: dict[str, Any], tokens: int, arguments: bool = False) -> None:
        nonlocal content_events
        event = _event("content_block_delta", {"index": index, "delta": delta})
        steps.append(Step(event, tokens, arguments=arguments))
        if tokens:
            content_events += 1
            if content_events % _PING_EVERY == 0:
                steps.append(Step(_PING))

    def block_stop() -> None:
        nonlocal index
        steps.append(Step(_event("content_block_stop", {"index": index})))
        index += 1

    if output.reasoning:
        block_start({"type": "thinking", "thinking": "", "signature": ""})
        for text, count in _groups(output.reasoning, size):
            block_delta({"type": "thinking_delta", "thinking": text}, count)
        block_delta({"type": "signature_delta", "signature": _signature(plan)}, 0)
        block_stop()
    if output.text or not output.calls:
        block_start({"type": "text", "text": ""})
        for text, count in _groups(output.text, size):
            block_delta({"type": "text_delta", "text": text}, count)
        block_stop()
    for call in output.calls:
        block_start({"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
        block_delta({"type": "input_json_delta", "partial_json": ""}, 0, arguments=True)
        for piece, count in _groups(call.fragments, size):
            block_delta({"type": "input_json_delta", "partial_json": piece}, count, arguments=True)
        block_stop()
    stop = {"stop_reason": _STOP_REASONS[output.finish], "stop_sequence": None}
    steps.append(Step(_event("message_delta", {"delta": stop, "usage": _usage(output)})))
    steps.append(Step(_event("message_stop", {}), terminal=True))
    return steps, output


def _fault_events(output: Output, config: SimulatorConfig) -> FaultEvents:
    fault = config.fault
    text_block = 1 if output.reasoning else 0  # after a thinking block, if any

    def text(content: str) -> bytes:
        delta = {"type": "text_delta", "text": content}
        return _event("content_block_delta", {"index": text_block, "delta": delta})

    return FaultEvents(
        malformed=b"event: content_block_delta\ndata: {not json\n\n",
        error=error_event(
            fault.status if fault else 529,
            fault.message if fault else "",
            fault.error_type if fault else None,
        ),
        keep_alive=_PING,
        invalid_utf8=fill_text(text, INVALID_UTF8),
        nul_byte=fill_text(text, NUL_TEXT),
        wrong_shape=(
            b"event: content_block_delta\n"
            b'data: {"type":"content_block_delta","index":"zero","delta":[1]}\n\n'
        ),
        # A ping (which every client ignores) padded by the data lines that follow.
        oversize=(b'event: ping\ndata: {"type": "ping", "padding": [\n', b'data: ""]}\n\n'),
    )


def stream_response(
    plan: Plan, request: AnthropicRequest, config: SimulatorConfig, request_id: str
) -> HTTPResponse:
    steps, output = stream_steps(plan, request, config)
    faults = _fault_events(output, config)
    rng = random.Random(stable_int("pace", plan.key))
    body = paced(steps, config, faults, rng)
    return HTTPResponse(200, [*_SSE_HEADERS, ("request-id", request_id)], body)


def message(plan: Plan, request: AnthropicRequest) -> tuple[bytes, int]:
    """The non-streaming ``message`` body, and its output token count."""
    output = _output(plan, request)
    content: list[dict[str, Any]] = []
    if output.reasoning:
        content.append(
            {
                "type": "thinking",
                "thinking": "".join(output.reasoning),
                "signature": _signature(plan),
            }
        )
    if output.text or not output.calls:
        content.append({"type": "text", "text": "".join(output.text)})
    for call in output.calls:
        try:
            arguments = json.loads(call.arguments) if call.arguments else {}
        except ValueError:
            arguments = {}  # cut by max_tokens; the real API would not return it either
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    usage = _usage(output, start=True)
    usage["output_tokens"] = output.completion_tokens
    body = {
        "model": request.model,
        "id": _message_id(plan),
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": _STOP_REASONS[output.finish],
        "stop_sequence": None,
        "usage": usage,
    }
    return _encode(body), output.completion_tokens


def models_response(model: str) -> HTTPResponse:
    body = {
        "data": [
            {
                "type": "model",
                "id": model,
                "display_name": model,
                "created_at": "2025-01-01T00:00:00Z",
            }
        ],
        "has_more": False,
        "first_id": model,
        "last_id": model,
    }
    return HTTPResponse(200, [_JSON], _encode(body))
