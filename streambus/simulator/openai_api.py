"""The OpenAI Chat Completions wire format, as api.openai.com sends it.

Chunks carry the same fields, in the same order, as the real service (``service_tier``,
``system_fingerprint``, ``usage: null`` when usage was asked for, ``obfuscation`` unless
``stream_options.include_obfuscation`` is false). Reasoning uses the OpenAI-compatible
``delta.reasoning_content`` that DeepSeek and vLLM send.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

import msgspec

from ._http import HTTPResponse
from .config import SimulatorConfig
from .corpus import stable_int
from .pacing import INVALID_UTF8, NUL_TEXT, FaultEvents, Step, fill_text, paced
from .plan import (
    BadRequest,
    Conversation,
    Output,
    Plan,
    derive_id,
    make_output,
    text_of,
)
from .tools import ToolChoice, ToolResult, ToolSpec

__all__ = [
    "OpenAIRequest",
    "completion",
    "error_event",
    "error_response",
    "models_response",
    "parse_request",
    "stream_response",
]

_encode = msgspec.json.Encoder().encode
_SSE_HEADERS = (
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("openai-version", "2020-10-01"),
)
_JSON = ("content-type", "application/json")
_OBFUSCATION_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class OpenAIRequest(msgspec.Struct, frozen=True, kw_only=True):
    conversation: Conversation
    model: str
    stream: bool
    include_usage: bool
    obfuscate: bool


def _error_kind(status: int) -> tuple[str, str | None]:
    if status == 401:
        return "invalid_request_error", "invalid_api_key"
    if status == 404:
        return "invalid_request_error", "model_not_found"
    if status == 429:
        return "requests", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


def error_body(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    error_type: str | None = None,
) -> bytes:
    """The error object; its ``type`` follows ``status`` unless ``error_type`` is given."""
    kind, default_code = _error_kind(status)
    error = {
        "message": message,
        "type": error_type or kind,
        "param": param,
        "code": code or default_code,
    }
    return _encode({"error": error})


def error_response(
    status: int,
    message: str,
    *,
    request_id: str,
    retry_after: float | None = None,
    param: str | None = None,
    code: str | None = None,
    error_type: str | None = None,
) -> HTTPResponse:
    """An HTTP error before any stream: ``{"error": {"message", "type", "param", "code"}}``."""
    headers = [_JSON, ("x-request-id", request_id)]
    if retry_after is not None:
        headers.append(("retry-after", f"{retry_after:g}"))
    body = error_body(status, message, param=param, code=code, error_type=error_type)
    return HTTPResponse(status, headers, body)


def error_event(status: int, message: str, error_type: str | None = None) -> bytes:
    """A mid-stream error after HTTP 200, the way OpenAI reports one inside the stream."""
    return b"data: " + error_body(status, message, error_type=error_type) + b"\n\n"


def _tools(body: Mapping[str, Any]) -> tuple[ToolSpec, ...]:
    specs = []
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            specs.append(
                ToolSpec(
                    name=function["name"],
                    description=str(function.get("description") or ""),
                    parameters=function.get("parameters") or {},
                )
            )
    return tuple(specs)


def _tool_choice(body: Mapping[str, Any]) -> ToolChoice:
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls") is not False
    if choice in ("none", "auto", "required"):
        return ToolChoice(mode=choice, parallel=parallel)
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return ToolChoice(mode="required", name=choice["function"].get("name"), parallel=parallel)
    return ToolChoice(parallel=parallel)


def _loads_object(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def parse_request(body: Any) -> OpenAIRequest:
    """Validate like the real API (model and messages required) and reduce the request."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise BadRequest("Invalid 'max_tokens': expected an integer >= 1.", param="max_tokens")

    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    context: list[str] = []
    prompt = ""
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("Invalid type for 'messages': expected an array of objects.")
        text = text_of(message.get("content"))
        context.append(text)
        if message.get("role") == "user" and text:
            prompt = text
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            arguments = _loads_object(function.get("arguments"))
            calls[str(call.get("id"))] = (str(function.get("name", "")), arguments)
            context.append(f"{function.get('name', '')} {function.get('arguments', '')}")
    results: list[ToolResult] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        name, arguments = calls.get(str(message.get("tool_call_id")), (None, {}))
        content = text_of(message.get("content"))
        results.insert(0, ToolResult(name=name, arguments=arguments, content=content))
    tools = _tools(body)
    if body.get("tools"):
        context.append(json.dumps(body["tools"], ensure_ascii=False))
    options = body.get("stream_options") or {}
    return OpenAIRequest(
        conversation=Conversation(
            prompt=prompt,
            context="\n".join(context),
            messages=len(messages),
            tools=tools,
            tool_choice=_tool_choice(body),
            tool_results=tuple(results),
            max_tokens=limit,
        ),
        model=model,
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        obfuscate=not (isinstance(options, dict) and options.get("include_obfuscation") is False),
    )


class _Ids(msgspec.Struct, frozen=True, kw_only=True):
    completion: str
    created: int
    fingerprint: str


def _ids(plan: Plan, seed: int, model: str) -> _Ids:
    return _Ids(
        completion=derive_id("chatcmpl-", 29, plan.key, "completion"),
        created=1_735_689_600 + stable_int("created", seed) % 31_536_000,
        fingerprint=f"fp_{stable_int('fingerprint', seed, model):016x}"[:13],
    )


def _output(plan: Plan, request: OpenAIRequest) -> Output:
    return make_output(
        plan,
        max_tokens=request.conversation.max_tokens,
        compact_json=True,
        call_id=lambda index: derive_id("call_", 24, plan.key, "call", index),
        with_preamble=False,
    )


def _usage(output: Output) -> dict[str, Any]:
    return {
        "prompt_tokens": output.prompt_tokens,
        "completion_tokens": output.completion_tokens,
        "total_tokens": output.prompt_tokens + output.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": len(output.reasoning),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _groups(tokens: tuple[str, ...], size: int) -> list[tuple[str, int]]:
    return [
        ("".join(tokens[start : start + size]), len(tokens[start : start + size]))
        for start in range(0, len(tokens), size)
    ]


def stream_steps(
    plan: Plan, request: OpenAIRequest, config: SimulatorConfig
) -> tuple[list[Step], Output]:
    """Every event of the stream, in order, ready for pacing."""
    ids = _ids(plan, config.seed, request.model)
    output = _output(plan, request)
    rng = random.Random(stable_int("obfuscation", plan.key))

    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        event: dict[str, Any] = {
            "id": ids.completion,
            "object": "chat.completion.chunk",
            "created": ids.created,
            "model": request.model,
            "service_tier": "default",
            "system_fingerprint": ids.fingerprint,
            "choices": choices,
        }
        if request.include_usage:
            event["usage"] = usage
        if request.obfuscate:
            size = rng.randint(1, 16)
            event["obfuscation"] = "".join(rng.choice(_OBFUSCATION_CHARS) for _ in range(size))
        return b"data: " + _encode(event) + b"\n\n"

    def delta(fields: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": fields, "logprobs": None, "finish_reason": finish}
        return chunk([choice])

    size = config.chunk_tokens
    steps: list[Step] = []
    role: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    if output.calls and not output.text and not output.reasoning:
        role["content"] = None  # the first call's header carries the role
    else:
        steps.append(Step(delta(role)))
        role = {}
    for text, count in _groups(output.reasoning, size):
        steps.append(Step(delta({"reasoning_content": text}), tokens=count))
    for text, count in _groups(output.text, size):
        steps.append(Step(delta({"content": text}), tokens=count))
    for index, call in enumerate(output.calls):
        header = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        fields = {**role, "tool_calls": [header]}
        if role:
            fields["refusal"] = fields.pop("refusal")  # keep the real key order
            role = {}
        steps.append(Step(delta(fields), tokens=1))
        for piece, count in _groups(call.fragments, size):
            fragment = {"index": index, "function": {"arguments": piece}}
            steps.append(Step(delta({"tool_calls": [fragment]}), tokens=count, arguments=True))
    steps.append(Step(delta({}, output.finish)))
    if request.include_usage:
        steps.append(Step(chunk([], _usage(output))))
    steps.append(Step(b"data: [DONE]\n\n", terminal=True))
    return steps, output


def _fault_events(plan: Plan, request: OpenAIRequest, config: SimulatorConfig) -> FaultEvents:
    fault = config.fault
    ids = _ids(plan, config.seed, request.model)
    head = {
        "id": ids.completion,
        "object": "chat.completion.chunk",
        "created": ids.created,
        "model": request.model,
    }

    def text(content: str) -> bytes:
        choice = {"index": 0, "delta": {"content": content}, "logprobs": None}
        event = {**head, "choices": [{**choice, "finish_reason": None}]}
        return b"data: " + _encode(event) + b"\n\n"

    # A chunk with no choices, as the usage chunk; the padding lines complete its JSON.
    padded = b"data: " + _encode({**head, "choices": []})[:-1] + b', "padding": [\n'
    return FaultEvents(
        malformed=b"data: {not json\n\n",
        error=error_event(
            fault.status if fault else 500,
            fault.message if fault else "",
            fault.error_type if fault else None,
        ),
        keep_alive=b": keep-alive\n\n",
        invalid_utf8=fill_text(text, INVALID_UTF8),
        nul_byte=fill_text(text, NUL_TEXT),
        wrong_shape=b'data: {"choices": "nope"}\n\n',
        oversize=(padded, b'data: ""]}\n\n'),
    )


def stream_response(
    plan: Plan, request: OpenAIRequest, config: SimulatorConfig, request_id: str
) -> HTTPResponse:
    steps, _ = stream_steps(plan, request, config)
    faults = _fault_events(plan, request, config)
    rng = random.Random(stable_int("pace", plan.key))
    body = paced(steps, config, faults, rng)
    return HTTPResponse(200, [*_SSE_HEADERS, ("x-request-id", request_id)], body)


def completion(plan: Plan, request: OpenAIRequest, config: SimulatorConfig) -> tuple[bytes, int]:
    """The non-streaming ``chat.completion`` body, and its completion token count."""
    ids = _ids(plan, config.seed, request.model)
    output = _output(plan, request)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(output.text) if output.text or not output.calls else None,
        "refusal": None,
        "annotations": [],
    }
    if output.reasoning:
        message["reasoning_content"] = "".join(output.reasoning)
    if output.calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in output.calls
        ]
    body = {
        "id": ids.completion,
        "object": "chat.completion",
        "created": ids.created,
        "model": request.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": output.finish}
        ],
        "usage": _usage(output),
        "service_tier": "default",
        "system_fingerprint": ids.fingerprint,
    }
    return _encode(body), output.completion_tokens


def models_response(model: str) -> HTTPResponse:
    body = {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 1_735_689_600, "owned_by": "system"}],
    }
    return HTTPResponse(200, [_JSON], _encode(body))
