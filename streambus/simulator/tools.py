"""Deciding when the simulator calls a tool, with what arguments, and how it uses the result.

A tool is called when words of its name or description (or a known synonym, including Korean
ones: 날씨 → weather) occur in the last user message. Arguments fill the schema's required
properties plausibly: a place-like string gets the place named in the prompt, enums their
first value, numbers 1, booleans false. After a tool result the answer quotes the result, so
a test can see the round trip worked.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

import msgspec

from .corpus import Language, keyword_in, stable_int

__all__ = [
    "ToolChoice",
    "ToolResult",
    "ToolSpec",
    "arguments_json",
    "build_arguments",
    "extract_place",
    "fragment",
    "preamble",
    "result_answer",
    "select_tools",
]

ToolMode: TypeAlias = Literal["auto", "none", "required"]


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A tool offered by the request, whatever the provider's shape."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = msgspec.field(default_factory=dict)


class ToolChoice(msgspec.Struct, frozen=True, kw_only=True):
    """The request's ``tool_choice``: a mode, or one tool forced by name."""

    mode: ToolMode = "auto"
    name: str | None = None
    parallel: bool = True


class ToolResult(msgspec.Struct, frozen=True, kw_only=True):
    """A tool result in the conversation, joined to the call it answers when found."""

    name: str | None
    arguments: Mapping[str, Any]
    content: str


# Prompt words (any language) → the English concept words a tool name or description may use.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "날씨": ("weather", "forecast"),
    "기온": ("weather", "temperature"),
    "온도": ("weather", "temperature"),
    "예보": ("weather", "forecast"),
    "비가": ("weather", "rain"),
    "forecast": ("weather",),
    "temperature": ("weather",),
    "rain": ("weather",),
    "sunny": ("weather",),
    "시간": ("time", "clock"),
    "몇 시": ("time", "clock"),
    "시각": ("time", "clock"),
    "clock": ("time",),
    "날짜": ("date", "calendar"),
    "검색": ("search", "lookup", "find", "web"),
    "찾아": ("search", "lookup", "find"),
    "look up": ("search", "lookup"),
    "google": ("search", "web"),
    "계산": ("calculate", "calculator", "math", "compute", "arithmetic"),
    "더하": ("calculate", "calculator", "math", "add"),
    "calculate": ("calculator", "math", "compute"),
    "환율": ("exchange", "currency", "rate"),
    "주가": ("stock", "price", "quote"),
    "주식": ("stock", "quote"),
    "뉴스": ("news", "headline"),
    "번역": ("translate", "translation"),
    "translate": ("translation", "translator"),
    "일정": ("calendar", "schedule", "event"),
    "메일": ("email", "mail"),
    "이메일": ("email", "mail"),
    "email": ("mail",),
    "길찾기": ("directions", "route", "map"),
    "지도": ("map", "directions"),
}


def _wordlist(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words too common to say a tool is wanted.
_STOPWORDS = _wordset(
    "a an the and or of for to in on at by with from into about as is are be this that it "
    "its get set fetch retrieve return returns give given provide current specified "
    "specific user users data info information value values tool function use using call "
    "me my you your please tell show can could would will what whats which who how where "
    "when some any all location city place name given new based"
)

_WEATHER_WORDS = frozenset({"weather", "forecast", "temperature"})
_TIME_WORDS = frozenset({"time", "clock"})
_PLACE_PARAMS = (
    "location",
    "city",
    "place",
    "region",
    "country",
    "address",
    "town",
    "destination",
    "origin",
    "where",
    "area",
)
_QUERY_PARAMS = (
    "query",
    "q",
    "text",
    "question",
    "prompt",
    "input",
    "keyword",
    "search",
    "term",
    "expression",
    "sentence",
    "message",
    "content",
    "topic",
    "subject",
)

_KO_CITIES = _wordlist(
    "서울 부산 인천 대구 대전 광주 울산 세종 제주 수원 성남 고양 "
    "용인 창원 청주 전주 천안 포항 강릉 춘천 여수 경주 도쿄 "
    "오사카 교토 파리 런던 뉴욕 베이징 상하이 홍콩 타이베이 "
    "싱가포르 방콕 하노이 시드니 베를린 로마 마드리드 "
    "바르셀로나 토론토 밴쿠버 시애틀 샌프란시스코 "
    "로스앤젤레스 워싱턴 시카고 보스턴 모스크바 두바이"
)
_KO_NOT_PLACES = _wordset(
    "오늘 내일 모레 어제 지금 현재 이번 다음 주말 아침 저녁 오후 오전 좀 혹시 그리고"
)
_KO_PARTICLES = ("에서의", "에서는", "에서", "의", "에는", "에", "은", "는", "이", "가", "도")
_EN_PLACE = re.compile(
    r"\b(?:in|at|for|near|of|to|from|around)\s+((?:[A-Z][\w'.-]*)(?:\s+[A-Z][\w'.-]*){0,3})"
)
_EN_NOT_PLACES = frozenset({"I", "Today", "Tomorrow", "Monday", "Celsius", "Fahrenheit"})


def _words(text: str) -> set[str]:
    """Lowercase ASCII words of ``text`` (split on snake_case and camelCase too), crudely
    singularized, minus stopwords."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    words = set()
    for word in re.findall(r"[a-z0-9]+", spaced.lower().replace("_", " ")):
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        if word not in _STOPWORDS and len(word) > 1:
            words.add(word)
    return words


def _prompt_terms(prompt: str) -> set[str]:
    terms = _words(prompt)
    lowered = prompt.lower()
    for trigger, concepts in _SYNONYMS.items():
        if keyword_in(trigger, lowered):
            terms.update(concepts)
    return terms


def _tool_terms(tool: ToolSpec) -> set[str]:
    return _words(tool.name) | _words(tool.description)


def select_tools(prompt: str, tools: Sequence[ToolSpec], choice: ToolChoice) -> list[ToolSpec]:
    """The tools the prompt asks for, in the order they were offered.

    ``required`` with no match calls the first tool, as a real model must call something;
    a forced name calls that tool; ``parallel`` False keeps only the first match.
    """
    if not tools or choice.mode == "none":
        return []
    if choice.name is not None:
        return [tool for tool in tools if tool.name == choice.name][:1]
    terms = _prompt_terms(prompt)
    matched = [tool for tool in tools if _tool_terms(tool) & terms]
    if not matched and choice.mode == "required":
        matched = [tools[0]]
    return matched if choice.parallel else matched[:1]


def extract_place(prompt: str, language: Language) -> str | None:
    """The place a prompt names ("서울 날씨는?" → 서울, "weather in New York" → New York)."""
    for city in _KO_CITIES:
        if city in prompt:
            return city
    if language == "ko":
        for word in re.findall(r"[\uac00-\ud7a3]+", prompt):
            stem: str = word
            for particle in _KO_PARTICLES:
                if stem.endswith(particle) and len(stem) > len(particle) + 1:
                    stem = stem[: -len(particle)]
                    break
            if (
                stem.endswith(("시", "도", "군", "구"))
                and len(stem) >= 3
                and stem not in _KO_NOT_PLACES
            ):
                return stem
    for match in _EN_PLACE.finditer(prompt):
        place: str = match.group(1).rstrip(".'")
        if place.split()[0] not in _EN_NOT_PLACES:
            return place
    return None


def _default_place(language: Language) -> str:
    return "서울" if language == "ko" else "San Francisco"


def _first_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], Mapping):
            return _first_type(options[0])
    return "string"


def _string_value(name: str, schema: Mapping[str, Any], prompt: str, language: Language) -> str:
    lowered = name.lower()
    hint = f"{lowered} {str(schema.get('description', '')).lower()}"
    if any(word in lowered for word in _PLACE_PARAMS) or "city" in hint or "location" in hint:
        return extract_place(prompt, language) or _default_place(language)
    if "unit" in lowered:
        return "celsius"
    if "timezone" in lowered or lowered in ("tz", "time_zone"):
        return "Asia/Seoul" if language == "ko" else "UTC"
    if "lang" in lowered:
        return language
    if lowered in _QUERY_PARAMS or any(lowered.endswith(f"_{word}") for word in _QUERY_PARAMS):
        return " ".join(prompt.split())
    return extract_place(prompt, language) or " ".join(prompt.split())


def _value(name: str, schema: Mapping[str, Any], prompt: str, language: Language) -> Any:
    if "default" in schema:
        return schema["default"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    kind = _first_type(schema)
    if kind == "integer":
        return 1
    if kind == "number":
        return 1
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return build_arguments(schema, prompt, language)
    if kind == "null":
        return None
    return _string_value(name, schema, prompt, language)


def build_arguments(schema: Mapping[str, Any], prompt: str, language: Language) -> dict[str, Any]:
    """Arguments for a JSON schema: its required properties (all, if none are listed)."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    required = schema.get("required")
    names = required if isinstance(required, list) else list(properties)
    arguments: dict[str, Any] = {}
    for name in names:
        prop = properties.get(name)
        arguments[name] = _value(name, prop if isinstance(prop, Mapping) else {}, prompt, language)
    return arguments


def fragment(text: str, key: object) -> list[str]:
    """Cut a JSON arguments string into pieces of a few characters, as models stream them."""
    rng = random.Random(stable_int("fragment", key, text))
    pieces: list[str] = []
    start = 0
    while start < len(text):
        size = rng.randint(2, 6)
        pieces.append(text[start : start + size])
        start += size
    return pieces


def _place_of(result: ToolResult, question: str, language: Language) -> str | None:
    for key, value in result.arguments.items():
        if isinstance(value, str) and any(word in key.lower() for word in _PLACE_PARAMS):
            place: str = value
            return place
    return extract_place(question, language)


def _one_result(result: ToolResult, question: str, language: Language) -> str:
    content = " ".join(result.content.split()) or ("(빈 결과)" if language == "ko" else "(empty)")
    terms = _words(result.name or "")
    place = _place_of(result, question, language)
    if terms & _WEATHER_WORDS:
        if language == "ko":
            return (
                f"{place}의 현재 날씨는 {content} 입니다."
                if place
                else (f"현재 날씨는 {content} 입니다.")
            )
        return (
            f"The current weather in {place} is {content}."
            if place
            else (f"The current weather is {content}.")
        )
    if terms & _TIME_WORDS:
        if language == "ko":
            return (
                f"{place}의 현재 시각은 {content} 입니다."
                if place
                else (f"현재 시각은 {content} 입니다.")
            )
        return (
            f"The current time in {place} is {content}."
            if place
            else (f"The current time is {content}.")
        )
    name = result.name or ("도구" if language == "ko" else "the tool")
    if language == "ko":
        return f"{name} 실행 결과는 다음과 같아요: {content}"
    return f"Here is what {name} returned: {content}"


def result_answer(results: Sequence[ToolResult], question: str, language: Language) -> str:
    """A short answer built on tool results, quoting each result's content."""
    sentences = [_one_result(result, question, language) for result in results]
    closing = (
        "더 궁금한 점이 있으면 언제든 물어보세요!"
        if language == "ko"
        else "Let me know if there is anything else I can help with!"
    )
    return " ".join([*sentences, closing])


def preamble(language: Language) -> str:
    """What Claude typically says before a tool call."""
    return "확인해 볼게요." if language == "ko" else "Let me check that for you."


def arguments_json(arguments: Mapping[str, Any], *, compact: bool) -> str:
    """Arguments as the provider's models write them: OpenAI compact, Anthropic spaced."""
    separators = (",", ":") if compact else (", ", ": ")
    return json.dumps(arguments, ensure_ascii=False, separators=separators)
