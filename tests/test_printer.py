"""The console printers: where each kind of content goes, coalesced writes, plain vs colour."""

from __future__ import annotations

import io

import msgspec
import pytest
import trio

from streambus import (
    ConsolePrinter,
    Delta,
    Event,
    JsonlPrinter,
    Start,
    Stop,
    ToolDelta,
    Usage,
    decode_event,
    open_bus,
)


class CountingWriter(io.StringIO):
    """A text stream that counts write calls, to check that output is coalesced."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def session() -> list[Event]:
    s = "s1"
    return [
        Start(session=s, seq=0, t_ns=0, provider="sim", model="m"),
        Delta(session=s, seq=1, t_ns=100_000_000, text="hmm, ", channel="reasoning"),
        Delta(session=s, seq=2, t_ns=110_000_000, text="let me see", channel="reasoning"),
        Delta(session=s, seq=3, t_ns=200_000_000, text="Hello", channel="text"),
        Delta(session=s, seq=4, t_ns=210_000_000, text=" world", channel="text"),
        ToolDelta(session=s, seq=5, t_ns=300_000_000, index=0, id="c1", name="get_weather"),
        ToolDelta(session=s, seq=6, t_ns=310_000_000, index=0, arguments='{"location": "서울"}'),
        Usage(session=s, seq=7, t_ns=1_000_000_000, input_tokens=3, output_tokens=9),
        Stop(session=s, seq=8, t_ns=1_000_000_000, reason="tool_calls", raw_reason="tool_calls"),
    ]


def test_answer_on_stdout_everything_else_on_stderr_plain() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = ConsolePrinter(out, err)
    printer.on_events(session())
    assert out.getvalue() == "Hello world\n"
    assert err.getvalue() == (
        "[thinking] hmm, let me see\n"
        '[tool call 0] get_weather {"location": "서울"}\n'
        "[tool_calls · 3 in / 9 out tokens · TTFT 0.10 s · 1.00 s · 10.0 tok/s]\n"
    )
    assert "\x1b" not in out.getvalue() + err.getvalue()


def _printed(batches: list[list[Event]]) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    printer = ConsolePrinter(out, err)
    for batch in batches:
        printer.on_events(batch)
    printer.flush()
    return out.getvalue(), err.getvalue()


def test_output_does_not_depend_on_batching_even_with_sessions_interleaved() -> None:
    """Whole batches take a fast path (one builder call, text inline); mixed ones do not."""
    first = session()
    second = [
        msgspec.structs.replace(e, session="s2", t_ns=e.t_ns * 2)
        for e in session()
        if not isinstance(e, Usage)
    ]
    interleaved = [e for pair in zip(first, second, strict=False) for e in pair] + first[-1:]
    one_by_one = _printed([[e] for e in interleaved])
    assert _printed([interleaved]) == one_by_one
    assert _printed([interleaved[:5], interleaved[5:11], interleaved[11:]]) == one_by_one
    summaries = [line for line in one_by_one[1].splitlines() if line.startswith("[tool_calls")]
    assert summaries == [  # each session's own summary, though their events shared batches
        "[tool_calls · TTFT 0.20 s · 2.00 s]",
        "[tool_calls · 3 in / 9 out tokens · TTFT 0.10 s · 1.00 s · 10.0 tok/s]",
    ]
    assert _printed([first]) == _printed([[e] for e in first])


def test_colour_only_when_asked_or_on_a_terminal() -> None:
    out, err = io.StringIO(), io.StringIO()
    ConsolePrinter(out, err, color=True).on_events(session())
    # reasoning dimmed: one escape sequence for the whole run, reset before the newline
    assert err.getvalue().startswith("\x1b[2m[thinking] hmm, let me see\x1b[0m\n")
    assert out.getvalue() == "Hello world\n"  # the answer itself is never decorated


def test_refusal_is_marked_and_on_stdout() -> None:
    out, err = io.StringIO(), io.StringIO()
    events: list[Event] = [
        Start(session="s", seq=0, t_ns=0, provider="openai", model="m"),
        Delta(session="s", seq=1, t_ns=5, text="I can't help with that.", channel="refusal"),
        Stop(session="s", seq=2, t_ns=9, reason="content_filter", raw_reason="content_filter"),
    ]
    ConsolePrinter(out, err).on_events(events)
    assert out.getvalue() == "[refusal] I can't help with that.\n"


def test_error_summary_names_the_reason() -> None:
    out, err = io.StringIO(), io.StringIO()
    events: list[Event] = [
        Start(session="s", seq=0, t_ns=0, provider="openai", model="m"),
        Delta(session="s", seq=1, t_ns=5, text="partial"),
        Stop(session="s", seq=2, t_ns=9, reason="error", error="stream ended before [DONE]"),
    ]
    ConsolePrinter(out, err).on_events(events)
    assert out.getvalue() == "partial\n"
    assert err.getvalue().startswith("[error · TTFT")


async def test_many_small_deltas_are_written_in_few_calls(autojump_clock: trio.abc.Clock) -> None:
    out, err = CountingWriter(), io.StringIO()
    async with open_bus() as bus:
        bus.subscribe(ConsolePrinter(out, err))
        await bus.publish([Start(session="s", seq=0, t_ns=0, provider="sim", model="m")])
        for i in range(1000):  # one token per read, 1 ms apart: a fast live stream
            await bus.publish([Delta(session="s", seq=i + 1, t_ns=i, text="x")])
            await trio.sleep(0.001)
        await bus.publish([Stop(session="s", seq=1001, t_ns=2000, reason="stop")])
    assert out.getvalue() == "x" * 1000 + "\n"
    assert out.writes <= 1000 * 0.001 / ConsolePrinter.flush_interval + 3


async def test_pending_text_is_flushed_while_the_stream_stalls(
    autojump_clock: trio.abc.Clock,
) -> None:
    out, err = io.StringIO(), io.StringIO()
    async with open_bus() as bus:
        bus.subscribe(ConsolePrinter(out, err))
        await bus.publish([Start(session="s", seq=0, t_ns=0, provider="sim", model="m")])
        await bus.publish([Delta(session="s", seq=1, t_ns=1, text="visible")])
        await trio.sleep(1)  # the provider stalls: the text must not wait for the next event
        assert out.getvalue() == "visible"
        await bus.publish([Stop(session="s", seq=2, t_ns=2, reason="stop")])


def test_jsonl_printer_writes_the_public_form_one_per_line() -> None:
    out = io.BytesIO()
    printer = JsonlPrinter(out)
    printer.on_events(session())
    lines = out.getvalue().decode().splitlines()
    assert [decode_event(line) for line in lines] == session()


def test_no_color_wins_over_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert ConsolePrinter(Terminal(), Terminal()).color_err
    monkeypatch.setenv("NO_COLOR", "1")
    assert not ConsolePrinter(Terminal(), Terminal()).color_err
