"""Both normalizers, event by event: each trap of ../shared/wire-formats.md, and the session
contract (start first, gapless seq, exactly one stop, nothing after it)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streambus import (
    AnthropicNormalizer,
    Delta,
    Event,
    OpenAINormalizer,
    ServerSentEvent,
    Start,
    Stop,
    ToolDelta,
    Usage,
    assemble,
)
from streambus.normalizers import Normalizer, normalize_stop_reason


def oa(payload: Any) -> ServerSentEvent:
    return ServerSentEvent(data=payload if isinstance(payload, str) else json.dumps(payload))


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> Any:
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    return oa({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [choice], **extra})


def an(kind: str, **payload: Any) -> ServerSentEvent:
    return ServerSentEvent(event=kind, data=json.dumps({"type": kind, **payload}))


def run(normalizer: Normalizer, sse: list[ServerSentEvent], *, end: bool = True) -> list[Event]:
    events: list[Event] = [normalizer.start()]
    for i, item in enumerate(sse):  # one event per read, with increasing times
        events += normalizer.receive([item], (i + 1) * 1000)
    if end:
        events += normalizer.end_of_stream(10**9)
    assert_contract(events)
    return events


def assert_contract(events: list[Event]) -> None:
    assert isinstance(events[0], Start) and events[0].t_ns == 0
    assert [e.seq for e in events] == list(range(len(events)))
    stops = [e for e in events if isinstance(e, Stop)]
    assert len(stops) == 1 and events[-1] is stops[0]
    assert len({e.session for e in events}) == 1


def openai_normalizer() -> OpenAINormalizer:
    return OpenAINormalizer(session="s", model="gpt-4o")


def anthropic_normalizer() -> AnthropicNormalizer:
    return AnthropicNormalizer(session="s", model="claude")


# -- OpenAI ---------------------------------------------------------------------------------------


def test_openai_text_usage_and_done() -> None:
    events = run(
        openai_normalizer(),
        [
            chunk({"role": "assistant", "content": "", "refusal": None}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, finish="stop"),
            oa(
                {
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 5,
                        "completion_tokens": 2,
                        "prompt_tokens_details": {"cached_tokens": 1},
                        "completion_tokens_details": {"reasoning_tokens": 0},
                    },
                }
            ),
            oa("[DONE]"),
        ],
    )
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Start", "Delta", "Delta", "Usage", "Stop"]  # the empty role chunk is silent
    assert events[-2] == Usage(
        session="s",
        seq=3,
        t_ns=6000,
        input_tokens=5,
        output_tokens=2,
        cached_tokens=1,
        reasoning_tokens=0,
    )
    assert events[-1] == Stop(session="s", seq=4, t_ns=6000, reason="stop", raw_reason="stop")
    assert assemble(events).text == "Hello"


def test_openai_reasoning_refusal_channels() -> None:
    events = run(
        openai_normalizer(),
        [
            chunk({"reasoning_content": "think "}),
            chunk({"reasoning": "more"}),
            chunk({"refusal": "I can't"}),
            chunk({"content": "ok"}),
            chunk({}, finish="content_filter"),
            oa("[DONE]"),
        ],
    )
    deltas = [(e.channel, e.text) for e in events if isinstance(e, Delta)]
    assert deltas == [
        ("reasoning", "think "),
        ("reasoning", "more"),
        ("refusal", "I can't"),
        ("text", "ok"),
    ]
    assert events[-1].reason == "content_filter"  # type: ignore[union-attr]


def test_openai_parallel_tool_calls_interleaved() -> None:
    def tc(index: int, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **fields}]}

    events = run(
        openai_normalizer(),
        [
            chunk(
                tc(
                    0,
                    id="call_a",
                    type="function",
                    function={"name": "get_weather", "arguments": ""},
                )
            ),
            chunk(
                tc(1, id="call_b", type="function", function={"name": "get_time", "arguments": ""})
            ),
            chunk(tc(0, function={"arguments": '{"location": '})),
            chunk(tc(1, function={"arguments": '{"tz": "KST"}'})),
            chunk(tc(0, function={"arguments": '"서울"}'})),
            chunk({}, finish="tool_calls"),
            oa("[DONE]"),
        ],
    )
    message = assemble(events)
    assert [(c.index, c.id, c.name, json.loads(c.arguments)) for c in message.tool_calls] == [
        (0, "call_a", "get_weather", {"location": "서울"}),
        (1, "call_b", "get_time", {"tz": "KST"}),
    ]
    firsts = [e for e in events if isinstance(e, ToolDelta) and e.id]
    assert [e.name for e in firsts] == ["get_weather", "get_time"]
    assert all(e.name is None for e in events if isinstance(e, ToolDelta) and not e.id)
    assert message.stop is not None and message.stop.reason == "tool_calls"


def test_openai_one_fragment_call_and_index_reuse_for_a_new_id() -> None:
    whole = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a":1}'}}
    second = {"index": 0, "id": "call_2", "function": {"name": "g", "arguments": "{}"}}
    events = run(
        openai_normalizer(),
        [
            chunk({"tool_calls": [whole]}),
            chunk({"tool_calls": [second]}),
            chunk({}, "tool_calls"),
            oa("[DONE]"),
        ],
    )
    calls = assemble(events).tool_calls
    assert [(c.index, c.id, c.name, c.arguments) for c in calls] == [
        (0, "call_1", "f", '{"a":1}'),
        (1, "call_2", "g", "{}"),
    ]


def test_openai_empty_then_braces_arguments() -> None:
    first = {"index": 0, "id": "call_1", "function": {"name": "now", "arguments": ""}}
    events = run(
        openai_normalizer(),
        [
            chunk({"tool_calls": [first]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            chunk({}, "tool_calls"),
            oa("[DONE]"),
        ],
    )
    assert assemble(events).tool_calls[0].arguments == "{}"


def test_openai_repeated_name_on_every_fragment_is_passed_on_once() -> None:
    frag = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a"'}}
    rest = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ":1}"}}
    events = run(
        openai_normalizer(),
        [chunk({"tool_calls": [frag]}), chunk({"tool_calls": [rest]}), oa("[DONE]")],
    )
    tool = [e for e in events if isinstance(e, ToolDelta)]
    assert [(e.id, e.name, e.arguments) for e in tool] == [
        ("call_1", "f", '{"a"'),
        (None, None, ":1}"),
    ]


def test_openai_azure_prelude_is_skipped() -> None:
    prelude = oa({"choices": [], "prompt_filter_results": [{"prompt_index": 0}], "id": ""})
    events = run(
        openai_normalizer(), [prelude, chunk({"content": "hi"}), chunk({}, "stop"), oa("[DONE]")]
    )
    assert assemble(events).text == "hi"


def test_openai_missing_done_is_an_error_keeping_the_raw_reason() -> None:
    events = run(openai_normalizer(), [chunk({"content": "partial"}), chunk({}, "stop")])
    stop = events[-1]
    assert isinstance(stop, Stop)
    assert stop.reason == "error" and stop.raw_reason == "stop"
    assert stop.error == "stream ended before [DONE]"
    assert assemble(events).text == "partial"


def test_openai_mid_stream_error_ends_the_session_and_ignores_the_rest() -> None:
    error = oa(
        {"error": {"message": "The server had an error", "type": "server_error", "code": None}}
    )
    events = run(
        openai_normalizer(), [chunk({"content": "a"}), error, chunk({"content": "b"}), oa("[DONE]")]
    )
    stop = events[-1]
    assert isinstance(stop, Stop) and stop.reason == "error"
    assert stop.error == "openai stream error: The server had an error (server_error)"
    assert assemble(events).text == "a"


@pytest.mark.parametrize(
    "payload",
    ["{not json", '{"choices": "nope"}', '{"choices": [{"delta": {"content": 5}}]}', "[1, 2]"],
)
def test_openai_malformed_or_wrongly_shaped_chunk_is_a_clear_error(payload: str) -> None:
    events = run(openai_normalizer(), [chunk({"content": "kept"}), oa(payload)])
    stop = events[-1]
    assert isinstance(stop, Stop) and stop.reason == "error"
    assert stop.error is not None and stop.error.startswith("malformed chunk from server:")
    assert assemble(events).text == "kept"


def test_openai_other_choices_are_ignored() -> None:
    other = oa({"choices": [{"index": 1, "delta": {"content": "x"}, "finish_reason": None}]})
    events = run(openai_normalizer(), [other, chunk({"content": "y"}), oa("[DONE]")])
    assert assemble(events).text == "y"


def test_receive_after_stop_is_silently_dropped_and_end_is_idempotent() -> None:
    normalizer = openai_normalizer()
    events = run(normalizer, [oa("[DONE]")])
    assert normalizer.receive([chunk({"content": "late"})], 5) == []
    assert normalizer.end_of_stream(6) == []
    assert normalizer.cancel(7) == []
    assert len(events) == 2


def test_cancel_and_fail_keep_pending_usage() -> None:
    normalizer = openai_normalizer()
    normalizer.start()
    normalizer.receive(
        [oa({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}})], 1
    )
    out = normalizer.cancel(2)
    assert isinstance(out[0], Usage) and out[0].input_tokens == 3
    assert isinstance(out[1], Stop) and out[1].reason == "cancelled" and out[1].error is None


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("stop", "stop"),
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("length", "length"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_calls", "tool_calls"),
        ("tool_use", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_stop_reason_mapping(raw: str | None, normalized: str) -> None:
    assert normalize_stop_reason(raw) == normalized


# -- Anthropic ------------------------------------------------------------------------------------


def message_start(input_tokens: int = 10) -> ServerSentEvent:
    return an(
        "message_start",
        message={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude",
            "stop_reason": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": 1,
                "cache_read_input_tokens": 4,
            },
        },
    )


def message_end(reason: str = "end_turn", output_tokens: int = 20) -> list[ServerSentEvent]:
    return [
        an(
            "message_delta",
            delta={"stop_reason": reason, "stop_sequence": None},
            usage={"output_tokens": output_tokens},
        ),
        an("message_stop"),
    ]


def block(index: int, content_block: dict[str, Any]) -> ServerSentEvent:
    return an("content_block_start", index=index, content_block=content_block)


def delta(index: int, **d: Any) -> ServerSentEvent:
    return an("content_block_delta", index=index, delta=d)


def block_stop(index: int) -> ServerSentEvent:
    return an("content_block_stop", index=index)


def test_anthropic_thinking_text_and_usage() -> None:
    events = run(
        anthropic_normalizer(),
        [
            message_start(),
            block(0, {"type": "thinking", "thinking": "", "signature": ""}),
            delta(0, type="thinking_delta", thinking="Let me think."),
            delta(0, type="signature_delta", signature="EqQBCgIYAhIM"),
            block_stop(0),
            block(1, {"type": "text", "text": ""}),
            ServerSentEvent(event="ping", data='{"type": "ping"}'),
            delta(1, type="text_delta", text="안녕"),
            delta(1, type="text_delta", text="하세요"),
            block_stop(1),
            *message_end(),
        ],
    )
    message = assemble(events)
    assert message.reasoning == "Let me think."
    assert message.text == "안녕하세요"
    signatures = [e.signature for e in events if isinstance(e, Delta) and e.signature]
    assert signatures == ["EqQBCgIYAhIM"]
    assert message.usage is not None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 20)
    assert message.usage.cached_tokens == 4
    assert message.stop is not None
    assert (message.stop.reason, message.stop.raw_reason) == ("stop", "end_turn")


def test_anthropic_tool_index_counts_tool_calls_not_content_blocks() -> None:
    events = run(
        anthropic_normalizer(),
        [
            message_start(),
            block(0, {"type": "text", "text": ""}),
            delta(0, type="text_delta", text="Checking."),
            block_stop(0),
            block(1, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
            delta(1, type="input_json_delta", partial_json=""),
            delta(1, type="input_json_delta", partial_json='{"location": "Se'),
            delta(1, type="input_json_delta", partial_json='oul"}'),
            block_stop(1),
            block(2, {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}),
            block_stop(2),
            *message_end("tool_use"),
        ],
    )
    tool_events = [e for e in events if isinstance(e, ToolDelta)]
    assert {e.index for e in tool_events} == {0, 1}
    calls = assemble(events).tool_calls
    assert [(c.index, c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        (0, "toolu_1", "get_weather", {"location": "Seoul"}),
        (1, "toolu_2", "get_time", {}),  # no input_json_delta at all means {}
    ]
    assert events[-1].reason == "tool_calls"  # type: ignore[union-attr]


def test_anthropic_error_event_after_200() -> None:
    events = run(
        anthropic_normalizer(),
        [
            message_start(),
            block(0, {"type": "text", "text": ""}),
            delta(0, type="text_delta", text="Part"),
            an("error", error={"type": "overloaded_error", "message": "Overloaded"}),
            delta(0, type="text_delta", text="never"),
        ],
    )
    stop = events[-1]
    assert isinstance(stop, Stop) and stop.reason == "error"
    assert stop.error == "anthropic stream error: Overloaded (overloaded_error)"
    assert assemble(events).text == "Part"


def test_anthropic_unknown_events_and_deltas_are_ignored() -> None:
    events = run(
        anthropic_normalizer(),
        [
            message_start(),
            an("brand_new_event", stuff=[1, 2]),
            block(0, {"type": "text", "text": ""}),
            delta(0, type="citations_delta", citation={"type": "char_location"}),
            delta(0, type="future_delta", whatever=True),
            delta(0, type="text_delta", text="ok"),
            block_stop(0),
            block(1, {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va"}),
            block_stop(1),
            *message_end("stop_sequence"),
        ],
    )
    assert assemble(events).text == "ok"
    assert events[-1].reason == "stop"  # type: ignore[union-attr]


def test_anthropic_missing_message_stop_is_an_error() -> None:
    events = run(
        anthropic_normalizer(),
        [
            message_start(),
            block(0, {"type": "text", "text": ""}),
            delta(0, type="text_delta", text="cut"),
        ],
    )
    stop = events[-1]
    assert isinstance(stop, Stop) and stop.reason == "error"
    assert stop.error == "stream ended before message_stop"
    usage = events[-2]
    assert isinstance(usage, Usage) and usage.input_tokens == 10  # what arrived is kept


def test_anthropic_tool_use_with_input_given_at_block_start() -> None:
    events = run(
        anthropic_normalizer(),
        [
            message_start(),
            block(0, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": [1, 2]}}),
            block_stop(0),
            *message_end("tool_use"),
        ],
    )
    assert json.loads(assemble(events).tool_calls[0].arguments) == {"x": [1, 2]}


def test_anthropic_malformed_event_is_a_clear_error() -> None:
    events = run(
        anthropic_normalizer(), [message_start(), ServerSentEvent(event="x", data="{oops")]
    )
    stop = events[-1]
    assert isinstance(stop, Stop) and stop.error is not None
    assert stop.error.startswith("malformed event from server:")
