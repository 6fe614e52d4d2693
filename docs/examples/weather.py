"""A tool file: every public function here is offered to the model as a tool.

Load it with ``streambus.tools.load_tools(["docs/examples/weather.py"])`` (or
``ToolRegistry.load_file``). The name, description and JSON Schema come from the signature and
the docstring; helpers stay private with a leading ``_``. The weather is fake and
deterministic, so examples and tests give the same answer every time.

Run it directly to see the schema offered to OpenAI and one call answered.
"""

from __future__ import annotations

from typing import Any, Literal

_CITIES: dict[str, tuple[str, float, str, int]] = {
    # key: (name, °C, condition, humidity %)
    "seoul": ("Seoul", 18.0, "clear", 45),
    "paris": ("Paris", 14.0, "light rain", 80),
    "tokyo": ("Tokyo", 21.0, "partly cloudy", 60),
    "new york": ("New York", 11.0, "windy", 52),
    "london": ("London", 12.0, "overcast", 76),
    "busan": ("Busan", 20.0, "sunny", 58),
}
_ALIASES = {"서울": "seoul", "부산": "busan", "東京": "tokyo", "nyc": "new york"}
_CONDITIONS = ("clear", "partly cloudy", "overcast", "light rain")


def get_weather(location: str, unit: Literal["c", "f"] = "c") -> dict[str, Any]:
    """Get the current weather for a location.

    Args:
        location: A city name, for example "Seoul", "서울" or "Paris".
        unit: "c" for Celsius or "f" for Fahrenheit.
    """
    key = location.strip().split(",")[0].strip().casefold()
    key = _ALIASES.get(key, key)
    if key in _CITIES:
        name, celsius, condition, humidity = _CITIES[key]
    else:  # somewhere we have no data for: plausible, and the same every time
        seed = sum(map(ord, key))
        name = location.strip()
        celsius = float(8 + seed % 17)
        condition = _CONDITIONS[seed % len(_CONDITIONS)]
        humidity = 40 + seed % 45
    temperature = celsius if unit == "c" else round(celsius * 9 / 5 + 32, 1)
    return {
        "location": name,
        "temperature": temperature,
        "unit": unit,
        "condition": condition,
        "humidity": humidity,
    }


def _demo() -> None:
    import json

    import trio

    from streambus.message import ToolCall
    from streambus.tools import ToolRegistry, run_calls

    registry = ToolRegistry([get_weather])
    print(json.dumps(registry.openai_tools(), indent=2, ensure_ascii=False))
    call = ToolCall(index=0, id="call_1", name="get_weather", arguments='{"location": "서울"}')
    (outcome,) = trio.run(run_calls, registry, [call])
    print(outcome.content)


if __name__ == "__main__":
    _demo()
