"""Parse + normalize, sans-I/O: bytes of a provider stream → text, tool-call fragments,
finish reason and usage, with no network and no event loop.

Four realistic stream bodies (bench/payloads.py: OpenAI text, OpenAI parallel tool calls,
Anthropic text, Anthropic tool use; a few thousand events each in the full run) are cut into
network reads of two shapes: ``bulk`` (4 KiB reads, many events each, cut anywhere, even
inside a UTF-8 character) and ``live`` (one event per read, as a token-by-token stream
arrives). Every contender gets the same reads and must deliver the same answer; a check after
the timing asserts it (text, each tool call's arguments, finish reason, output tokens), so a
broken contender cannot look fast. The contenders:

* ``ours``: ``SSEDecoder.feed`` per read, then the provider normalizer's ``receive`` (what
  ``streambus/client.py`` does per read); ``ours + MessageBuilder`` adds assembly on top.
* the official SDKs, sync clients (no event loop, the cleanest per-event figure), fed the
  reads through an ``httpx2.MockTransport`` (both SDKs are built on httpx2): the bare
  ``create(stream=True)`` iteration and the ``.stream()`` helper (which accumulates a
  snapshot as it goes). Their rows include one request's client-side overhead, spread over
  the stream's events.
* ``httpx-sse``: its own ``SSELineDecoder`` and ``SSEDecoder`` line by line, as its
  ``iter_sse`` does, plus ``json.loads``.
* ``naive``: split the bytes into lines, strip ``data: ``, ``json.loads`` each.
* the LLM benchmark tools' client loops, on the OpenAI text stream only (what they time):
  vLLM ``bench serve``'s and llmperf's, re-implemented step for step (below), with the
  timestamps and ITL lists they keep. They read only the text, so only the text is checked.
  vLLM's loop as released gets bulk reads wrong (it strips every read; a read that ends just
  before a space loses it) and runs on live reads only; with vllm-project/vllm#51172's fix
  (reads unstripped) it runs on both.
* ``floor``: split on a blank line, strip ``data: ``, ``msgspec`` decode into a minimal
  struct: what no correct decoder can go much below (it ignores CR line endings, comments,
  multi-line data, …).

Every contender, ours included, collects the pieces a caller needs (text and argument
fragments, finish reason, usage) as it goes. Figures are µs per SSE event (the same count for
every contender: the payload's events), the median of several repetitions with min–max;
``per_s`` is events per second. The contenders run in interleaved rounds (one run of each per
round; the SDKs, being slow, in fewer rounds), so load from other processes hits all alike;
``x_ours`` is a contender's time over ours in the same round (above 1: ours is faster) and
``x_floor`` ours over the floor, each the median over rounds. Read the ratios first: absolute
figures move with the machine's load, ratios much less. Targets: ours within 4× of the floor,
and at most 10 µs per event end to end in bulk on an idle machine.

The ``tool-argument assembly`` group times ``MessageBuilder`` joining one tool call that
arrives in 16-byte argument fragments, from 1 KiB to 1 MiB: µs per KiB, which must stay flat
(assembly linear in the size) from 16 KiB on; at 1 KiB the per-message fixed cost shows.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from bench.common import Result, measure, repeat
from bench.payloads import Payload, bulk_reads, live_reads, payloads
from streambus.events import Event, Start, ToolDelta
from streambus.message import MessageBuilder, assemble
from streambus.normalizers import AnthropicNormalizer, Normalizer, OpenAINormalizer
from streambus.sse import SSEDecoder

__all__ = ["run"]


@dataclasses.dataclass
class Answer:
    """What every contender must get out of a stream: the same for all, or it is broken."""

    text: str
    arguments: list[str]
    finish: str | None
    output_tokens: int | None


Reads = list[bytes]
Contender = Callable[[Reads], Any]
"""Turns a stream's reads into something :func:`_answer_of` can check (timed)."""


# -- ours -------------------------------------------------------------------------------------


def _normalizer(provider: str) -> Normalizer:
    if provider == "openai":
        normalizer: Normalizer = OpenAINormalizer(session="bench", model="gpt-4o-mini")
    else:
        normalizer = AnthropicNormalizer(session="bench", model="claude-haiku-4-5")
    normalizer.start()
    return normalizer


def ours(provider: str) -> Contender:
    """Decode + normalize, per read, as streambus/client.py does; the events are the answer."""

    def run(reads: Reads) -> list[Event]:
        decoder = SSEDecoder()
        normalizer = _normalizer(provider)
        receive = normalizer.receive
        out: list[Event] = []
        for t_ns, chunk in enumerate(reads):
            sse_events = decoder.feed(chunk)
            if sse_events:
                out += receive(sse_events, t_ns)
        decoder.close()
        return out

    return run


def ours_assembled(provider: str) -> Contender:
    """:func:`ours` plus ``MessageBuilder.add`` per read and the final message."""

    def run(reads: Reads) -> Answer:
        decoder = SSEDecoder()
        normalizer = _normalizer(provider)
        receive = normalizer.receive
        builder = MessageBuilder()
        add = builder.add
        for t_ns, chunk in enumerate(reads):
            sse_events = decoder.feed(chunk)
            if sse_events:
                add(receive(sse_events, t_ns))
        decoder.close()
        return _answer_of(builder.message)

    return run


# -- dict-based contenders: the same extraction for httpx-sse and naive ------------------------


class _OpenAIDicts:
    """Collects the answer from ``json.loads``-ed chat.completion.chunk dicts."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.arguments: dict[int, list[str]] = {}
        self.finish: str | None = None
        self.output_tokens: int | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content = delta.get("content")
            if content:
                self.text.append(content)
            for call in delta.get("tool_calls") or ():
                pieces = self.arguments.setdefault(call["index"], [])
                pieces.append(call["function"].get("arguments") or "")
            if choice["finish_reason"] is not None:
                self.finish = choice["finish_reason"]
        usage = chunk.get("usage")
        if usage:
            self.output_tokens = usage["completion_tokens"]

    def answer(self) -> Answer:
        arguments = ["".join(self.arguments[i]) for i in sorted(self.arguments)]
        return Answer("".join(self.text), arguments, self.finish, self.output_tokens)


class _AnthropicDicts:
    """Collects the answer from ``json.loads``-ed Messages stream event dicts."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.arguments: dict[int, list[str]] = {}
        self.finish: str | None = None
        self.output_tokens: int | None = None

    def add(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                self.text.append(delta["text"])
            elif delta["type"] == "input_json_delta":
                self.arguments.setdefault(event["index"], []).append(delta["partial_json"])
        elif kind == "message_delta":
            self.finish = event["delta"]["stop_reason"]
            self.output_tokens = event["usage"]["output_tokens"]

    def answer(self) -> Answer:
        arguments = ["".join(self.arguments[i]) for i in sorted(self.arguments)]
        return Answer("".join(self.text), arguments, self.finish, self.output_tokens)


def _collector(provider: str) -> _OpenAIDicts | _AnthropicDicts:
    return _OpenAIDicts() if provider == "openai" else _AnthropicDicts()


def httpx_sse(provider: str) -> Contender:
    """httpx-sse's decoders as ``EventSource.iter_sse`` drives them, then ``json.loads``."""
    from httpx_sse._decoders import SSEDecoder as LineEventDecoder
    from httpx_sse._decoders import SSELineDecoder

    def run(reads: Reads) -> Answer:
        text_decoder = codecs.getincrementaldecoder("utf-8")()  # what aiter_text() does
        lines = SSELineDecoder()
        events = LineEventDecoder()
        collector = _collector(provider)
        for chunk in reads:
            for line in lines.decode(text_decoder.decode(chunk)):
                sse = events.decode(line.rstrip("\n"))
                if sse is None or sse.data == "[DONE]" or sse.event == "ping":
                    continue
                collector.add(json.loads(sse.data))
        return collector.answer()

    return run


def naive(provider: str) -> Contender:
    """What a quick script does: split into lines, keep ``data: `` ones, ``json.loads``."""

    def run(reads: Reads) -> Answer:
        collector = _collector(provider)
        pending = b""
        for chunk in reads:
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if line.startswith(b"data: "):
                    data = line[6:]
                    if data != b"[DONE]":
                        collector.add(json.loads(data))
        return collector.answer()

    return run


# -- the LLM benchmark tools' client loops (OpenAI text: what they are built to time) ----------
#
# Re-implemented from their sources (same steps, in our words), not imported: vLLM needs
# torch, llmperf ray. Each keeps what its tool keeps per chunk: a timestamp, the ITL list,
# the text. genai-perf has no Python stream loop (perf_analyzer, C++, does the reading).


class BenchmarkToolAnswer(Answer):
    """What a benchmark tool's loop gets out of a stream: the text, and the tokens it counts.

    Only the text is checked: vLLM reads the output tokens from usage, llmperf counts
    content chunks, and neither reads tool calls or the finish reason."""


def _benchmark_tool_answer(text: str, tokens: int | None) -> BenchmarkToolAnswer:
    return BenchmarkToolAnswer(text, [], None, tokens)


class VLLMMessages:
    """vLLM ``bench serve``'s SSE framing (``vllm/benchmarks/lib/endpoint_request_func.py``:
    its request loop strips each read, ``StreamedResponseHandler.add_chunk`` does the rest):
    :meth:`add` takes a read and returns the messages it completed.

    Each read is stripped of surrounding whitespace (unless ``strip_reads`` is false: the
    fix proposed in vllm-project/vllm#51172, since a read cut just before a space loses it:
    ``data:`` + `` {…}`` no longer parses, and a token's leading space vanishes from the
    text) and decoded into a text buffer; every ``"\n\n"`` splits one message off the
    buffer's front (``str.split(..., 1)``: the rest is copied once per message); a leftover
    that starts with ``data: `` and parses as JSON (a ``json.loads`` thrown away) is taken as
    a message too.
    """

    def __init__(self, *, strip_reads: bool = True) -> None:
        self._decode = codecs.getincrementaldecoder("utf-8")().decode
        self._buffer = ""
        self._strip = strip_reads

    def add(self, read: bytes) -> list[str]:
        if self._strip:
            read = read.strip()
        if not read:
            return []
        buffer = self._buffer + self._decode(read)
        messages = []
        while "\n\n" in buffer:
            message, buffer = buffer.split("\n\n", 1)
            if message := message.strip():
                messages.append(message)
        if buffer.startswith("data: "):  # a whole message without its blank line?
            rest = buffer[6:].strip()
            complete = rest == "[DONE]"
            if not complete and rest:
                try:
                    json.loads(rest)
                    complete = True
                except json.JSONDecodeError:
                    pass  # not yet: wait for more
            if complete:
                messages.append(buffer.strip())
                buffer = ""
        self._buffer = buffer
        return messages

    def data(self, read: bytes) -> list[str]:
        """The data of each message :meth:`add` completes, as vLLM's request loop takes it:
        comments (``:`` pings) and ``[DONE]`` skipped, ``data: `` cut off."""
        out = []
        for message in self.add(read):
            if not message.startswith(":"):
                data = message.removeprefix("data: ")
                if data != "[DONE]":
                    out.append(data)
        return out


def vllm_bench_serve(provider: str, *, strip_reads: bool = True) -> Contender:
    """vLLM ``bench serve``'s OpenAI chat loop (``async_request_openai_chat_completions``)
    over :meth:`VLLMMessages.data`: per message a timestamp,
    ``json.loads``, the first choice's content added to the text, the gap to the last token
    appended to the ITL list; a chunk without choices gives the usage."""
    assert provider == "openai"
    perf_counter = time.perf_counter

    def run(reads: Reads) -> BenchmarkToolAnswer:
        framing = VLLMMessages(strip_reads=strip_reads)
        text = ""
        itl: list[float] = []
        first = True
        start = last = perf_counter()
        tokens = None
        for read in reads:
            for data in framing.data(read):
                now = perf_counter()
                chunk = json.loads(data)
                if choices := chunk.get("choices"):
                    if first:
                        first, ttft = False, now - start  # noqa: F841 - as the tool keeps it
                    else:
                        itl.append(now - last)
                    text += choices[0]["delta"].get("content") or ""
                    last = now
                elif usage := chunk.get("usage"):
                    tokens = usage.get("completion_tokens")
        return _benchmark_tool_answer(text, tokens)

    return run


def vllm_bench_serve_fixed(provider: str) -> Contender:
    """:func:`vllm_bench_serve` with vllm-project/vllm#51172 applied: reads not stripped."""
    return vllm_bench_serve(provider, strip_reads=False)


def llmperf(provider: str) -> Contender:
    """llmperf's OpenAI chat loop (``src/llmperf/ray_clients/openai_chat_completions_client.py``),
    fed by ``requests``' ``iter_lines(chunk_size=None)`` (each read split into lines, an
    unfinished last line carried into the next read).

    Each line stripped; ``data: `` cut off by length; ``json.loads``; a timestamp and an ITL
    entry per chunk with content; the content added to the text. One change, so that it
    finishes: a chunk with no choices (the usage chunk, which llmperf never asks for) is
    skipped where llmperf would raise ``IndexError``.
    """
    assert provider == "openai"
    monotonic = time.monotonic

    def lines(reads: Reads) -> Iterator[bytes]:  # requests.Response.iter_lines, no delimiter
        pending = None
        for read in reads:
            if pending is not None:
                read = pending + read
            parts = read.splitlines()
            if parts and parts[-1] and read and parts[-1][-1] == read[-1]:
                pending = parts.pop()
            else:
                pending = None
            yield from parts
        if pending is not None:
            yield pending

    def run(reads: Reads) -> BenchmarkToolAnswer:
        text = ""
        itl: list[float] = []
        tokens = 0
        ttft = 0.0
        start = last = monotonic()
        for line in lines(reads):
            line = line.strip()
            if not line:
                continue
            line = line[6:]
            if line == b"[DONE]":
                continue
            tokens += 1
            chunk = json.loads(line)
            if not chunk["choices"]:
                continue
            delta = chunk["choices"][0]["delta"]
            if delta.get("content"):
                if not ttft:
                    ttft = monotonic() - start
                    itl.append(ttft)
                else:
                    itl.append(monotonic() - last)
                last = monotonic()
                text += delta["content"]
        return _benchmark_tool_answer(text, tokens)

    return run


_BENCHMARK_TOOLS: list[tuple[str, Callable[[str], Contender], frozenset[str]]] = [
    # name, factory, the read shapes it gets right (vLLM's loop as released fails bulk reads:
    # a 4 KiB read may end just before a space, which the strip then drops)
    ("vLLM bench serve loop", vllm_bench_serve, frozenset({"live"})),
    ("vLLM loop, reads unstripped (#51172)", vllm_bench_serve_fixed, frozenset({"bulk", "live"})),
    ("llmperf loop", llmperf, frozenset({"bulk", "live"})),
]
"""Raced on the OpenAI text stream only, before the floor."""


# -- floor: blank-line split + msgspec into the least that carries the answer -----------------


class _FFunction(msgspec.Struct, gc=False):
    arguments: str = ""


class _FCall(msgspec.Struct, gc=False):
    index: int = 0
    function: _FFunction | None = None


class _FDelta(msgspec.Struct, gc=False):
    content: str | None = None
    tool_calls: list[_FCall] | None = None


class _FChoice(msgspec.Struct, gc=False):
    delta: _FDelta | None = None
    finish_reason: str | None = None


class _FChunkUsage(msgspec.Struct, gc=False):
    completion_tokens: int = 0


class _FChunk(msgspec.Struct, gc=False):
    choices: list[_FChoice] = []
    usage: _FChunkUsage | None = None


class _FBlockDelta(msgspec.Struct, gc=False):
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _FEventUsage(msgspec.Struct, gc=False):
    output_tokens: int = 0


class _FEvent(msgspec.Struct, gc=False):
    index: int = 0
    delta: _FBlockDelta | None = None
    usage: _FEventUsage | None = None


def floor(provider: str) -> Contender:
    """Split on ``\\n\\n``, strip ``data: ``, msgspec-decode a minimal struct; nothing else."""
    if provider == "openai":
        decode_chunk = msgspec.json.Decoder(_FChunk).decode

        def run(reads: Reads) -> Answer:
            text: list[str] = []
            arguments: dict[int, list[str]] = {}
            finish = output_tokens = None
            pending = b""
            for chunk in reads:
                events = (pending + chunk).split(b"\n\n")
                pending = events.pop()
                for event in events:
                    if event == b"data: [DONE]":
                        continue
                    decoded = decode_chunk(event[6:])
                    for choice in decoded.choices:
                        delta = choice.delta
                        if delta is not None:
                            if delta.content:
                                text.append(delta.content)
                            for call in delta.tool_calls or ():
                                if call.function is not None:
                                    arguments.setdefault(call.index, []).append(
                                        call.function.arguments
                                    )
                        if choice.finish_reason is not None:
                            finish = choice.finish_reason
                    if decoded.usage is not None:
                        output_tokens = decoded.usage.completion_tokens
            joined = ["".join(arguments[i]) for i in sorted(arguments)]
            return Answer("".join(text), joined, finish, output_tokens)

        return run

    decode_event = msgspec.json.Decoder(_FEvent).decode

    def run_anthropic(reads: Reads) -> Answer:
        text: list[str] = []
        arguments: dict[int, list[str]] = {}
        finish = output_tokens = None
        pending = b""
        for chunk in reads:
            events = (pending + chunk).split(b"\n\n")
            pending = events.pop()
            for event in events:
                decoded = decode_event(event[event.index(b"\ndata: ") + 7 :])
                delta = decoded.delta
                if delta is not None:
                    if delta.text is not None:
                        text.append(delta.text)
                    elif delta.partial_json is not None:
                        arguments.setdefault(decoded.index, []).append(delta.partial_json)
                    elif delta.stop_reason is not None:
                        finish = delta.stop_reason
                if decoded.usage is not None:
                    output_tokens = decoded.usage.output_tokens
        joined = ["".join(arguments[i]) for i in sorted(arguments)]
        return Answer("".join(text), joined, finish, output_tokens)

    return run_anthropic


# -- the official SDKs, sync clients over an httpx2.MockTransport -----------------------------

_PROMPT: list[Any] = [{"role": "user", "content": "스트리밍이 뭐예요?"}]


class _Feed:
    """An ``httpx2.MockTransport`` handler answering every request with the current reads."""

    def __init__(self) -> None:
        self.reads: Reads = []

    def __call__(self, request: Any) -> Any:
        import httpx2

        headers = [("content-type", "text/event-stream; charset=utf-8")]
        return httpx2.Response(200, headers=headers, content=iter(self.reads))


def _sdk_client(provider: str, feed: _Feed) -> Any:
    import httpx2

    http_client = httpx2.Client(transport=httpx2.MockTransport(feed))
    if provider == "openai":
        import openai

        return openai.OpenAI(
            api_key="bench", base_url="http://bench.invalid/v1", max_retries=0,
            http_client=http_client,
        )  # fmt: skip
    import anthropic

    return anthropic.Anthropic(
        api_key="bench", base_url="http://bench.invalid", max_retries=0, http_client=http_client
    )


def sdk_create(provider: str) -> Contender:
    """``create(stream=True)``, iterated bare: the SDK's own typed chunks / events."""
    feed = _Feed()
    client = _sdk_client(provider, feed)
    if provider == "openai":

        def run(reads: Reads) -> Answer:
            feed.reads = reads
            text: list[str] = []
            arguments: dict[int, list[str]] = {}
            finish = output_tokens = None
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=_PROMPT,
                stream=True,
                stream_options={"include_usage": True},
            )
            for chunk in stream:
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                    for call in delta.tool_calls or ():
                        pieces = arguments.setdefault(call.index, [])
                        pieces.append((call.function.arguments or "") if call.function else "")
                    if choice.finish_reason is not None:
                        finish = choice.finish_reason
                if chunk.usage is not None:
                    output_tokens = chunk.usage.completion_tokens
            joined = ["".join(arguments[i]) for i in sorted(arguments)]
            return Answer("".join(text), joined, finish, output_tokens)

        return run

    def run_anthropic(reads: Reads) -> Answer:
        feed.reads = reads
        text: list[str] = []
        arguments: dict[int, list[str]] = {}
        finish = output_tokens = None
        stream = client.messages.create(
            model="claude-haiku-4-5", max_tokens=64_000, messages=_PROMPT, stream=True
        )
        for event in stream:
            if event.type == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta":
                    text.append(delta.text)
                elif delta.type == "input_json_delta":
                    arguments.setdefault(event.index, []).append(delta.partial_json)
            elif event.type == "message_delta":
                finish = event.delta.stop_reason
                output_tokens = event.usage.output_tokens
        joined = ["".join(arguments[i]) for i in sorted(arguments)]
        return Answer("".join(text), joined, finish, output_tokens)

    return run_anthropic


def sdk_helper(provider: str) -> Contender:
    """The ``.stream()`` helper: typed high-level events, a running snapshot, a final message."""
    feed = _Feed()
    client = _sdk_client(provider, feed)
    if provider == "openai":

        def run(reads: Reads) -> Answer:
            feed.reads = reads
            text: list[str] = []
            arguments: dict[int, list[str]] = {}
            with client.chat.completions.stream(
                model="gpt-4o-mini", messages=_PROMPT, stream_options={"include_usage": True}
            ) as stream:
                for event in stream:
                    if event.type == "content.delta":
                        text.append(event.delta)
                    elif event.type == "tool_calls.function.arguments.delta":
                        arguments.setdefault(event.index, []).append(event.arguments_delta)
                final = stream.get_final_completion()
            joined = ["".join(arguments[i]) for i in sorted(arguments)]
            usage = final.usage.completion_tokens if final.usage else None
            return Answer("".join(text), joined, final.choices[0].finish_reason, usage)

        return run

    def run_anthropic(reads: Reads) -> Answer:
        feed.reads = reads
        text: list[str] = []
        arguments: dict[int, list[str]] = {}
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=64_000, messages=_PROMPT
        ) as stream:
            block = 0  # InputJsonEvent has no index: the block that started last
            for event in stream:
                if event.type == "text":
                    text.append(event.text)
                elif event.type == "input_json":
                    arguments.setdefault(block, []).append(event.partial_json)
                elif event.type == "content_block_start":
                    block = event.index
            final = stream.get_final_message()
        joined = ["".join(arguments[i]) for i in sorted(arguments)]
        return Answer("".join(text), joined, final.stop_reason, final.usage.output_tokens)

    return run_anthropic


# -- the check ---------------------------------------------------------------------------------


def _answer_of(output: Any) -> Answer:
    """The answer a contender's output holds (ours gives events or a Message)."""
    if isinstance(output, Answer):
        return output
    message = assemble(output) if isinstance(output, list) else output
    stop = message.stop
    assert stop is not None and stop.error is None, stop
    arguments = [call.arguments for call in message.tool_calls]
    usage = message.usage.output_tokens if message.usage else None
    return Answer(message.text, arguments, stop.raw_reason, usage)


def _check(name: str, payload: Payload, shape: str, output: Any) -> None:
    got = _answer_of(output)
    want = Answer(payload.text, payload.arguments, payload.finish, payload.output_tokens)
    if isinstance(got, BenchmarkToolAnswer):  # a benchmark tool's loop keeps only the text
        want = BenchmarkToolAnswer(payload.text, [], None, got.output_tokens)
    if got != want:
        for field in dataclasses.fields(Answer):
            if getattr(got, field.name) != getattr(want, field.name):
                raise AssertionError(
                    f"{name} on {payload.name} ({shape}): wrong {field.name}: "
                    f"{getattr(got, field.name)!r:.200} != {getattr(want, field.name)!r:.200}"
                )


# -- tool-argument assembly --------------------------------------------------------------------


def _tool_call_events(size: int, fragment: int) -> tuple[str, list[Event]]:
    """One tool call whose ``size``-byte JSON arguments arrive ``fragment`` bytes at a time."""
    arguments = json.dumps({"content": "x" * (size - 15)})
    assert len(arguments) == size
    events: list[Event] = [
        Start(session="bench", seq=0, t_ns=0, provider="openai", model="gpt-4o-mini"),
        ToolDelta(session="bench", seq=1, t_ns=1, index=0, id="call_1", name="write_file",
                  arguments=""),
    ]  # fmt: skip
    for offset in range(0, size, fragment):
        seq = len(events)
        piece = arguments[offset : offset + fragment]
        events.append(
            ToolDelta(session="bench", seq=seq, t_ns=seq, index=0, id=None, name=None,
                      arguments=piece)
        )  # fmt: skip
    return arguments, events


def _assemble_one_by_one(events: list[Event]) -> str:
    builder = MessageBuilder()
    add = builder.add
    for event in events:  # one event per call, as a live stream delivers them
        add((event,))
    return builder.message.tool_calls[0].arguments


def _assembly(sizes: list[int], fragment: int, reps: int) -> list[Result]:
    """µs per KiB of arguments for each size; sizes are timed in interleaved rounds."""
    streams = {size: _tool_call_events(size, fragment) for size in sizes}
    for arguments, events in streams.values():
        assert _assemble_one_by_one(events) == arguments  # also the warm-up run
    samples: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(reps):
        for size, (_, events) in streams.items():
            [seconds] = repeat(lambda e=events: _assemble_one_by_one(e), reps=1, warmup=0)
            samples[size].append(seconds / (size / 1024) * 1e6)
    group = f"tool-argument assembly ({fragment}-byte fragments, MessageBuilder)"
    results = []
    for size in sizes:
        label = f"{size >> 10} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        n = len(streams[size][1]) - 2
        row = measure(group, label, "µs/KiB", samples[size], fragments=n)
        row.extra["ns_per_fragment"] = round(row.median * 1000 * size / 1024 / n)
        results.append(row)
    return results


# -- the run -----------------------------------------------------------------------------------

_CONTENDERS: list[tuple[str, Callable[[str], Contender], bool]] = [
    # name, factory, is it an SDK (fewer repetitions: they are slow)
    ("ours: SSEDecoder + normalizer", ours, False),
    ("ours + MessageBuilder", ours_assembled, False),
    ("SDK create(stream=True)", sdk_create, True),
    ("SDK .stream() helper", sdk_helper, True),
    ("httpx-sse + json.loads", httpx_sse, False),
    ("naive lines + json.loads", naive, False),
    ("floor: split + msgspec", floor, False),
]


def _race(group: str, n: int, contenders: list[tuple[str, Contender, bool]], reads: Reads,
          reps: int, sdk_reps: int) -> list[Result]:  # fmt: skip
    """Time every contender on ``reads`` in rounds (one run of each per round), so a load
    change on the shared machine hits all of them alike; ratios are medians of per-round
    ratios. The SDKs (slow) run in ``sdk_reps`` rounds spread over the ``reps``."""
    sdk_rounds = {round(i * (reps - 1) / max(sdk_reps - 1, 1)) for i in range(sdk_reps)}
    seconds: dict[str, dict[int, float]] = {name: {} for name, _, _ in contenders}
    for round_ in range(reps):
        for name, contender, sdk in contenders:
            if not sdk or round_ in sdk_rounds:
                [seconds[name][round_]] = repeat(lambda c=contender: c(reads), reps=1, warmup=0)

    def ratio(name: str, base: str) -> float:
        pairs = [t / seconds[base][r] for r, t in seconds[name].items()]
        return round(statistics.median(pairs), 2)

    ours_name, floor_name = contenders[0][0], contenders[-1][0]
    rows = []
    for name, _, _ in contenders:
        row = measure(group, name, "µs/event", [t / n * 1e6 for t in seconds[name].values()])
        row.extra["per_s"] = round(1e6 / row.median)
        if name.startswith("ours"):
            row.extra["x_floor"] = ratio(name, floor_name)
        else:
            row.extra["x_ours"] = ratio(name, ours_name)
        rows.append(row)
    return rows


def run(quick: bool) -> list[Result]:
    events, reps, sdk_reps = (60, 2, 1) if quick else (4000, 9, 3)
    results: list[Result] = []
    for payload in payloads(events):
        n = len(payload.events)
        for shape, reads in (("bulk", bulk_reads(payload)), ("live", live_reads(payload))):
            factories = _CONTENDERS
            if payload.name == "openai text":
                tools = [(t, f, False) for t, f, shapes in _BENCHMARK_TOOLS if shape in shapes]
                factories = [*_CONTENDERS[:-1], *tools, _CONTENDERS[-1]]
            contenders = [
                (name.replace("SDK", f"{payload.provider} SDK"), factory(payload.provider), sdk)
                for name, factory, sdk in factories
            ]
            for name, contender, _ in contenders:
                _check(name, payload, shape, contender(reads))  # also the warm-up run
            group = f"{payload.name}, {shape} ({n} events in {len(reads)} reads)"
            results += _race(group, n, contenders, reads, reps, sdk_reps)
    sizes = [1 << 10, 16 << 10] if quick else [1 << 10, 16 << 10, 256 << 10, 1 << 20]
    results += _assembly(sizes, fragment=16, reps=reps)
    return results
