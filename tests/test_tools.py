"""Tools: schemas derived from signatures, registration rules, provider formats, loading from
specs and files, and running calls: every failure kind, concurrency, timeouts and the size cap.
Timing assertions run on trio's MockClock (autojump) and are exact; tests that involve worker
threads use the real clock, because autojump would jump the clock while a thread works."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pytest
import trio
import trio.lowlevel

from streambus.message import ToolCall
from streambus.tools import (
    DEFAULT_MAX_RESULT_BYTES,
    DEFAULT_TIMEOUT,
    Tool,
    ToolOutcome,
    ToolRegistry,
    load_tools,
    run_call,
    run_calls,
)

ROOT = Path(__file__).resolve().parent.parent


# Module level: annotations are strings here (``from __future__``), resolved in these globals.
class Point(msgspec.Struct):
    """A point on the map."""

    x: float
    y: float = 0.0


@dataclasses.dataclass
class Box:
    corners: list[Point]
    label: str | None = None


class Node(msgspec.Struct):
    children: list[Node]


class Opaque:
    pass


def get_weather(location: str, unit: Literal["c", "f"] = "c") -> dict[str, Any]:
    """Get the current weather for a location.

    Only cities we know; this paragraph is not part of the description.
    """
    return {"location": location, "unit": unit, "temperature": 18}


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def call(name: str | None, arguments: str = "", index: int = 0) -> ToolCall:
    return ToolCall(index=index, id=f"call_{index}", name=name, arguments=arguments)


async def run_one(registry: ToolRegistry, name: str | None, arguments: str = "") -> ToolOutcome:
    (outcome,) = await run_calls(registry, [call(name, arguments)])
    return outcome


# -- schemas ------------------------------------------------------------------------------


def test_schema_of_a_simple_signature() -> None:
    tool = Tool(get_weather)
    assert tool.name == "get_weather"
    assert tool.description == "Get the current weather for a location."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
        },
        "required": ["location"],
        "additionalProperties": False,
    }
    assert tool.timeout == DEFAULT_TIMEOUT == 30
    assert tool.max_result_bytes == DEFAULT_MAX_RESULT_BYTES == 64 * 1024


def test_nested_types_are_inlined_without_refs() -> None:
    def draw(
        shapes: list[Point],
        box: Box,
        origin: Point | None = None,
        tags: dict[str, int] | None = None,
        level: Literal[1, 2, 3] = 1,
    ) -> None:
        """Draw shapes."""

    schema = Tool(draw).parameters
    assert not any(isinstance(n, dict) and ("$ref" in n or "$defs" in n) for n in walk(schema))
    assert "title" not in schema
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["shapes", "box"]
    point = {
        "title": "Point",
        "description": "A point on the map.",
        "type": "object",
        "properties": {"x": {"type": "number"}, "y": {"type": "number", "default": 0.0}},
        "required": ["x"],
    }
    properties = schema["properties"]
    assert properties["shapes"] == {"type": "array", "items": point}
    assert properties["box"]["properties"]["corners"] == {"type": "array", "items": point}
    assert properties["origin"] == {"anyOf": [point, {"type": "null"}], "default": None}
    assert properties["level"] == {"type": "integer", "enum": [1, 2, 3], "default": 1}
    # Every inlined copy is its own object: editing one cannot change another.
    properties["shapes"]["items"]["title"] = "changed"
    assert properties["box"]["properties"]["corners"]["items"]["title"] == "Point"


def test_no_parameters_is_an_empty_object_schema() -> None:
    def now() -> str:
        """The time."""
        return "12:00"

    assert Tool(now).parameters == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }


def test_parameter_descriptions_from_google_docstrings() -> None:
    def search(query: str, limit: int = 10, exact: bool = False) -> list[str]:
        """Search the notes.

        The index is rebuilt nightly.

        Args:
            query: What to look for,
                in plain words.
            limit (int): At most this many hits.

        Returns:
            The matching titles.
        """
        return []

    tool = Tool(search)
    assert tool.description == "Search the notes."
    properties = tool.parameters["properties"]
    assert properties["query"] == {
        "description": "What to look for, in plain words.",
        "type": "string",
    }
    assert properties["limit"]["description"] == "At most this many hits."
    assert "description" not in properties["exact"]


def test_parameter_descriptions_from_numpy_docstrings() -> None:
    def convert(amount: float, currency: str = "EUR") -> float:
        """Convert money
        between currencies.

        Parameters
        ----------
        amount : float
            How much.
        currency : str, optional
            Target currency,
            ISO 4217.

        Returns
        -------
        result
            Never described.
        """
        return amount

    tool = Tool(convert)
    assert tool.description == "Convert money between currencies."
    properties = tool.parameters["properties"]
    assert properties["amount"]["description"] == "How much."
    assert properties["currency"]["description"] == "Target currency, ISO 4217."
    assert set(properties) == {"amount", "currency"}


def test_annotated_description_wins_over_the_docstring() -> None:
    def f(city: Annotated[str, msgspec.Meta(description="From Meta.")]) -> None:
        """F.

        Args:
            city: From the docstring.
        """

    assert Tool(f).parameters["properties"]["city"] == {
        "type": "string",
        "description": "From Meta.",
    }


def test_explicit_name_and_description() -> None:
    tool = Tool(get_weather, name="weather-now", description="Weather, now.", timeout=2.5)
    assert (tool.name, tool.description, tool.timeout) == ("weather-now", "Weather, now.", 2.5)


def test_a_function_without_docstring_has_an_empty_description() -> None:
    def identity(x: int) -> int:
        return x

    assert Tool(identity).description == ""


# -- registration errors --------------------------------------------------------------------


def no_annotation(location, unit: str = "c") -> None:  # type: ignore[no-untyped-def]
    """Missing an annotation."""


def var_args(*cities: str) -> None:
    """*args."""


def var_kwargs(**options: str) -> None:
    """**kwargs."""


def positional_only(city: str, /) -> None:
    """Positional-only."""


def unresolved(city: Undefined) -> None:  # type: ignore[name-defined]  # noqa: F821
    """Refers to a name that does not exist."""


def opaque(thing: Opaque) -> None:
    """A type with no JSON Schema."""


def recursive(tree: Node) -> None:
    """A recursive type cannot be inlined."""


@pytest.mark.parametrize(
    ("function", "name", "message"),
    [
        (no_annotation, None, "parameter 'location' has no type annotation"),
        (var_args, None, "*args and **kwargs"),
        (var_kwargs, None, "*args and **kwargs"),
        (positional_only, None, "parameter 'city' is positional-only"),
        (unresolved, None, "cannot resolve its annotations: NameError"),
        (opaque, None, "parameter 'thing'"),
        (recursive, None, "recursive type"),
        (get_weather, "get weather", "not a valid tool name"),
        (get_weather, "x" * 65, "not a valid tool name"),
        (get_weather, "", "not a valid tool name"),
        (get_weather, "wetter.jetzt", "not a valid tool name"),
        (get_weather, "날씨", "not a valid tool name"),
        (get_weather, "get_weather\n", "not a valid tool name"),
    ],
)
def test_registration_rejects_what_cannot_be_a_tool(
    function: Any, name: str | None, message: str
) -> None:
    registry = ToolRegistry()
    with pytest.raises(TypeError) as info:
        registry.register(function, name=name)
    assert message in str(info.value)
    assert len(registry) == 0


def test_the_longest_valid_name_is_accepted() -> None:
    assert Tool(get_weather, name="a-Z_9" + "x" * 59).name == "a-Z_9" + "x" * 59


def test_duplicate_names_are_rejected() -> None:
    registry = ToolRegistry([get_weather])
    with pytest.raises(TypeError, match="'get_weather' is already registered"):
        registry.register(get_weather)
    registry.register(get_weather, name="get_weather_2")
    assert registry.names == ["get_weather", "get_weather_2"]


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ValueError, match="timeout must be positive"):
        Tool(get_weather, timeout=0)
    with pytest.raises(ValueError, match="max_result_bytes must be at least 256"):
        Tool(get_weather, max_result_bytes=100)
    with pytest.raises(ValueError, match="timeout must be positive"):
        ToolRegistry(timeout=-1)


def test_register_as_a_decorator_keeps_the_function_and_applies_defaults() -> None:
    registry = ToolRegistry(timeout=7, max_result_bytes=1000)

    @registry.register
    def plain(x: int) -> int:
        """Plain."""
        return x

    @registry.register(name="tuned", timeout=2)
    async def configured(x: int) -> int:
        """Configured."""
        return x

    assert plain(3) == 3 and configured.__name__ == "configured"
    assert (registry["plain"].timeout, registry["plain"].max_result_bytes) == (7, 1000)
    assert (registry["tuned"].timeout, registry["tuned"].max_result_bytes) == (2, 1000)
    assert not registry["plain"].is_async and registry["tuned"].is_async
    assert "tuned" in registry and "configured" not in registry
    assert [tool.name for tool in registry] == ["plain", "tuned"]


def test_an_object_with_an_async_call_is_an_async_tool() -> None:
    class Lookup:
        async def __call__(self, key: str) -> str:
            return key

    tool = Tool(Lookup(), name="lookup")
    assert tool.is_async
    assert tool.parameters["required"] == ["key"]
    with pytest.raises(TypeError, match="pass name="):
        Tool(Lookup())


# -- provider formats -----------------------------------------------------------------------


def test_openai_and_anthropic_formats() -> None:
    registry = ToolRegistry([get_weather])
    parameters = Tool(get_weather).parameters
    assert registry.openai_tools() == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather for a location.",
                "parameters": parameters,
            },
        }
    ]
    assert registry.anthropic_tools() == [
        {
            "name": "get_weather",
            "description": "Get the current weather for a location.",
            "input_schema": parameters,
        }
    ]
    # What we hand out is a copy: a caller editing a request body cannot change the tool.
    registry.openai_tools()[0]["function"]["parameters"]["properties"].clear()
    registry.anthropic_tools()[0]["input_schema"]["required"].append("unit")
    assert registry["get_weather"].parameters == parameters
    # Both are plain JSON.
    json.dumps([registry.openai_tools(), registry.anthropic_tools()])


def test_a_tool_without_docstring_has_no_description_key() -> None:
    def bare(x: int) -> int:
        return x

    registry = ToolRegistry([bare])
    assert "description" not in registry.openai_tools()[0]["function"]
    assert "description" not in registry.anthropic_tools()[0]


# -- loading --------------------------------------------------------------------------------

TOOL_FILE = '''
from __future__ import annotations

import msgspec
from json import dumps
from os.path import join


class Item(msgspec.Struct):
    name: str
    price: float


def add(a: int, b: int = 1) -> int:
    """Add two numbers."""
    return a + b


async def total(items: list[Item]) -> float:
    """Sum the prices."""
    return sum(item.price for item in items)


def _helper(x):
    return x


class NotATool:
    def method(self):
        pass


alias = add
shout = lambda text: text.upper()

if __name__ == "__main__":
    raise SystemExit("the main block must not run")
'''


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


async def test_load_file_registers_only_public_functions_defined_there(tmp_path: Path) -> None:
    path = write(tmp_path, "my tools.py", TOOL_FILE)
    registry = ToolRegistry()
    tools = registry.load_file(path, timeout=3)
    assert [tool.name for tool in tools] == registry.names == ["add", "total"]
    assert registry["add"].timeout == 3
    items = registry["total"].parameters["properties"]["items"]
    assert items["items"]["required"] == ["name", "price"]
    outcomes = await run_calls(
        registry,
        [
            call("add", '{"a": 2}', index=0),
            call("total", '{"items": [{"name": "a", "price": 1.5}, {"name": "b", "price": 2}]}', 1),
        ],
    )
    assert [o.content for o in outcomes] == ["3", "3.5"]


def test_the_same_file_loads_twice_as_separate_modules(tmp_path: Path) -> None:
    path = write(tmp_path, "twice.py", TOOL_FILE)
    first, second = ToolRegistry(), ToolRegistry()
    first.load_file(path)
    second.load_file(str(path))
    module_a = first["add"].function.__module__
    module_b = second["add"].function.__module__
    assert module_a != module_b
    assert module_a in sys.modules and module_b in sys.modules


def test_load_file_is_all_or_nothing(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.py",
        'def good(x: int) -> int:\n    """Good."""\n    return x\n\n\n'
        "def helper(x):\n    return x\n",
    )
    registry = ToolRegistry()
    with pytest.raises(TypeError, match=r"'helper'.*leading '_'"):
        registry.load_file(path)
    assert len(registry) == 0

    registry.register(get_weather)
    clash = write(tmp_path, "clash.py", "def get_weather(city: str) -> str:\n    return city\n")
    with pytest.raises(TypeError, match="already registered"):
        registry.load_file(clash)
    assert registry.names == ["get_weather"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x = 1 / 0\n", "ZeroDivisionError: division by zero"),
        ("def broken(:\n", "SyntaxError"),
        ("import json\nVALUE = 1\n", "defines no public function"),
    ],
)
def test_load_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "t.py", text)
    with pytest.raises(ImportError, match=message):
        ToolRegistry().load_file(path)
    assert not [name for name in sys.modules if name.endswith("_t")]


def test_load_file_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="no such tool file"):
        ToolRegistry().load_file(tmp_path / "missing.py")


def test_load_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path,
        "streambus_test_spec_tools.py",
        "class Math:\n"
        "    @staticmethod\n"
        "    def double(x: int) -> int:\n"
        '        """Double it."""\n'
        "        return 2 * x\n\n\n"
        "def triple(x: int) -> int:\n"
        "    return 3 * x\n",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ToolRegistry()
    assert registry.load_spec("streambus_test_spec_tools:triple").name == "triple"
    tool = registry.load_spec("streambus_test_spec_tools:Math.double", timeout=1)
    assert (tool.name, tool.description, tool.timeout) == ("double", "Double it.", 1)

    with pytest.raises(ValueError, match="not of the form 'module:function'"):
        registry.load_spec("streambus_test_spec_tools")
    with pytest.raises(ValueError, match="not of the form"):
        registry.load_spec(":triple")
    with pytest.raises(ImportError, match="No module named 'no_such_module_here'"):
        registry.load_spec("no_such_module_here:f")
    with pytest.raises(ImportError, match="has no attribute 'quadruple'"):
        registry.load_spec("streambus_test_spec_tools:quadruple")


async def test_load_tools_mixes_files_and_specs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "streambus_test_mixed_tools.py", "def ping() -> str:\n    return 'pong'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_tools(
        [str(ROOT / "docs" / "examples" / "weather.py"), "streambus_test_mixed_tools:ping"],
        timeout=4,
    )
    assert registry.names == ["get_weather", "ping"]
    assert (await run_one(registry, "ping")).content == "pong"
    assert registry["get_weather"].timeout == 4
    assert registry["get_weather"].description == "Get the current weather for a location."
    properties = registry["get_weather"].parameters["properties"]
    assert properties["unit"]["enum"] == ["c", "f"]
    assert "Seoul" in properties["location"]["description"]

    seoul = await run_one(registry, "get_weather", '{"location": "서울"}')
    assert seoul.error is None
    assert json.loads(seoul.content)["location"] == "Seoul"
    again = await run_one(registry, "get_weather", '{"location": "Seoul", "unit": "f"}')
    assert json.loads(again.content)["temperature"] == 64.4
    # Somewhere unknown: plausible, and the same every time.
    unknown = await run_one(registry, "get_weather", '{"location": "Gangneung"}')
    weather = json.loads(unknown.content)
    assert weather["location"] == "Gangneung" and -30 < weather["temperature"] < 45
    assert (await run_one(registry, "get_weather", '{"location": "Gangneung"}')).content == (
        unknown.content
    )


# -- running calls: failures become outcomes ----------------------------------------------


def raises(city: str) -> str:
    """Always fails."""
    raise ValueError(f"no weather station in {city}")


def unencodable() -> object:
    """Returns something JSON cannot express."""
    return Opaque()


def echo(text: str) -> str:
    """Echo the text."""
    return text


def no_arguments() -> dict[str, bool]:
    """Takes nothing."""
    return {"ok": True}


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([get_weather, raises, unencodable, echo, no_arguments])


@pytest.mark.parametrize(
    ("name", "arguments", "error", "expected"),
    [
        ("get_wether", '{"location": "Paris"}', "unknown_tool", "no tool 'get_wether'"),
        ("Get_Weather", '{"location": "Paris"}', "unknown_tool", "no tool 'Get_Weather'"),
        (None, "{}", "unknown_tool", "the call names no tool"),
        ("__import__", '"os"', "unknown_tool", "no tool '__import__'"),
        ("get_weather", '{"location": "Paris",, }', "invalid_json", "(byte 21), near '"),
        ("get_weather", '{"location": "Par', "invalid_json", "not valid JSON (Input data was"),
        ("get_weather", "{'location': 'Paris'}", "invalid_json", "not valid JSON"),
        ("get_weather", '{"location": 1}', "invalid_arguments", "got `int` - at `$.location`"),
        ("get_weather", "{}", "invalid_arguments", "missing required field `location`"),
        ("get_weather", "", "invalid_arguments", "missing required field `location`"),
        ("get_weather", '{"location": "P", "city": "P"}', "invalid_arguments", "unknown field"),
        ("get_weather", '{"location": "P", "unit": "k"}', "invalid_arguments", "`$.unit`"),
        ("get_weather", '["Paris"]', "invalid_arguments", "Expected `object`, got `array`"),
        ("get_weather", "null", "invalid_arguments", "Expected `object`, got `null`"),
        ("raises", '{"city": "Atlantis"}', "exception", "ValueError: no weather station in At"),
        ("unencodable", "", "exception", "cannot be encoded as JSON: TypeError: "),
    ],
)
async def test_every_failure_is_an_outcome_the_model_can_read(
    registry: ToolRegistry, name: str | None, arguments: str, error: str, expected: str
) -> None:
    outcome = await run_one(registry, name, arguments)
    assert outcome.error == error
    assert outcome.is_error
    assert outcome.content.startswith("Error: ")
    assert expected in outcome.content
    assert (outcome.index, outcome.id, outcome.name) == (0, "call_0", name)
    if error == "unknown_tool":
        assert "get_weather, raises, unencodable, echo, no_arguments" in outcome.content


async def test_an_exception_reports_type_and_message_only(registry: ToolRegistry) -> None:
    outcome = await run_one(registry, "raises", '{"city": "Atlantis"}')
    assert outcome.content == "Error: raises raised ValueError: no weather station in Atlantis"
    assert "Traceback" not in outcome.content and __file__ not in outcome.content


async def test_results_are_json_and_strings_stay_as_they_are(registry: ToolRegistry) -> None:
    weather = await run_one(registry, "get_weather", '{"location": "Paris", "unit": "f"}')
    assert weather.error is None and not weather.is_error
    assert weather.content == '{"location":"Paris","unit":"f","temperature":18}'
    # A string is the text itself, not a JSON string; code in it is just text.
    code = "__import__('os').system('echo pwned')"
    echoed = await run_one(registry, "echo", json.dumps({"text": code}))
    assert echoed.content == code
    # No-argument tools accept empty or blank arguments, as some providers send them.
    for empty in ("", "  \n", "{}"):
        assert (await run_one(registry, "no_arguments", empty)).content == '{"ok":true}'


async def test_a_sync_wrapper_returning_a_coroutine_is_awaited() -> None:
    async def fetch(x: int) -> int:
        await trio.lowlevel.checkpoint()
        return x * 10

    def wrapper(x: int) -> Any:
        return fetch(x)

    outcome = await run_one(ToolRegistry([wrapper]), "wrapper", '{"x": 4}')
    assert (outcome.error, outcome.content) == (None, "40")


async def test_mutable_defaults_are_not_shared_between_calls() -> None:
    def append(item: str, into: list[str] = ["first"]) -> list[str]:  # noqa: B006
        into.append(item)
        return into

    registry = ToolRegistry([append])
    assert registry["append"].parameters["required"] == ["item"]
    assert (await run_one(registry, "append", '{"item": "a"}')).content == '["first","a"]'
    assert (await run_one(registry, "append", '{"item": "b"}')).content == '["first","b"]'


async def test_a_huge_arguments_string_decodes_in_one_pass() -> None:
    def measure(text: str, numbers: list[int]) -> dict[str, int]:
        """Sizes."""
        return {"text": len(text), "numbers": sum(numbers)}

    arguments = json.dumps({"text": "가나" * 250_000, "numbers": list(range(50_000))})
    assert len(arguments) > 1_000_000
    outcome = await run_one(ToolRegistry([measure]), "measure", arguments)
    assert outcome.error is None
    assert json.loads(outcome.content) == {"text": 500_000, "numbers": sum(range(50_000))}


# -- the size cap ---------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["é", "가", "😀"])
async def test_too_large_results_are_cut_on_a_character_boundary(char: str) -> None:
    def big() -> str:
        return char * 1000

    cap = 256
    outcome = await run_one(ToolRegistry([big], max_result_bytes=cap), "big")
    assert outcome.error == "too_large" and not outcome.is_error
    head, sep, note = outcome.content.partition("\n[truncated")
    assert sep and head and set(head) == {char}
    size = len(outcome.content.encode("utf-8"))
    width = len(char.encode("utf-8"))
    assert cap - width < size <= cap  # as much as fits, never a partial character
    assert f"{1000 * width} bytes" in note and f"limit of {cap}" in note


async def test_a_json_result_is_capped_too_and_the_exact_cap_fits() -> None:
    def rows(n: int) -> list[dict[str, str]]:
        return [{"도시": "서울"}] * n

    registry = ToolRegistry([rows], max_result_bytes=256)
    one_row = len(msgspec.json.encode([{"도시": "서울"}]))
    n = (256 - 2) // (one_row - 1)  # rows that fit: "[" + n * (row + ",") - "," + "]"
    exact = await run_one(registry, "rows", json.dumps({"n": n}))
    assert exact.error is None and len(exact.content.encode()) <= 256
    assert json.loads(exact.content) == [{"도시": "서울"}] * n
    over = await run_one(registry, "rows", json.dumps({"n": 100}))
    assert over.error == "too_large" and len(over.content.encode()) <= 256


async def test_error_text_is_capped_but_keeps_its_kind() -> None:
    def shouty() -> None:
        raise RuntimeError("가" * 10_000)

    outcome = await run_one(ToolRegistry([shouty], max_result_bytes=300), "shouty")
    assert outcome.error == "exception"
    assert outcome.content.startswith("Error: shouty raised RuntimeError: 가가")
    assert len(outcome.content.encode()) <= 300


# -- concurrency and time -----------------------------------------------------------------


async def test_calls_run_concurrently_and_keep_index_order(autojump_clock: trio.abc.Clock) -> None:
    finished: list[str] = []

    async def first(label: str) -> str:
        await trio.sleep(1)
        finished.append(label)
        return label

    async def second(label: str) -> str:
        await trio.sleep(1)
        finished.append(label)
        return label

    registry = ToolRegistry([first, second])
    start = trio.current_time()
    outcomes = await run_calls(
        registry,
        [
            call("second", '{"label": "b"}', index=2),
            call("first", '{"label": "a"}', index=0),
            call("missing", "", index=1),
        ],
    )
    assert trio.current_time() - start == 1.0  # together, not one after the other
    assert sorted(finished) == ["a", "b"]
    assert [(o.index, o.id, o.content) for o in outcomes][::2] == [
        (0, "call_0", "a"),
        (2, "call_2", "b"),
    ]
    assert outcomes[1].error == "unknown_tool"
    assert [o.duration_ns for o in outcomes] == [1_000_000_000, 0, 1_000_000_000]


async def test_a_slow_async_tool_times_out_at_its_own_limit(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def slow() -> str:
        await trio.sleep(60)
        return "late"

    async def quick() -> str:
        await trio.sleep(1)
        return "done"

    registry = ToolRegistry([quick])
    registry.register(slow, timeout=5)
    start = trio.current_time()
    late, done = await run_calls(registry, [call("slow", index=0), call("quick", index=1)])
    assert trio.current_time() - start == 5.0
    assert late.error == "timeout" and late.is_error
    assert late.content == "Error: slow timed out after 5 s"
    assert late.duration_ns == 5_000_000_000
    assert (done.error, done.content, done.duration_ns) == (None, "done", 1_000_000_000)


async def test_cancelling_the_caller_cancels_every_call(autojump_clock: trio.abc.Clock) -> None:
    async def slow() -> None:
        await trio.sleep(60)

    with trio.move_on_after(2) as scope:
        await run_calls(ToolRegistry([slow]), [call("slow")])
    assert scope.cancelled_caught and trio.current_time() == 2.0


async def test_sync_tools_run_in_worker_threads_alongside_async_ones() -> None:
    # Real clock: autojump would jump ahead while the worker thread runs.
    released = threading.Event()
    seen: dict[str, bool] = {}

    def blocking() -> bool:
        seen["worker thread"] = threading.current_thread() is not threading.main_thread()
        return released.wait(timeout=10)  # only the async tool, on the trio thread, sets it

    async def release() -> str:
        await trio.sleep(0.01)
        released.set()
        return "released"

    outcomes = await run_calls(
        ToolRegistry([blocking, release]), [call("blocking"), call("release", index=1)]
    )
    assert seen == {"worker thread": True}
    assert [(o.error, o.content) for o in outcomes] == [(None, "true"), (None, "released")]


async def test_a_sync_tool_that_times_out_is_abandoned_but_keeps_running() -> None:
    gate = threading.Event()
    done = threading.Event()

    def stuck() -> str:
        gate.wait(timeout=10)
        done.set()
        return "finally"

    registry = ToolRegistry()
    registry.register(stuck, timeout=0.05)
    outcome = await run_one(registry, "stuck")
    assert outcome.error == "timeout"
    assert outcome.content == "Error: stuck timed out after 0.05 s"
    assert not done.is_set()  # we moved on; the thread did not
    gate.set()
    await trio.to_thread.run_sync(done.wait, 10)
    assert done.is_set()


async def test_run_call_runs_a_single_call(registry: ToolRegistry) -> None:
    single = ToolCall(index=3, id=None, name="echo", arguments='{"text": "hi"}')
    outcome = await run_call(registry, single)
    assert isinstance(outcome, ToolOutcome)
    assert (outcome.index, outcome.id, outcome.name) == (3, None, "echo")
    assert (outcome.content, outcome.error) == ("hi", None)
    assert outcome.duration_ns > 0  # a worker thread, on the real clock
