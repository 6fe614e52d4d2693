"""MessageBuilder: what "the text" and "the tool calls" of a stream are, however it is batched."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from streambus import Delta, Event, MessageBuilder, ToolDelta, assemble

S = "s" * 24

# (kind, which, piece): kind 0 a delta on channel `which`, 1 a tool fragment of call `which`
pieces = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 2), st.text(max_size=6)), max_size=400
)


def events_of(items: list[tuple[int, int, str]]) -> list[Event]:
    channels = ("text", "reasoning", "refusal")
    out: list[Event] = []
    for seq, (kind, which, piece) in enumerate(items):
        if kind == 0:
            out.append(Delta(session=S, seq=seq, t_ns=seq, text=piece, channel=channels[which]))
        else:
            out.append(ToolDelta(session=S, seq=seq, t_ns=seq, index=which, arguments=piece))
    return out


@given(pieces, st.lists(st.integers(1, 150), max_size=20))
def test_pieces_join_in_order_however_batched_and_read_midway(
    items: list[tuple[int, int, str]], cuts: list[int]
) -> None:
    """Hundreds of pieces (more than one joined run), fed in batches of any size with the
    message read between batches, give exactly the naive concatenation per channel and call."""
    events = events_of(items)
    builder = MessageBuilder()
    start = 0
    for size in cuts:
        builder.add(events[start : start + size])
        start += size
        midway = builder.message
        assert midway.text == assemble(events[:start]).text
    builder.add(events[start:])
    message = builder.message
    for which, attr in enumerate(("text", "reasoning", "refusal")):
        expected = "".join(p for k, w, p in items if k == 0 and w == which)
        assert getattr(message, attr) == expected
    calls = {c.index: c.arguments for c in message.tool_calls}
    for which in {w for k, w, _ in items if k == 1}:
        assert calls[which] == "".join(p for k, w, p in items if k == 1 and w == which)


def test_line_endings_and_wide_characters_are_kept_as_sent() -> None:
    texts = ["a\r\n", "b\r", "c\n", "é", "😀", "\x00", "z"]
    events = [Delta(session=S, seq=i, t_ns=i, text=t) for i, t in enumerate(texts)]
    assert assemble(events).text == "".join(texts)


def test_a_long_text_does_not_keep_a_string_per_token() -> None:
    """One string object per token is ~60 bytes for ~5 characters; 10,000 tokens assembled
    must hold about the text's own size once the events are gone, not the tokens'."""
    builder = MessageBuilder()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        builder.add([Delta(session=S, seq=i, t_ns=i, text=f"t{i:04d}") for i in range(10_000)])
        held = tracemalloc.get_traced_memory()[0] - before  # the events are freed by now
    finally:
        tracemalloc.stop()
    # the text is 50,000 characters; the tokens as a list of strings would hold ~640 KB
    assert held < 200_000, held
    assert builder.message.text == "".join(f"t{i:04d}" for i in range(10_000))
