"""The provider simulator, over real loopback sockets.

Its output is checked by the official OpenAI and Anthropic SDKs (which run under trio through
anyio): what they accumulate must equal what the simulator meant to say. Raw bytes are read
with httpx2 where the exact wire shape matters. Pacing is off (``ttft=0``,
``tokens_per_second=0``) except where timing is the point; the real clock is used throughout.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import msgspec
import openai
import pytest
import trio

from streambus.simulator import (
    Canned,
    Fault,
    Simulator,
    SimulatorConfig,
    open_simulator,
    parse_fault,
    serve_canned,
    start_in_thread,
)
from streambus.simulator.corpus import (
    CORPUS,
    choose_entry,
    detect_language,
    tokenize,
)

# Under trio both SDKs (and httpx2 beneath them) leave async generators unexhausted when they
# stop at [DONE] or raise mid-stream; trio warns as it finalizes them. Harmless here.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\.:ResourceWarning"
)

FAST = SimulatorConfig(ttft=0, tokens_per_second=0)
# Building a TLS context costs ~0.15 s per client; share one (all traffic is plain HTTP).
TLS = ssl.create_default_context()
KO_PROMPT = "안녕하세요, 스트리밍이 뭐예요?"
EN_PROMPT = "What is an LLM, in a few words?"

WEATHER_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["location", "unit"],
        },
    },
}
TIME_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_local_time",
        "description": "Get the local time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "utc": {"type": "boolean"}},
            "required": ["city", "utc"],
        },
    },
}
SEARCH_OPENAI = {
    "type": "function",
    "function": {
        "name": "search_docs",
        "description": "Search the product documentation",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


def as_anthropic(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    return {
        "name": function["name"],
        "description": function["description"],
        "input_schema": function["parameters"],
    }


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator(FAST) as simulator:
        yield simulator


def http(**kwargs: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(verify=TLS, **kwargs)


@pytest.fixture
async def oai(sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=sim.base_url, api_key="sk-test", max_retries=0, http_client=http()
    ) as client:
        yield client


@pytest.fixture
async def claude(sim: Simulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=sim.anthropic_base_url, api_key="sk-ant-test", max_retries=0, http_client=http()
    ) as client:
        yield client


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) pairs; the simulator always writes LF line ends."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


async def post_raw(url: str, body: dict[str, Any], **kwargs: Any) -> httpx2.Response:
    async with http(**kwargs) as client:
        return await client.post(url, json=body)


def chat(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "sim-1",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        **extra,
    }


def messages(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "sim-1",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        **extra,
    }


# --- corpus ---------------------------------------------------------------------------------


def test_tokens_join_back_to_the_text() -> None:
    samples = [entry.text for entries in CORPUS.values() for entry in entries]
    samples += ["", "a_b  c\r\n\tx 1234567 don't 😀 ㅋㅋ API와", " 뜨기까지  "]
    for text in samples:
        tokens = tokenize(text)
        assert "".join(tokens) == text
        assert all(tokens)
    korean = [t.strip() for t in tokenize(CORPUS["ko"][0].text)]
    assert max(len(t) for t in korean if detect_language(t) == "ko") <= 3


def test_language_and_entry_choice() -> None:
    assert detect_language(KO_PROMPT) == "ko"
    assert detect_language(EN_PROMPT) == "en"
    assert choose_entry(KO_PROMPT).key == "streaming"  # the question beats the greeting
    assert choose_entry("안녕하세요!").key == "greeting"
    assert choose_entry(EN_PROMPT).key == "llm"
    picks = {choose_entry(f"Tell me about cats #{n}", seed=3).key for n in range(12)}
    assert picks == {"general", "general-2"}
    assert choose_entry("Tell me about cats", seed=3) == choose_entry("Tell me about cats", seed=3)


# --- OpenAI text ----------------------------------------------------------------------------


async def test_openai_wire_shape_korean(sim: Simulator) -> None:
    body = chat(KO_PROMPT, stream_options={"include_usage": True})
    response = await post_raw(f"{sim.base_url}/chat/completions", body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["transfer-encoding"] == "chunked"
    events = sse_events(response.content)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    first = chunks[0]
    assert list(first)[:4] == ["id", "object", "created", "model"]
    assert first["id"].startswith("chatcmpl-") and first["object"] == "chat.completion.chunk"
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert len({chunk["id"] for chunk in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == CORPUS["ko"][0].text
    final, usage_chunk = chunks[-2], chunks[-1]
    assert final["choices"][0]["delta"] == {}
    assert final["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == len(tokenize(text)) == len(chunks) - 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert sim.requests == [body]


async def test_openai_sdk_english_stream(sim: Simulator, oai: openai.AsyncOpenAI) -> None:
    client = oai
    async with client.chat.completions.stream(
        model="gpt-sim",
        messages=[{"role": "user", "content": EN_PROMPT}],
        stream_options={"include_usage": True},
    ) as stream:
        events = [event async for event in stream]
        deltas = [e.delta for e in events if e.type == "content.delta" and e.delta]
        completion = await stream.get_final_completion()
    expected = choose_entry(EN_PROMPT).text
    assert "".join(deltas) == expected
    assert completion.model == "gpt-sim"
    assert completion.choices[0].message.content == expected
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(deltas) == len(tokenize(expected))


async def test_openai_non_streaming(sim: Simulator, oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(
        model="sim-1", messages=[{"role": "user", "content": KO_PROMPT}]
    )
    assert completion.choices[0].message.content == CORPUS["ko"][0].text
    assert completion.usage is not None and completion.usage.completion_tokens > 10


async def test_openai_reasoning_and_chunking(sim: Simulator) -> None:
    override = {"include_reasoning": True, "chunk_tokens": 4}
    body = chat(EN_PROMPT, simulator=override)
    events = sse_events((await post_raw(f"{sim.base_url}/chat/completions", body)).content)
    deltas = [json.loads(data)["choices"][0]["delta"] for _, data in events[1:-2]]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    text = "".join(d.get("content") or "" for d in deltas)
    assert reasoning.startswith("The user asked: “What is an LLM")
    assert text == choose_entry(EN_PROMPT).text
    reasoning_events = -(-len(tokenize(reasoning)) // 4)  # four tokens per event, rounded up
    assert list(deltas[reasoning_events - 1]) == ["reasoning_content"]
    assert deltas[reasoning_events] == {"content": "".join(tokenize(text)[:4])}
    assert len(deltas) == reasoning_events + -(-len(tokenize(text)) // 4)


async def test_max_tokens_stops_with_length(
    sim: Simulator, oai: openai.AsyncOpenAI, claude: anthropic.AsyncAnthropic
) -> None:
    completion = await oai.chat.completions.create(
        model="sim-1",
        messages=[{"role": "user", "content": EN_PROMPT}],
        max_completion_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in completion]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(tokenize(choose_entry(EN_PROMPT).text)[:5])
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5

    async with claude.messages.stream(
        model="sim-1", max_tokens=3, messages=[{"role": "user", "content": KO_PROMPT}]
    ) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3
    assert message.content[0].type == "text"
    assert message.content[0].text == "".join(tokenize(CORPUS["ko"][0].text)[:3])


async def test_same_request_same_bytes(sim: Simulator) -> None:
    url = f"{sim.base_url}/chat/completions"
    body = chat(KO_PROMPT, stream_options={"include_usage": True})
    first = (await post_raw(url, body)).content
    assert (await post_raw(url, body)).content == first
    other_seed = (await post_raw(url, {**body, "simulator": {"seed": 7}})).content
    assert other_seed != first
    anthropic_body = messages(EN_PROMPT)
    url = f"{sim.anthropic_base_url}/v1/messages"
    assert (await post_raw(url, anthropic_body)).content == (
        await post_raw(url, anthropic_body)
    ).content


# --- Anthropic text -------------------------------------------------------------------------


async def test_anthropic_wire_shape_and_sdk(
    sim: Simulator, claude: anthropic.AsyncAnthropic
) -> None:
    raw = await post_raw(f"{sim.anthropic_base_url}/v1/messages", messages(KO_PROMPT))
    events = sse_events(raw.content)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for name, data in events:
        assert json.loads(data)["type"] == name
    assert events[2][1] == '{"type": "ping"}'

    async with claude.messages.stream(
        model="sim-1", max_tokens=1024, messages=[{"role": "user", "content": KO_PROMPT}]
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        message = await stream.get_final_message()
    assert text == CORPUS["ko"][0].text
    assert message.id.startswith("msg_01")
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(tokenize(text))
    assert message.usage.input_tokens > 0


async def test_anthropic_thinking_and_non_streaming(
    sim: Simulator, claude: anthropic.AsyncAnthropic
) -> None:
    client = claude
    async with client.messages.stream(
        model="sim-1",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": EN_PROMPT}],
    ) as stream:
        message = await stream.get_final_message()
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking.startswith("The user asked")
    assert len(thinking.signature) > 50
    assert text.type == "text" and text.text == choose_entry(EN_PROMPT).text

    whole = await client.messages.create(
        model="sim-1", max_tokens=100, messages=[{"role": "user", "content": EN_PROMPT}]
    )
    assert whole.content[0].type == "text" and whole.content[0].text == text.text
    assert whole.stop_reason == "end_turn"


# --- faults ---------------------------------------------------------------------------------


async def test_http_error_openai_429_with_retry_after(
    sim: Simulator, oai: openai.AsyncOpenAI
) -> None:
    fault = {"kind": "http_error", "status": 429, "retry_after": 2, "message": "slow down"}
    body = chat(EN_PROMPT, simulator={"fault": fault})
    response = await post_raw(f"{sim.base_url}/chat/completions", body)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["message"] == "slow down"
    assert error["code"] == "rate_limit_exceeded"
    assert set(error) == {"message", "type", "param", "code"}

    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(
            model="sim-1",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"simulator": {"fault": fault}},
        )
    assert caught.value.status_code == 429


async def test_http_error_anthropic_overloaded(
    sim: Simulator, claude: anthropic.AsyncAnthropic
) -> None:
    sim.config = msgspec.structs.replace(FAST, fault=Fault(kind="http_error", status=529))
    response = await post_raw(f"{sim.anthropic_base_url}/v1/messages", messages("hi"))
    assert response.status_code == 529
    body = response.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": "overloaded_error", "message": "simulated failure"}
    with pytest.raises(anthropic.APIStatusError) as caught:
        await claude.messages.create(
            model="sim-1", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 529


async def test_disconnect_truncates_the_body(sim: Simulator, oai: openai.AsyncOpenAI) -> None:
    fault = {"kind": "disconnect", "after_events": 3}
    received = bytearray()
    async with (
        http() as client,
        client.stream(
            "POST",
            f"{sim.base_url}/chat/completions",
            json=chat(EN_PROMPT, simulator={"fault": fault}),
        ) as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx2.RemoteProtocolError):
            async for piece in response.aiter_bytes():
                received += piece
    contents = [json.loads(d)["choices"][0]["delta"] for _, d in sse_events(bytes(received))]
    assert len(contents) == 4  # the role chunk and three content events

    with pytest.raises(openai.APIError):
        stream = await oai.chat.completions.create(
            model="sim-1",
            messages=[{"role": "user", "content": EN_PROMPT}],
            stream=True,
            extra_body={"simulator": {"fault": fault}},
        )
        async for _ in stream:
            pass


async def test_stall_hits_the_client_read_timeout(sim: Simulator) -> None:
    fault = {"kind": "stall", "after_events": 2, "stall_seconds": 30}
    body = chat(EN_PROMPT, simulator={"fault": fault})
    received = bytearray()
    started = time.monotonic()
    url = f"{sim.base_url}/chat/completions"
    async with (
        http(timeout=httpx2.Timeout(5.0, read=0.3)) as client,
        client.stream("POST", url, json=body) as resp,
    ):
        with pytest.raises(httpx2.ReadTimeout):
            async for piece in resp.aiter_bytes():
                received += piece
    assert time.monotonic() - started < 2
    assert len(sse_events(bytes(received))) == 3

    short = chat(EN_PROMPT, simulator={"fault": {**fault, "stall_seconds": 0.05}})
    resumed = await post_raw(f"{sim.base_url}/chat/completions", short)
    assert sse_events(resumed.content)[-1] == (None, "[DONE]")


async def test_malformed_json_event(sim: Simulator, oai: openai.AsyncOpenAI) -> None:
    fault = {"kind": "malformed_json", "after_events": 1}
    raw = await post_raw(f"{sim.base_url}/chat/completions", chat("hi", simulator={"fault": fault}))
    events = sse_events(raw.content)
    assert events[2] == (None, "{not json")
    assert events[-1] == (None, "[DONE]")
    with pytest.raises(ValueError):
        stream = await oai.chat.completions.create(
            model="sim-1",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_body={"simulator": {"fault": fault}},
        )
        async for _ in stream:
            pass

    raw = await post_raw(
        f"{sim.anthropic_base_url}/v1/messages", messages("hi", simulator={"fault": fault})
    )
    assert ("content_block_delta", "{not json") in sse_events(raw.content)


async def test_no_done_and_error_event(sim: Simulator) -> None:
    no_done = {"fault": {"kind": "no_done"}}
    raw = await post_raw(f"{sim.base_url}/chat/completions", chat("hi", simulator=no_done))
    events = sse_events(raw.content)
    assert raw.content.endswith(b"\n\n")
    assert json.loads(events[-1][1])["choices"][0]["finish_reason"] == "stop"
    assert (None, "[DONE]") not in events
    raw = await post_raw(f"{sim.anthropic_base_url}/v1/messages", messages("hi", simulator=no_done))
    names = [name for name, _ in sse_events(raw.content)]
    assert names[-1] == "message_delta" and "message_stop" not in names

    error = {"fault": {"kind": "error_event", "status": 529, "after_events": 2}}
    raw = await post_raw(f"{sim.anthropic_base_url}/v1/messages", messages("hi", simulator=error))
    name, data = sse_events(raw.content)[-1]
    assert name == "error"
    assert json.loads(data)["error"]["type"] == "overloaded_error"
    raw = await post_raw(f"{sim.base_url}/chat/completions", chat("hi", simulator=error))
    assert json.loads(sse_events(raw.content)[-1][1])["error"]["message"] == "simulated failure"


async def test_bad_override_and_bad_requests(sim: Simulator) -> None:
    url = f"{sim.base_url}/chat/completions"
    response = await post_raw(url, chat("hi", simulator={"sead": 1}))
    assert response.status_code == 400 and "sead" in response.json()["error"]["message"]
    response = await post_raw(url, {"model": "sim-1"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    no_max = {"model": "sim-1", "messages": [{"role": "user", "content": "hi"}]}
    response = await post_raw(f"{sim.anthropic_base_url}/v1/messages", no_max)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }


# --- tools ----------------------------------------------------------------------------------


async def test_openai_tool_call_korean(sim: Simulator, oai: openai.AsyncOpenAI) -> None:
    client = oai
    async with client.chat.completions.stream(
        model="sim-1",
        messages=[{"role": "user", "content": "서울 날씨는?"}],
        tools=[WEATHER_OPENAI, SEARCH_OPENAI],  # type: ignore[list-item]
    ) as stream:
        fragments = [
            event.arguments_delta
            async for event in stream
            if event.type == "tool_calls.function.arguments.delta"
        ]
        completion = await stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "서울", "unit": "celsius"}
    assert len(fragments) > 3 and all(len(piece) <= 6 for piece in fragments)


async def test_openai_parallel_tool_calls_and_follow_up(
    sim: Simulator, oai: openai.AsyncOpenAI
) -> None:
    prompt = "What's the weather and the local time in Paris?"
    tools = [WEATHER_OPENAI, TIME_OPENAI, SEARCH_OPENAI]
    raw = await post_raw(f"{sim.base_url}/chat/completions", chat(prompt, tools=tools))
    chunks = [json.loads(data) for _, data in sse_events(raw.content)[:-1]]
    first = chunks[0]["choices"][0]["delta"]
    assert list(first) == ["role", "content", "tool_calls", "refusal"]
    assert first["content"] is None
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for piece in chunk["choices"][0]["delta"].get("tool_calls", []):
            entry = calls.setdefault(piece["index"], {"arguments": ""})
            if "id" in piece:
                entry["id"], entry["name"] = piece["id"], piece["function"]["name"]
            entry["arguments"] += piece["function"]["arguments"]
    assert sorted(calls) == [0, 1]
    assert calls[0]["name"] == "get_weather" and calls[1]["name"] == "get_local_time"
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris", "unit": "celsius"}
    assert json.loads(calls[1]["arguments"]) == {"city": "Paris", "utc": False}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    follow_up: list[Any] = [
        {"role": "user", "content": prompt},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": calls[i]["id"],
                    "type": "function",
                    "function": {k: calls[i][k] for k in ("name", "arguments")},
                }
                for i in (0, 1)
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "18°C and sunny"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:05"},
    ]
    answer = await oai.chat.completions.create(
        model="sim-1",
        messages=follow_up,
        tools=tools,  # type: ignore[arg-type]
    )
    text = answer.choices[0].message.content or ""
    assert answer.choices[0].finish_reason == "stop"
    assert "The current weather in Paris is 18°C and sunny." in text
    assert "The current time in Paris is 14:05." in text


async def test_anthropic_tool_use_and_follow_up(
    sim: Simulator, claude: anthropic.AsyncAnthropic
) -> None:
    client = claude
    tools = [as_anthropic(WEATHER_OPENAI), as_anthropic(SEARCH_OPENAI)]
    async with client.messages.stream(
        model="sim-1",
        max_tokens=1024,
        tools=tools,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
    ) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    preamble, use = message.content
    assert preamble.type == "text" and preamble.text == "Let me check that for you."
    assert use.type == "tool_use" and use.name == "get_weather" and use.id.startswith("toolu_01")
    assert use.input == {"location": "Paris", "unit": "celsius"}

    raw = await post_raw(
        f"{sim.anthropic_base_url}/v1/messages",
        messages("What's the weather in Paris?", tools=tools),
    )
    deltas = [
        json.loads(d)["delta"] for n, d in sse_events(raw.content) if n == "content_block_delta"
    ]
    partial = [d["partial_json"] for d in deltas if d["type"] == "input_json_delta"]
    assert partial[0] == "" and json.loads("".join(partial)) == use.input

    async with client.messages.stream(
        model="sim-1",
        max_tokens=1024,
        tools=tools,  # type: ignore[arg-type]
        messages=[
            {"role": "user", "content": "서울 날씨 알려줘"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"location": "서울"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "맑음, 21°C"}
                ],
            },
        ],
    ) as stream:
        answer = await stream.get_final_message()
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].type == "text"
    assert answer.content[0].text.startswith("서울의 현재 날씨는 맑음, 21°C 입니다.")


async def test_tool_choice_none_and_unmatched_prompt(sim: Simulator) -> None:
    url = f"{sim.base_url}/chat/completions"
    for body in (
        chat("서울 날씨는?", tools=[WEATHER_OPENAI], tool_choice="none"),
        chat("Tell me a story", tools=[WEATHER_OPENAI]),
    ):
        chunks = [json.loads(d) for _, d in sse_events((await post_raw(url, body)).content)[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    forced = chat("Tell me a story", tools=[WEATHER_OPENAI], tool_choice="required")
    chunks = [json.loads(d) for _, d in sse_events((await post_raw(url, forced)).content)[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# --- server plumbing ------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection(sim: Simulator) -> None:
    ports = []
    async with http() as client:
        for _ in range(2):
            async with client.stream(
                "POST", f"{sim.base_url}/chat/completions", json=chat("hi")
            ) as response:
                await response.aread()
                stream = response.extensions["network_stream"]
                ports.append(stream.get_extra_info("client_addr"))
            assert sse_events(response.content)[-1] == (None, "[DONE]")
        models = await client.get(f"{sim.base_url}/models")
        missing = await client.post(f"{sim.base_url}/nope", json={})
    assert ports[0] == ports[1] and ports[0] is not None
    assert models.json()["data"][0]["id"] == "sim-1"
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"


async def test_pacing_uses_ttft_and_rate() -> None:
    config = SimulatorConfig(ttft=0.3, tokens_per_second=100, jitter=0.2)
    async with open_simulator(config) as simulator, http() as client:
        started = time.monotonic()
        async with client.stream(
            "POST",
            f"{simulator.base_url}/chat/completions",
            json=chat(EN_PROMPT, max_tokens=11),
        ) as response:
            arrivals = [time.monotonic() - started async for _ in response.aiter_raw()]
    assert arrivals[0] < 0.25  # headers and the role chunk do not wait for the first token
    assert arrivals[-1] >= 0.3 + 10 * 0.008  # ttft, then 10 gaps of 10 ms ± 20 %
    assert arrivals[-1] < 1.5


async def test_serve_canned_replays_exact_bytes() -> None:
    recorded = (
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":"\xec\x95\x88\xeb\x85\x95"},'
        b'"logprobs":null,"finish_reason":null}]}\r\n\r\n'
        b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    routes = {"/v1/chat/completions": Canned(recorded, chunk_size=1)}
    async with serve_canned(routes) as server:
        url = f"{server.url}/v1/chat/completions"
        async with http() as client, client.stream("POST", url, json={}) as response:
            pieces = [piece async for piece in response.aiter_raw()]
        assert b"".join(pieces) == recorded
        assert len(pieces) > 10
        async with openai.AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key="x", max_retries=0, http_client=http()
        ) as sdk:
            stream = await sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
        assert text == "안녕"
        assert len(server.requests) == 2
        assert server.requests[1].headers["authorization"] == "Bearer x"

    cut = {"/v1/chat/completions": Canned(recorded[:50], chunk_size=7, abort=True)}
    async with serve_canned(cut) as server, http() as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.post(f"{server.url}/v1/chat/completions", json={})


def test_thread_variant_with_sync_clients() -> None:
    with start_in_thread(FAST) as thread:
        client = openai.OpenAI(base_url=thread.base_url, api_key="x", max_retries=0)
        stream = client.chat.completions.create(
            model="sim-1", messages=[{"role": "user", "content": KO_PROMPT}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == CORPUS["ko"][0].text
        sync_claude = anthropic.Anthropic(
            base_url=thread.anthropic_base_url, api_key="x", max_retries=0
        )
        with sync_claude.messages.stream(
            model="sim-1", max_tokens=50, messages=[{"role": "user", "content": EN_PROMPT}]
        ) as message_stream:
            assert "".join(message_stream.text_stream).startswith("A large language model")
        assert len(thread.requests) == 2
    with pytest.raises(RuntimeError):
        thread.start()  # once only


async def test_open_simulator_leaves_nothing_running() -> None:
    failures: list[Exception] = []
    url = ""

    async def waiting_client(task_status: trio.TaskStatus[None]) -> None:
        async with http() as client:
            task_status.started()
            try:
                await client.post(f"{url}/chat/completions", json=chat("hi"))
            except httpx2.TransportError as exc:
                failures.append(exc)

    # The simulator block ends first, while the client still waits for its first token.
    async with (
        trio.open_nursery() as nursery,
        open_simulator(SimulatorConfig(ttft=10)) as simulator,
    ):
        url = simulator.base_url
        await nursery.start(waiting_client)
        await trio.sleep(0.1)
    assert len(failures) == 1 and isinstance(failures[0], httpx2.RemoteProtocolError)
    with pytest.raises(httpx2.ConnectError):
        async with http() as client:
            await client.get(f"{url}/models")


def test_fault_command_line_form() -> None:
    assert parse_fault("http_error:429") == Fault(kind="http_error", status=429)
    assert parse_fault("http_error") == Fault(kind="http_error", status=500)
    assert parse_fault("disconnect:5") == Fault(kind="disconnect", after_events=5)
    assert parse_fault("no_done") == Fault(kind="no_done")
    for bad, message in [
        ("explode", "unknown fault 'explode'"),
        ("stall:x", "is not a whole number"),
        ("http_error:200", "within 400-599"),
        ("no_done:3", "takes no number"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_fault(bad)
