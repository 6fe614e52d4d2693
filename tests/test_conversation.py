"""Tool-calling conversations over loopback against the simulator: the call streams, the
tool runs, its result goes back in the provider's own format, the answer uses it; failures
reach the model as results; max_steps; recordings replay without running any tool."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Literal

import pytest

from streambus import (
    Event,
    ProviderConfig,
    Recorder,
    Replayer,
    Start,
    Stop,
    ToolResult,
    open_bus,
)
from streambus.conversation import Conversation, converse
from streambus.simulator import Simulator, SimulatorConfig, open_simulator
from streambus.tools import ToolRegistry

from .test_cli import clean_env, find_command

ROOT = Path(__file__).resolve().parent.parent
FAST = SimulatorConfig(ttft=0, tokens_per_second=0, jitter=0)


class Weather:
    """A weather tool that counts its calls (replays must not add any)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def registry(self) -> ToolRegistry:
        def get_weather(location: str, unit: Literal["c", "f"] = "c") -> dict[str, Any]:
            """Get the current weather for a location."""
            self.calls.append(location)
            if self.fail:
                raise ConnectionError("weather service unreachable")
            return {"location": location, "temperature": 21, "unit": unit}

        return ToolRegistry([get_weather])


@pytest.fixture
async def sim() -> Any:
    async with open_simulator(FAST) as simulator:
        yield simulator


async def talk(
    config: ProviderConfig, tools: ToolRegistry, prompt: str = "서울 날씨는?", **kw: Any
) -> tuple[Conversation, list[Event]]:
    seen: list[Event] = []
    async with open_bus() as bus:
        bus.subscribe(seen.append)
        conversation = await converse(bus, prompt, tools, provider=config, **kw)
    return conversation, seen


def sessions_of(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for event in events:
        out.setdefault(event.session, []).append(event)
    return out


async def test_openai_loop_runs_the_call_and_answers_with_its_result(sim: Simulator) -> None:
    weather = Weather()
    config = ProviderConfig("sim", "openai", sim.base_url, "sim-1", "k")
    conversation, events = await talk(config, weather.registry())
    assert weather.calls == ["서울"]
    assert len(conversation.turns) == 2 and not conversation.exhausted
    first, second = conversation.turns
    assert first.stop.reason == "tool_calls"  # type: ignore[union-attr]
    assert json.loads(first.tool_calls[0].arguments) == {"location": "서울"}
    assert "21" in second.text and second.stop.reason == "stop"  # type: ignore[union-attr]
    # every turn is a session with the plain contract, linked by conversation and turn
    turns = list(sessions_of(events).values())
    for turn, session in enumerate(turns):
        start = session[0]
        assert isinstance(start, Start) and start.turn == turn
        assert start.conversation == conversation.id
        assert [e.seq for e in session] == list(range(len(session)))
        assert isinstance(session[-1], Stop) and sum(isinstance(e, Stop) for e in session) == 1
    result = turns[1][1]  # right after the second turn's start
    assert isinstance(result, ToolResult) and result.name == "get_weather"
    assert json.loads(result.content) == {"location": "서울", "temperature": 21, "unit": "c"}
    # the follow-up request carried the call and its result in OpenAI's format
    messages = sim.requests[-1]["messages"]
    assert messages[1]["role"] == "assistant"
    assert messages[1]["tool_calls"][0]["id"] == first.tool_calls[0].id
    assert messages[2] == {
        "role": "tool",
        "tool_call_id": first.tool_calls[0].id,
        "content": result.content,
    }
    assert sim.requests[0]["tools"][0]["function"]["name"] == "get_weather"


async def test_anthropic_loop_sends_tool_result_blocks(sim: Simulator) -> None:
    weather = Weather()
    config = ProviderConfig("anthropic", "anthropic", sim.anthropic_base_url, "claude-x", "k")
    conversation, _ = await talk(config, weather.registry(), "What's the weather in Paris?")
    assert weather.calls == ["Paris"] and len(conversation.turns) == 2
    follow_up = sim.requests[-1]["messages"]
    assistant, user = follow_up[-2], follow_up[-1]
    tool_use = next(b for b in assistant["content"] if b["type"] == "tool_use")
    assert tool_use["input"] == {"location": "Paris"}
    [block] = user["content"]
    assert block["type"] == "tool_result" and block["tool_use_id"] == tool_use["id"]
    assert block["is_error"] is False
    assert sim.requests[0]["tools"][0]["input_schema"]["required"] == ["location"]
    assert "Paris" in conversation.final.text


async def test_a_failing_tool_becomes_a_result_the_model_reads(sim: Simulator) -> None:
    config = ProviderConfig("sim", "openai", sim.base_url, "sim-1", "k")
    conversation, events = await talk(config, Weather(fail=True).registry())
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result.error == "exception"
    assert result.content == (
        "Error: get_weather raised ConnectionError: weather service unreachable"
    )
    assert sim.requests[-1]["messages"][-1]["content"] == result.content
    assert conversation.final.stop.reason == "stop"  # type: ignore[union-attr]


async def test_max_steps_stops_the_loop_without_running_more_tools(sim: Simulator) -> None:
    weather = Weather()
    config = ProviderConfig("sim", "openai", sim.base_url, "sim-1", "k")
    conversation, _ = await talk(config, weather.registry(), max_steps=1)
    assert len(conversation.turns) == 1 and conversation.exhausted
    assert weather.calls == []  # the last allowed turn's calls are not run: nobody would read them


async def test_a_recorded_conversation_replays_without_running_any_tool(
    sim: Simulator, tmp_path: Path
) -> None:
    weather = Weather()
    path = tmp_path / "r.db"
    config = ProviderConfig("sim", "openai", sim.base_url, "sim-1", "k")
    recorded: list[Event] = []
    async with open_bus() as bus:
        bus.subscribe(Recorder(path))
        bus.subscribe(recorded.append)
        conversation = await converse(bus, "서울 날씨는?", weather.registry(), provider=config)
    assert weather.calls == ["서울"]
    replayed: list[Event] = []
    for turn in conversation.turns:
        async with open_bus() as bus:
            bus.subscribe(replayed.append)
            await Replayer(path, turn.session or "", speed=None).run(bus)
    assert replayed == recorded
    assert weather.calls == ["서울"]  # nothing ran again


def test_cli_runs_the_weather_example_end_to_end(tmp_path: Path) -> None:
    command = find_command()
    env = clean_env(STREAMBUS_DB=str(tmp_path / "r.db"))
    args = ["run", "--sim-tps", "0", "--sim-ttft", "0", "--tools", "docs/examples/weather.py"]
    result = subprocess.run(
        [command, *args, "서울 날씨는?"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("서울의 현재 날씨는")
    assert '[tool call 0] get_weather {"location":"서울"}' in result.stderr
    assert "[tool result 0] get_weather · " in result.stderr
    assert "streambus: sessions " in result.stderr

    jsonl = subprocess.run(
        [command, *args, "-f", "jsonl", "서울 날씨는?"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    types = [json.loads(line)["type"] for line in jsonl.stdout.splitlines()]
    assert types.count("start") == 2 and types.count("stop") == 2
    assert "tool_result" in types

    stopped = subprocess.run(
        [command, *args, "--max-steps", "1", "서울 날씨는?"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert stopped.returncode == 1
    assert stopped.stderr.strip().splitlines()[-1] == (
        "streambus: error: stopped after 1 turn while the model still asked for tools "
        "(see --max-steps)"
    )


def test_cli_refuses_a_tool_it_cannot_load(tmp_path: Path) -> None:
    result = subprocess.run(
        [find_command(), "run", "--tool", "no_such_module:f", "hi"],
        capture_output=True,
        text=True,
        env=clean_env(STREAMBUS_DB=str(tmp_path / "r.db")),
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("streambus: error: cannot load tools: ")
    assert "Traceback" not in result.stderr
