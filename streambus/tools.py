"""Tools the model may call: plain Python functions, their JSON Schemas, and running the calls.

Shape, and why:

- **The signature is the schema.** A tool is an ordinary function (sync or async) with type
  hints. Its parameters become a msgspec Struct; the JSON Schema offered to the provider and
  the validation of what the model sends both come from that one Struct, so they cannot drift.
- **Nothing the model sends is evaluated.** Arguments are decoded and validated in one linear
  pass (``msgspec.json.decode(..., type=Struct)``); only registered functions ever run, matched
  by exact name.
- **Every failure is an answer, never an exception.** An unknown tool, malformed JSON, invalid
  arguments, an exception in the tool, a timeout or an oversized result each become a
  :class:`ToolOutcome` whose ``content`` tells the model what went wrong, so it can correct
  itself. Only cancellation from outside (and ``KeyboardInterrupt``/``SystemExit``) propagates.
- **Concurrent, bounded, non-blocking.** All calls of a turn run at once in one nursery, each
  under its own timeout. Sync functions run in worker threads so they never block the event
  loop. A thread cannot be killed: when a sync tool times out we stop waiting for it
  (``abandon_on_cancel``) but its thread keeps running until the function returns, and keeps
  one of trio's worker-thread tokens (40 by default) until then. A long sync tool can end
  sooner by calling ``trio.from_thread.check_cancelled()`` now and then.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import inspect
import itertools
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal, TypeAlias, TypeVar, overload

import msgspec
import trio

from streambus.message import ToolCall

__all__ = [
    "DEFAULT_MAX_RESULT_BYTES",
    "DEFAULT_TIMEOUT",
    "TOOL_ERRORS",
    "Tool",
    "ToolError",
    "ToolOutcome",
    "ToolRegistry",
    "load_tools",
    "run_call",
    "run_calls",
]

ToolError: TypeAlias = Literal[
    "unknown_tool",
    "invalid_json",
    "invalid_arguments",
    "exception",
    "timeout",
    "too_large",
    "cancelled",
]
TOOL_ERRORS: Final = (
    "unknown_tool",
    "invalid_json",
    "invalid_arguments",
    "exception",
    "timeout",
    "too_large",
    "cancelled",
)
"""``cancelled`` is never returned by :func:`run_call`: it marks, in the record of a
conversation cancelled while its tools ran, the calls that had not returned yet."""
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_MAX_RESULT_BYTES: Final = 64 * 1024
MIN_RESULT_BYTES: Final = 256
"""Room for the truncation note, so ``content`` never exceeds a tool's ``max_result_bytes``."""

_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_F = TypeVar("_F", bound=Callable[..., Any])
_encoder: Final = msgspec.json.Encoder()
_module_numbers: Final = itertools.count(1)


class ToolOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one call produced: the text the model will read, and whether it failed and how.

    ``content`` is the result JSON-encoded (a ``str`` result as is) or, when ``error`` is set,
    an explanation addressed to the model. ``too_large`` still carries a (truncated) result.
    ``duration_ns`` is measured on trio's clock, so virtual time in tests is exact.
    """

    index: int
    id: str | None
    name: str | None
    content: str
    error: ToolError | None = None
    duration_ns: int = 0

    @property
    def is_error(self) -> bool:
        """Whether the tool produced no result (Anthropic's ``is_error``); ``too_large`` did."""
        return self.error is not None and self.error != "too_large"


class Tool:
    """One function the model may call, with its arguments Struct, JSON Schema and limits.

    Raises ``TypeError`` when the function cannot be described to a model: a parameter without
    annotation, ``*args``/``**kwargs``, positional-only parameters, a type with no JSON Schema,
    or a name providers would refuse (``^[a-zA-Z0-9_-]{1,64}$``).
    """

    __slots__ = (
        "_decoder",
        "arguments_type",
        "description",
        "function",
        "is_async",
        "max_result_bytes",
        "name",
        "parameters",
        "timeout",
    )

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        if not callable(function):
            raise TypeError(f"a tool must be a function, not {type(function).__name__}")
        name = name if name is not None else getattr(function, "__name__", None)
        if name is None:
            raise TypeError(f"{function!r} has no __name__: pass name=")
        if not _NAME.fullmatch(name):
            raise TypeError(
                f"{name!r} is not a valid tool name: providers accept 1 to 64 letters, "
                "digits, '_' and '-'"
            )
        if not timeout > 0:
            raise ValueError(f"tool {name!r}: timeout must be positive, not {timeout!r}")
        if max_result_bytes < MIN_RESULT_BYTES:
            raise ValueError(
                f"tool {name!r}: max_result_bytes must be at least {MIN_RESULT_BYTES}, "
                f"not {max_result_bytes!r}"
            )
        summary, parameter_docs = _parse_docstring(inspect.getdoc(function) or "")
        self.function = function
        self.name = name
        self.description = summary if description is None else description
        self.timeout = float(timeout)
        self.max_result_bytes = max_result_bytes
        self.is_async = _is_async(function)
        self.arguments_type = _arguments_struct(name, function)
        self.parameters = _object_schema(name, self.arguments_type, parameter_docs)
        self._decoder = msgspec.json.Decoder(self.arguments_type)

    def __repr__(self) -> str:
        return f"<Tool {self.name} ({'async' if self.is_async else 'sync'})>"

    def openai_tool(self) -> dict[str, Any]:
        """This tool as one entry of OpenAI's ``tools`` list."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = copy.deepcopy(self.parameters)
        return {"type": "function", "function": function}

    def anthropic_tool(self) -> dict[str, Any]:
        """This tool as one entry of Anthropic's ``tools`` list."""
        tool: dict[str, Any] = {"name": self.name}
        if self.description:
            tool["description"] = self.description
        tool["input_schema"] = copy.deepcopy(self.parameters)
        return tool


class ToolRegistry:
    """The tools offered to the model, by name. Registration validates; lookup is exact.

    ``timeout`` and ``max_result_bytes`` are the defaults for tools registered here without
    their own. Use :meth:`register` directly or as a decorator (``@registry.register`` or
    ``@registry.register(timeout=5)``); it returns the function unchanged.
    """

    def __init__(
        self,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        if max_result_bytes < MIN_RESULT_BYTES:
            raise ValueError(f"max_result_bytes must be at least {MIN_RESULT_BYTES}")
        self.timeout = float(timeout)
        self.max_result_bytes = max_result_bytes
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            self.add(tool if isinstance(tool, Tool) else self._make(tool))

    def add(self, tool: Tool) -> Tool:
        """Add a ready-made tool. A second tool of the same name is a ``TypeError``."""
        if tool.name in self._tools:
            raise TypeError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    @overload
    def register(
        self,
        function: _F,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        max_result_bytes: int | None = None,
    ) -> _F: ...

    @overload
    def register(
        self,
        function: None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        max_result_bytes: int | None = None,
    ) -> Callable[[_F], _F]: ...

    def register(
        self,
        function: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        max_result_bytes: int | None = None,
    ) -> Any:
        """Register a function as a tool; returns it unchanged (so it works as a decorator)."""

        def decorate(function: _F) -> _F:
            self.add(self._make(function, name, description, timeout, max_result_bytes))
            return function

        return decorate if function is None else decorate(function)

    def load_spec(
        self, spec: str, *, timeout: float | None = None, max_result_bytes: int | None = None
    ) -> Tool:
        """Import and register ``"package.module:function"`` (``"module:Class.method"`` too).

        Raises ``ValueError`` for a malformed spec, ``ImportError`` when the module or the
        attribute cannot be found, ``TypeError`` when it cannot be a tool.
        """
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise ValueError(f"tool spec {spec!r} is not of the form 'module:function'")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(f"tool spec {spec!r}: {exc}", name=module_name) from exc
        target: Any = module
        for part in attribute.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                raise ImportError(
                    f"tool spec {spec!r}: {module_name} has no attribute {attribute!r}",
                    name=module_name,
                ) from None
        return self.add(self._make(target, None, None, timeout, max_result_bytes))

    def load_file(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = None,
        max_result_bytes: int | None = None,
    ) -> list[Tool]:
        """Register every public function defined in a Python file (in definition order).

        Functions imported into the file and names starting with ``_`` are skipped, so helpers
        stay private by their name. The file runs as a fresh module under a unique name (its
        ``if __name__ == "__main__":`` block does not run). All or nothing: when one function
        cannot be a tool (``TypeError``), none is registered. A file that cannot be read or
        run, or defines no public function, raises ``ImportError``.
        """
        file = Path(path)
        module = _run_file(file)
        try:
            tools = self._file_tools(file, module, timeout, max_result_bytes)
        except BaseException:
            sys.modules.pop(module.__name__, None)
            raise
        for tool in tools:
            self.add(tool)
        return tools

    def _file_tools(
        self,
        file: Path,
        module: ModuleType,
        timeout: float | None,
        max_result_bytes: int | None,
    ) -> list[Tool]:
        functions = [
            value
            for key, value in vars(module).items()
            if not key.startswith("_")
            and inspect.isfunction(value)
            and value.__module__ == module.__name__
            and value.__name__ == key
        ]
        if not functions:
            raise ImportError(f"{file} defines no public function to offer as a tool")
        tools: list[Tool] = []
        for function in functions:
            try:
                tools.append(self._make(function, None, None, timeout, max_result_bytes))
            except TypeError as exc:
                raise TypeError(
                    f"{file}: {exc} (rename helpers with a leading '_' to keep them private)"
                ) from exc
        for tool in tools:
            if tool.name in self._tools:
                raise TypeError(f"{file}: a tool named {tool.name!r} is already registered")
        return tools

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"<ToolRegistry {', '.join(self._tools) or '(empty)'}>"

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def openai_tools(self) -> list[dict[str, Any]]:
        """The ``tools`` list of an OpenAI Chat Completions request."""
        return [tool.openai_tool() for tool in self._tools.values()]

    def anthropic_tools(self) -> list[dict[str, Any]]:
        """The ``tools`` list of an Anthropic Messages request."""
        return [tool.anthropic_tool() for tool in self._tools.values()]

    def _make(
        self,
        function: Callable[..., Any],
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        max_result_bytes: int | None = None,
    ) -> Tool:
        return Tool(
            function,
            name=name,
            description=description,
            timeout=self.timeout if timeout is None else timeout,
            max_result_bytes=self.max_result_bytes
            if max_result_bytes is None
            else max_result_bytes,
        )


def load_tools(
    sources: Iterable[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
) -> ToolRegistry:
    """A registry from files (``tools.py``, ``path/to/tools.py``) and ``module:function`` specs.

    A source ending in ``.py`` or naming an existing file is a file; anything else is a spec.
    Errors are those of :meth:`ToolRegistry.load_file` and :meth:`ToolRegistry.load_spec`.
    """
    registry = ToolRegistry(timeout=timeout, max_result_bytes=max_result_bytes)
    for source in sources:
        if source.endswith(".py") or os.path.isfile(source):
            registry.load_file(source)
        else:
            registry.load_spec(source)
    return registry


async def run_calls(
    registry: ToolRegistry,
    calls: Sequence[ToolCall],
    *,
    on_cancel: Callable[[list[ToolOutcome]], Awaitable[None]] | None = None,
) -> list[ToolOutcome]:
    """Run every call concurrently; one outcome per call, ordered by ``index``.

    Never raises for anything a call does (see :func:`run_call`); cancelling the caller
    cancels every call and returns nothing. With ``on_cancel``, a cancellation first hands
    it one outcome per call (error ``cancelled`` for those still running), at once: before
    waiting for tools that ignore cancellation (a worker thread is abandoned, an async tool
    that shields itself is waited for). ``on_cancel`` runs in the cancelled scope: it must
    shield what it awaits.
    """
    started = trio.current_time()
    done: dict[int, ToolOutcome] = {}
    finished = trio.Event()

    async def run(position: int, call: ToolCall) -> None:
        done[position] = await run_call(registry, call)
        if len(done) == len(calls):
            finished.set()

    async def watch(on_cancel: Callable[[list[ToolOutcome]], Awaitable[None]]) -> None:
        try:
            await finished.wait()
        except trio.Cancelled:
            elapsed = round((trio.current_time() - started) * 1e9)
            so_far = [
                done[position] if position in done else _cancelled(call, elapsed)
                for position, call in enumerate(calls)
            ]
            await on_cancel(sorted(so_far, key=lambda o: o.index))
            raise

    if not calls:
        return []
    async with trio.open_nursery() as nursery:
        if on_cancel is not None:
            nursery.start_soon(watch, on_cancel)
        for position, call in enumerate(calls):
            nursery.start_soon(run, position, call)
    return sorted(done.values(), key=lambda o: o.index)


def _cancelled(call: ToolCall, duration_ns: int) -> ToolOutcome:
    return ToolOutcome(
        index=call.index,
        id=call.id,
        name=call.name,
        content=f"Error: {call.name or 'the tool'} was cancelled before it returned",
        error="cancelled",
        duration_ns=duration_ns,
    )


async def run_call(registry: ToolRegistry, call: ToolCall) -> ToolOutcome:
    """Validate one call's arguments, run its tool under the tool's timeout, and cap the result.

    Empty arguments mean ``{}`` (some providers send nothing for a call without parameters).
    """
    started = trio.current_time()

    def outcome(content: str | bytes, error: ToolError | None, limit: int) -> ToolOutcome:
        data = content if isinstance(content, bytes) else content.encode("utf-8", "replace")
        text, truncated = _fit(data, limit)
        return ToolOutcome(
            index=call.index,
            id=call.id,
            name=call.name,
            content=text,
            error="too_large" if truncated and error is None else error,
            duration_ns=round((trio.current_time() - started) * 1e9),
        )

    tool = registry.get(call.name) if call.name is not None else None
    if tool is None:
        available = ", ".join(registry.names) or "none"
        what = "the call names no tool" if not call.name else f"there is no tool {call.name!r}"
        return outcome(
            f"Error: {what}. Available tools: {available}.",
            "unknown_tool",
            registry.max_result_bytes,
        )
    limit = tool.max_result_bytes

    source = call.arguments if call.arguments and not call.arguments.isspace() else "{}"
    try:
        arguments = tool._decoder.decode(source)
    except msgspec.ValidationError as exc:  # before DecodeError: it is a subclass
        return outcome(
            f"Error: invalid arguments for {tool.name}: {exc}. "
            "Call it again with arguments that match its parameters.",
            "invalid_arguments",
            limit,
        )
    except msgspec.DecodeError as exc:
        return outcome(
            f"Error: the arguments for {tool.name} are not valid JSON ({_where(exc, source)}). "
            "Send a single JSON object.",
            "invalid_json",
            limit,
        )
    kwargs = msgspec.structs.asdict(arguments)

    result: Any = None
    with trio.move_on_after(tool.timeout) as scope:
        try:
            if tool.is_async:
                result = await tool.function(**kwargs)
            else:
                (result,) = await trio.to_thread.run_sync(
                    _boxed,
                    tool.function,
                    kwargs,
                    thread_name=f"streambus tool {tool.name}",
                    abandon_on_cancel=True,
                )
                if inspect.isawaitable(result):  # a sync wrapper around an async function
                    result = await result
        except Exception as exc:
            return outcome(f"Error: {tool.name} raised {_describe(exc)}", "exception", limit)
    if scope.cancelled_caught:
        return outcome(f"Error: {tool.name} timed out after {tool.timeout:g} s", "timeout", limit)

    if isinstance(result, str):
        return outcome(result, None, limit)
    try:
        data = _encoder.encode(result)
    except (TypeError, ValueError, OverflowError) as exc:
        return outcome(
            f"Error: {tool.name} returned a value that cannot be encoded as JSON: {_describe(exc)}",
            "exception",
            limit,
        )
    return outcome(data, None, limit)


def _boxed(function: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[Any]:
    """Call in a worker thread; boxed because trio refuses a bare coroutine from a sync call."""
    return (function(**kwargs),)


def _fit(data: bytes, limit: int) -> tuple[str, bool]:
    """``data`` (valid UTF-8) as text of at most ``limit`` bytes, note included; never splits
    a character. Returns the text and whether it was truncated."""
    if len(data) <= limit:
        return data.decode("utf-8"), False
    note = f"\n[truncated: the result was {len(data)} bytes, over this tool's limit of {limit}]"
    keep = max(0, limit - len(note.encode("utf-8")))
    return data[:keep].decode("utf-8", "ignore") + note, True


def _describe(exc: BaseException) -> str:
    """``TypeName: message``: what the model needs, without traceback or file paths."""
    try:
        message = str(exc)
    except Exception:
        message = ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _where(exc: msgspec.DecodeError, source: str) -> str:
    """msgspec's message, and the text around the byte it names, so the model sees where."""
    message = str(exc)
    match = re.search(r"\(byte (\d+)\)", message)
    if match is None:
        return message
    position = int(match.group(1))
    data = source.encode("utf-8", "replace")
    near = data[max(0, position - 20) : position + 20].decode("utf-8", "replace")
    return f"{message}, near {near!r}"


def _is_async(function: Callable[..., Any]) -> bool:
    # An object whose __call__ is async counts too.
    call = type(function).__call__
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)


def _arguments_struct(name: str, function: Callable[..., Any]) -> type[msgspec.Struct]:
    """The parameters as a Struct: annotations are the types, defaults the defaults."""
    try:
        signature = inspect.signature(function, eval_str=True)
    except (NameError, SyntaxError, AttributeError) as exc:
        raise TypeError(f"tool {name!r}: cannot resolve its annotations: {_describe(exc)}") from exc
    except ValueError as exc:
        raise TypeError(f"tool {name!r}: its signature cannot be inspected ({exc})") from exc
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for parameter in signature.parameters.values():
        where = f"tool {name!r}, parameter {parameter.name!r}"
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise TypeError(f"{where} is positional-only; tool arguments arrive by name")
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{where}: *args and **kwargs cannot be described by a schema")
        if parameter.annotation is parameter.empty:
            raise TypeError(f"{where} has no type annotation; the schema is derived from it")
        if parameter.default is parameter.empty:
            fields.append((parameter.name, parameter.annotation))
        elif isinstance(parameter.default, list | dict | set | bytearray) and parameter.default:
            factory = functools.partial(copy.deepcopy, parameter.default)
            fields.append(
                (parameter.name, parameter.annotation, msgspec.field(default_factory=factory))
            )
        else:
            fields.append((parameter.name, parameter.annotation, parameter.default))
    try:
        return msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True)
    except TypeError as exc:
        raise TypeError(f"tool {name!r}: {exc}") from exc


def _object_schema(
    name: str, struct: type[msgspec.Struct], parameter_docs: dict[str, str]
) -> dict[str, Any]:
    """A self-contained object schema (no ``$ref``), as providers want for ``parameters``."""
    try:
        schema = msgspec.json.schema(struct)
    except TypeError:
        for field, annotation in struct.__annotations__.items():
            try:
                msgspec.json.schema(annotation)
            except TypeError:
                shown = getattr(annotation, "__qualname__", None) or repr(annotation)
                raise TypeError(
                    f"tool {name!r}, parameter {field!r}: {shown} has no JSON Schema; "
                    "use JSON types (str, int, float, bool, None, Literal, list, dict, "
                    "msgspec.Struct, dataclass, TypedDict, Enum, …)"
                ) from None
        raise
    result: dict[str, Any] = _inline(schema, schema.get("$defs", {}), ())
    result.pop("title", None)
    result.setdefault("required", [])
    properties: dict[str, Any] = result.setdefault("properties", {})
    for parameter, text in parameter_docs.items():
        if parameter in properties and "description" not in properties[parameter]:
            properties[parameter] = {"description": text, **properties[parameter]}
    return result


_VALUES: Final = frozenset({"default", "enum", "const", "examples"})


def _inline(node: Any, defs: dict[str, Any], expanding: tuple[str, ...]) -> Any:
    """``node`` with every ``$ref`` replaced by a copy of its definition."""
    if isinstance(node, list):
        return [_inline(item, defs, expanding) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    ref = node.get("$ref")
    if isinstance(ref, str):
        key = ref.rsplit("/", 1)[-1]
        if key in expanding:
            raise TypeError(
                f"{key} refers to itself; a recursive type cannot be offered as a tool schema"
            )
        out.update(_inline(defs[key], defs, (*expanding, key)))
    for key, value in node.items():
        if key in ("$ref", "$defs"):
            continue
        if key in _VALUES:
            out[key] = value
        elif key == "properties" and isinstance(value, dict):
            out[key] = {prop: _inline(schema, defs, expanding) for prop, schema in value.items()}
        else:
            out[key] = _inline(value, defs, expanding)
    enum = out.get("enum")
    if isinstance(enum, list) and enum and "type" not in out:
        if all(isinstance(v, str) for v in enum):
            out = {"type": "string", **out}
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in enum):
            out = {"type": "integer", **out}
    return out


_GOOGLE_HEADER: Final = re.compile(
    r"(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters)\s*:"
)
_GOOGLE_ITEM: Final = re.compile(r"\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)")
_NUMPY_HEADERS: Final = frozenset({"Parameters", "Other Parameters", "Keyword Arguments"})
_NUMPY_ITEM: Final = re.compile(r"(\w+)\s*(?::.*)?")
_UNDERLINE: Final = re.compile(r"\s*-{3,}\s*")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and per-parameter text from a Google or NumPy parameters section."""
    lines = doc.splitlines()

    def underlined(i: int) -> bool:
        return i + 1 < len(lines) and _UNDERLINE.fullmatch(lines[i + 1]) is not None

    summary: list[str] = []
    for i, line in enumerate(lines):
        if not line.strip() or _GOOGLE_HEADER.fullmatch(line.strip()) or underlined(i):
            break
        summary.append(line.strip())
    parameters: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        header = line.strip()
        indent = len(line) - len(line.lstrip())
        if _GOOGLE_HEADER.fullmatch(header):
            _google_items(lines[i + 1 :], indent, parameters)
        elif header in _NUMPY_HEADERS and underlined(i):
            _numpy_items(lines[i + 2 :], indent, parameters)
    docs = {name: " ".join(parts) for name, parts in parameters.items() if parts}
    return " ".join(summary), docs


def _google_items(lines: list[str], header: int, into: dict[str, list[str]]) -> None:
    item_indent: int | None = None
    current: list[str] | None = None
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= header:
            return
        if item_indent is None:
            item_indent = indent
        if indent <= item_indent:
            match = _GOOGLE_ITEM.fullmatch(line.strip())
            current = into.setdefault(match[1], []) if match else None
            if match and match[2]:
                assert current is not None
                current.append(match[2].strip())
        elif current is not None:
            current.append(line.strip())


def _numpy_items(lines: list[str], header: int, into: dict[str, list[str]]) -> None:
    current: list[str] | None = None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if i + 1 < len(lines) and _UNDERLINE.fullmatch(lines[i + 1]):
            return  # the next section
        if len(line) - len(line.lstrip()) <= header:
            match = _NUMPY_ITEM.fullmatch(line.strip())
            current = into.setdefault(match[1], []) if match else None
        elif current is not None:
            current.append(line.strip())


def _run_file(file: Path) -> ModuleType:
    """Run a Python file as a new module with a unique name, registered in ``sys.modules``
    (msgspec and dataclasses resolve string annotations through it)."""
    if not file.is_file():
        raise ImportError(f"no such tool file: {file}", path=str(file))
    stem = re.sub(r"\W", "_", file.stem)
    module_name = f"_streambus_tools_{next(_module_numbers)}_{stem}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {file} as Python", path=str(file))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ImportError(
            f"cannot load tools from {file}: {_describe(exc)}", path=str(file)
        ) from exc
    return module
