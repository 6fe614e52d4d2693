"""Conformance and chunking tests for the sans-I/O SSE decoder (``streambus.sse``)."""

from __future__ import annotations

import codecs
import itertools

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streambus.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from streambus.sse import ServerSentEvent, SSEDecoder

BOM = codecs.BOM_UTF8
KOREAN = "안녕하세요, 세계! 스트림 테스트"


def decode(*chunks: bytes, **options: object) -> list[ServerSentEvent]:
    """Feed the chunks to a new decoder, close it, return every event."""
    decoder = SSEDecoder(**options)  # type: ignore[arg-type]
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def datas(*chunks: bytes) -> list[str]:
    return [event.data for event in decode(*chunks)]


def outcome(chunks: list[bytes], **options: object) -> tuple[list[ServerSentEvent], str | None]:
    """Events up to the first RemoteProtocolError, and its message (None if there was none)."""
    decoder = SSEDecoder(**options)  # type: ignore[arg-type]
    events: list[ServerSentEvent] = []
    try:
        for chunk in chunks:
            events += decoder.feed(chunk)
        events += decoder.close()
    except RemoteProtocolError as exc:
        return events, str(exc)
    return events, None


def split_at(raw: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def one_byte_at_a_time(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1] for i in range(len(raw))]


# --- the event type --------------------------------------------------------------------------


def test_event_defaults_and_frozen() -> None:
    event = ServerSentEvent()
    assert (event.event, event.data, event.id, event.retry) == ("message", "", None, None)
    with pytest.raises(AttributeError):
        event.data = "x"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(event), type=ServerSentEvent) == event


def test_constructor_validates_options() -> None:
    with pytest.raises(ValueError):
        SSEDecoder(max_event_size=0)
    with pytest.raises(ValueError):
        SSEDecoder(errors="ignore")  # type: ignore[arg-type]


# --- line endings ----------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_each_line_ending(eol: bytes) -> None:
    raw = b"event: a" + eol + b"data: 1" + eol + b"data: 2" + eol + eol + b"data: 3" + eol + eol
    assert decode(raw) == [ServerSentEvent("a", "1\n2"), ServerSentEvent("message", "3")]


def test_mixed_line_endings() -> None:
    raw = b"data: a\rdata: b\ndata: c\r\n\r\ndata: d\n\rdata: e\r\n\n"
    assert datas(raw) == ["a\nb\nc", "d", "e"]


def test_crlf_split_across_feeds_is_one_line_ending() -> None:
    # Were the LF a second line ending, it would end the event after "a".
    assert datas(b"data: a\r", b"\ndata: b\r\n\r\n") == ["a\nb"]


def test_cr_at_end_of_feed_then_non_lf() -> None:
    assert datas(b"data: a\r", b"data: b\r", b"\r") == ["a\nb"]


def test_cr_state_survives_feeds_that_decode_to_nothing() -> None:
    # b"" and a lone lead byte decode to no text; the LF after them still pairs with the CR.
    assert datas(b"data: a\r", b"", b"\n", b"data: \xea", b"\xb0\x80\r\n\r\n") == ["a\n가"]
    assert datas(b"data: a\r", b"", b"\ndata: b\r\n\r\n") == ["a\nb"]


def test_only_cr_lf_and_crlf_end_lines() -> None:
    # U+2028, U+2029, NEL, VT, FF and FS would all split a line for str.splitlines().
    value = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg"
    assert datas(f"data: {value}\n\n".encode()) == [value]


# --- BOM -------------------------------------------------------------------------------------


def test_bom_at_start_is_dropped() -> None:
    assert datas(BOM + b"data: a\n\n") == ["a"]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_bom_split_across_feeds_is_dropped(cut: int) -> None:
    raw = BOM + b"data: a\n\n"
    assert datas(raw[:cut], raw[cut:]) == ["a"]
    assert datas(*one_byte_at_a_time(raw)) == ["a"]


def test_bom_only_at_the_start() -> None:
    # A later BOM is an ordinary character: here it makes "\ufeffdata" an unknown field.
    assert datas(b"data: a\n\n" + BOM + b"data: b\n\n") == ["a"]
    assert datas(BOM + BOM + b"data: a\n\n") == []
    assert datas(b"data: " + BOM + b"x\n\n") == ["\ufeffx"]
    assert datas(b"data: a\n\n", BOM + b"data: b\n\n") == ["a"]


# --- fields ----------------------------------------------------------------------------------


def test_comments_are_counted_and_ignored() -> None:
    decoder = SSEDecoder()
    raw = b": keep-alive\n:\n: OPENROUTER PROCESSING\ndata: a\n: in the middle\ndata: b\n\n"
    assert decoder.feed(raw) == [ServerSentEvent(data="a\nb")]
    assert decoder.comments == 4
    assert decoder.feed(b": ping\r\n") == []
    assert decoder.comments == 5


def test_only_one_leading_space_is_stripped() -> None:
    assert datas(b"data:  two\n\n") == [" two"]
    assert datas(b"data:x\n\n") == ["x"]
    assert datas(b"data:\tx\n\n") == ["\tx"]
    assert datas(b"data: x \n\n") == ["x "]
    assert decode(b"event:  e\ndata\n\n") == [ServerSentEvent(" e", "")]


def test_colon_in_value_is_kept() -> None:
    assert datas(b'data: {"a": "b:c"}\n\n') == ['{"a": "b:c"}']


def test_line_without_colon_is_a_field_with_empty_value() -> None:
    assert decode(b"data\n\n") == [ServerSentEvent(data="")]
    assert decode(b"event: x\nevent\ndata: a\n\n") == [ServerSentEvent("message", "a")]
    assert decode(b"id: 1\n\nid\ndata: a\n\n") == [ServerSentEvent(data="a", id="")]


def test_unknown_fields_are_ignored() -> None:
    assert datas(b"foo: bar\ndata: x\nbaz\n\n") == ["x"]
    # Field names are case-sensitive, and there is no trimming around them.
    assert datas(b"Data: x\n\ndata : x\n\n data: x\n\n") == []


def test_multi_line_data_joins_with_lf() -> None:
    assert datas(b"data: a\ndata:\ndata: b\n\n") == ["a\n\nb"]
    assert datas(b"data\ndata\n\n") == ["\n"]


def test_empty_data_dispatches_an_event() -> None:
    assert decode(b"data:\n\n") == [ServerSentEvent(data="")]
    assert decode(b"data: \n\n") == [ServerSentEvent(data="")]


def test_event_type() -> None:
    assert decode(b"event: delta\ndata: a\n\n") == [ServerSentEvent("delta", "a")]
    assert decode(b"event:\ndata: a\n\n") == [ServerSentEvent("message", "a")]


def test_event_without_data_is_not_dispatched_but_resets_the_type() -> None:
    assert decode(b"event: ping\n\n") == []
    assert decode(b"event: ping\n\ndata: a\n\n") == [ServerSentEvent("message", "a")]
    assert decode(b"event: ping\nretry: 5\n\ndata: a\n\n") == [ServerSentEvent(data="a")]


def test_blank_lines_alone_dispatch_nothing() -> None:
    assert decode(b"\n\n\r\n\r\r") == []


def test_id_persists_across_events() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n")
    assert [(e.data, e.id) for e in events] == [("a", "1"), ("b", "1"), ("c", "2")]
    assert decoder.last_event_id == "2"


def test_id_with_nul_is_ignored() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]
    assert decoder.last_event_id == "1"


def test_id_without_data_still_sets_last_event_id() -> None:
    decoder = SSEDecoder()
    assert decoder.last_event_id is None
    assert decoder.feed(b"id: 7\n\n") == []
    assert decoder.last_event_id == "7"
    assert decoder.feed(b"data: a\n\n") == [ServerSentEvent(data="a", id="7")]


def test_last_event_id_waits_for_the_blank_line() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n")
    assert decoder.last_event_id == "1"  # the event with id 2 was never dispatched
    decoder.close()
    assert decoder.last_event_id == "1"
    assert decoder.truncated


def test_empty_id_resets_to_empty_string() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\nid:\ndata: b\n\n")
    assert [e.id for e in events] == ["1", ""]
    assert decoder.last_event_id == ""


def test_retry_digits_only() -> None:
    decoder = SSEDecoder()
    assert decoder.retry is None
    assert decoder.feed(b"retry: 3000\ndata: a\n\n") == [ServerSentEvent(data="a", retry=3000)]
    assert decoder.retry == 3000
    for bad in ["3s", "-1", "+1", "1.5", "", " 1", "1 ", "３", "²", "1e3", "0x10"]:
        events = decoder.feed(f"retry: {bad}\ndata: b\n\n".encode())
        assert events == [ServerSentEvent(data="b")], bad
        assert decoder.retry == 3000, bad
    assert decoder.feed(b"retry: 007\ndata: c\n\n") == [ServerSentEvent(data="c", retry=7)]
    assert decoder.retry == 7


def test_retry_belongs_to_its_block_but_the_decoder_remembers_it() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: 10\n\ndata: a\n\nretry: 20\ndata: b\n\ndata: c\n\n")
    assert [e.retry for e in events] == [None, 20, None]
    assert decoder.retry == 20


def test_absurdly_long_retry_is_ignored() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: " + b"9" * 5000 + b"\ndata: a\n\n")
    assert events == [ServerSentEvent(data="a")]
    assert decoder.retry is None
    assert decoder.feed(b"retry: 0000000000000000000000001\n\n") == []
    assert decoder.retry == 1


def test_korean_text_split_at_every_byte_position() -> None:
    raw = f"event: delta\ndata: {KOREAN}\ndata: 끝\n\n".encode()
    expected = [ServerSentEvent("delta", f"{KOREAN}\n끝")]
    assert decode(raw) == expected
    for i in range(len(raw) + 1):
        assert decode(raw[:i], raw[i:]) == expected, i
    assert decode(*one_byte_at_a_time(raw)) == expected


def test_korean_text_split_at_every_pair_of_positions() -> None:
    raw = "data: 한글\r\n\r\n".encode()
    for i in range(len(raw) + 1):
        for j in range(i, len(raw) + 1):
            assert datas(raw[:i], raw[i:j], raw[j:]) == ["한글"], (i, j)


def test_astral_characters() -> None:
    assert datas("data: 😀🎉\n\n".encode()) == ["😀🎉"]


# --- end of input ----------------------------------------------------------------------------


def test_clean_end_is_not_truncated() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\n: bye\n") == [ServerSentEvent(data="a")]
    assert decoder.close() == []
    assert not decoder.truncated


def test_last_event_without_blank_line_is_discarded() -> None:
    for tail in [b"data: b", b"data: b\n", b"data: b\r", b"event: x\n", b"id: 2\n", b"foo\n"]:
        decoder = SSEDecoder()
        events = decoder.feed(b"data: a\n\n" + tail)
        assert events == [ServerSentEvent(data="a")], tail
        assert decoder.close() == [], tail
        assert decoder.truncated, tail


def test_partial_utf8_at_end_is_truncated() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\n\xea\xb0") == [ServerSentEvent(data="a")]
    assert decoder.close() == []
    assert decoder.truncated


def test_truncated_is_false_before_close_and_for_empty_input() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: a")
    assert not decoder.truncated
    empty = SSEDecoder()
    assert empty.close() == []
    assert not empty.truncated


def test_feed_after_close_is_a_local_error() -> None:
    decoder = SSEDecoder()
    decoder.close()
    with pytest.raises(LocalProtocolError):
        decoder.feed(b"data: a\n\n")
    assert decoder.close() == []  # closing twice is harmless


# --- limits ----------------------------------------------------------------------------------


def test_oversize_event_raises() -> None:
    decoder = SSEDecoder(max_event_size=100)
    with pytest.raises(RemoteProtocolError, match="SSE event exceeds the 100 bytes limit"):
        for _ in range(100):
            decoder.feed(b"data: 0123456789\n")


def test_default_limit_message_names_16_mib() -> None:
    limit = 16 * 1024 * 1024
    decoder = SSEDecoder()
    chunk = b"x" * 4096
    fed = 0
    with pytest.raises(RemoteProtocolError, match=r"^SSE event exceeds the 16 MiB limit$"):
        for _ in range(limit // len(chunk) + 2):  # an endless line: no newline ever comes
            fed += len(chunk)
            decoder.feed(chunk)
    assert fed - len(chunk) <= limit < fed  # raised by the first chunk past the limit


@pytest.mark.parametrize("step", [1, 7, 64, 10_000])
def test_endless_line_raises_once_past_the_limit(step: int) -> None:
    decoder = SSEDecoder(max_event_size=1000)
    fed = 0
    with pytest.raises(RemoteProtocolError, match="1000 bytes"):
        for _ in range(1000 // step + 2):
            fed += step
            decoder.feed(b"y" * step)
    assert fed - step <= 1000 < fed


def test_limit_counts_utf8_bytes() -> None:
    # 334 Korean characters are 1002 bytes: over a 1000-byte limit, though only 334 characters.
    assert outcome([b"data:" + "가".encode() * 331 + b"\n\n"], max_event_size=1000)[1] is None
    korean = "가".encode() * 334
    for chunks in ([korean], [b"\n" + korean], [b"\n", korean], one_byte_at_a_time(korean)):
        assert outcome(chunks, max_event_size=1000)[1] == "SSE event exceeds the 1000 bytes limit"


def test_limit_counts_the_real_size_of_non_ascii_data() -> None:
    # The data of an event counts in UTF-8 bytes: 3 per Korean character, not 1 and not 4.
    line = b"data:" + "가".encode() * 100  # 305 bytes
    assert outcome([line + b"\n" + line + b"\n" + line + b"\n\n"], max_event_size=906)[1] is None
    assert (
        outcome([line + b"\n" + line + b"\n" + line + b"\n\n"], max_event_size=905)[1] is not None
    )
    big = b"data:" + "가".encode() * 300  # 905 bytes, leaving 900 bytes of data
    assert outcome([big + b"\ndata:" + b"a" * 95 + b"\n\n"], max_event_size=1000)[1] is None
    assert outcome([big + b"\ndata:" + b"a" * 96 + b"\n\n"], max_event_size=1000)[1] is not None


def test_limit_boundary_is_exact() -> None:
    # The line "data:xxxxx" is 10 bytes; after it, 5 bytes of data count toward the next line.
    raw = b"data:xxxxx\n\n"
    for chunks in ([raw], one_byte_at_a_time(raw)):
        assert outcome(chunks, max_event_size=10) == ([ServerSentEvent(data="xxxxx")], None)
        assert outcome(chunks, max_event_size=9) == ([], "SSE event exceeds the 9 bytes limit")
    raw = b"data:xxxxx\ndata:y\n\n"  # the second line: 5 + 6 = 11 bytes
    assert outcome([raw], max_event_size=11)[1] is None
    assert outcome([raw], max_event_size=10)[1] is not None


def test_limit_resets_per_event() -> None:
    raw = b"data: 0123456789\n\n" * 50
    assert len(decode(raw, max_event_size=20)) == 50


def test_limit_message_units() -> None:
    for size, text in [(1024, "1 KiB"), (3 * 1024 * 1024, "3 MiB"), (1500, "1500 bytes")]:
        decoder = SSEDecoder(max_event_size=size)
        with pytest.raises(RemoteProtocolError, match=f"exceeds the {text} limit"):
            decoder.feed(b"x" * (size + 1))


# --- errors ----------------------------------------------------------------------------------


def test_invalid_utf8_strict_names_the_offset() -> None:
    with pytest.raises(
        RemoteProtocolError, match=r"^invalid UTF-8 in event stream at byte offset 6$"
    ):
        decode(b"data: \xff\n\n")
    assert outcome([BOM + b"data: ab\xff"]) == (
        [],
        "invalid UTF-8 in event stream at byte offset 11",
    )
    # A bad sequence that starts in one chunk and ends in another is reported where it starts.
    assert outcome([b"data: a\xea", b"\xb0A\n\n"])[1] == (
        "invalid UTF-8 in event stream at byte offset 7"
    )
    assert outcome(one_byte_at_a_time(b"data: a\xea\xb0A\n\n"))[1] == (
        "invalid UTF-8 in event stream at byte offset 7"
    )
    assert issubclass(RemoteProtocolError, ProtocolError)


def test_invalid_utf8_replace_follows_the_spec() -> None:
    raw = b"data: a\xffb\xea\xb0c\xed\xa0\x80\n\n"
    expected = ["a\ufffdb\ufffdc\ufffd\ufffd\ufffd"]
    assert [e.data for e in decode(raw, errors="replace")] == expected
    events = decode(*one_byte_at_a_time(raw), errors="replace")
    assert [e.data for e in events] == expected


def test_events_before_the_bad_byte_come_first_then_the_error() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: \xff\n\n") == [ServerSentEvent(data="a")]
    with pytest.raises(RemoteProtocolError, match="byte offset 15"):
        decoder.feed(b"data: b\n\n")


def test_decoder_stays_broken() -> None:
    decoder = SSEDecoder(max_event_size=10)
    with pytest.raises(RemoteProtocolError) as first:
        decoder.feed(b"data: 0123456789\n\n")
    for _ in range(3):
        with pytest.raises(RemoteProtocolError) as again:
            decoder.feed(b"data: ok\n\n")
        assert str(again.value) == str(first.value)
    with pytest.raises(RemoteProtocolError):
        decoder.close()
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"")


def test_decoder_stays_broken_after_bad_utf8() -> None:
    decoder = SSEDecoder()
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"\xc3\x28")
    with pytest.raises(RemoteProtocolError, match="byte offset 0"):
        decoder.feed(b"data: ok\n\n")


# --- properties ------------------------------------------------------------------------------


def reference(
    raw: bytes, errors: str = "strict", limit: int | None = None
) -> tuple[list[ServerSentEvent], dict[str, object]]:
    """The spec's algorithm, word for word, on the whole input at once, one character a step.

    With a ``limit``, the first line (finished or not) whose UTF-8 size plus that of its event's
    data so far exceeds it ends the run, and the state is just ``{"error": message}``.
    """
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
    text = raw.decode("utf-8", errors)
    lines: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\r" or char == "\n":
            lines.append(current)
            current = ""
            if char == "\r" and text[i + 1 : i + 2] == "\n":
                i += 1
        else:
            current += char
        i += 1
    events: list[ServerSentEvent] = []
    data_buffer, type_buffer, id_buffer = "", "", None
    block_retry: int | None = None
    last_event_id: str | None = None
    retry: int | None = None
    comments = 0
    in_block = False
    for n, line in enumerate([*lines, current]):
        if limit is not None and len(line.encode()) + len(data_buffer[:-1].encode()) > limit:
            return events, {"error": f"SSE event exceeds the {limit} bytes limit"}
        if n == len(lines):
            break  # the unterminated last line is never interpreted
        if line == "":
            last_event_id = id_buffer
            if data_buffer != "":
                if data_buffer.endswith("\n"):
                    data_buffer = data_buffer[:-1]
                event_type = type_buffer if type_buffer != "" else "message"
                events.append(ServerSentEvent(event_type, data_buffer, id_buffer, block_retry))
            data_buffer, type_buffer, block_retry, in_block = "", "", None, False
        elif line.startswith(":"):
            comments += 1
        else:
            in_block = True
            if ":" in line:
                field, value = line.split(":", 1)
                if value.startswith(" "):
                    value = value[1:]
            else:
                field, value = line, ""
            if field == "data":
                data_buffer += value + "\n"
            elif field == "event":
                type_buffer = value
            elif field == "id":
                if "\x00" not in value:
                    id_buffer = value
            elif field == "retry" and value != "" and all(c in "0123456789" for c in value):
                block_retry = retry = int(value)
    state: dict[str, object] = {
        "last_event_id": last_event_id,
        "retry": retry,
        "comments": comments,
        "truncated": current != "" or in_block,
    }
    return events, state


def run(chunks: list[bytes], **options: object) -> tuple[list[ServerSentEvent], dict[str, object]]:
    decoder = SSEDecoder(**options)  # type: ignore[arg-type]
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    events += decoder.close()
    state: dict[str, object] = {
        "last_event_id": decoder.last_event_id,
        "retry": decoder.retry,
        "comments": decoder.comments,
        "truncated": decoder.truncated,
    }
    return events, state


value_chars = st.one_of(
    st.sampled_from([*"ab :{}\"'0123456789", "가", "한", "😀", "é", "\x00", "\ufeff"]),
    st.sampled_from(["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\ufffd", "\t"]),
    st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]),
)
values = st.one_of(st.text(value_chars, max_size=12), st.from_regex(r"[0-9]{1,6}", fullmatch=True))
field_lines = st.builds(
    lambda name, sep, value: name + sep + value,
    st.sampled_from(["data"] * 4 + ["event"] * 2 + ["id", "retry", "foo", "", "Data", "\ufeff"]),
    st.sampled_from(["", ":", ": ", ":  "]),
    values,
)
comment_lines = st.builds(lambda text: ":" + text, st.text(value_chars, max_size=8))
# An event block: a few lines, mostly fields, then a blank line. Blocks end in a blank line so
# that most streams carry several events; stray blank lines and an unterminated tail are added.
blocks = st.lists(
    st.one_of(field_lines, field_lines, field_lines, comment_lines, st.just("")),
    min_size=1,
    max_size=5,
).map(lambda block: [*block, ""])
line_endings = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    text_lines = [line for block in draw(st.lists(blocks, max_size=6)) for line in block]
    body = "".join(line + draw(line_endings) for line in text_lines)
    tail = draw(st.one_of(st.just(""), field_lines, comment_lines))
    return (BOM if draw(st.booleans()) else b"") + (body + tail).encode()


@settings(max_examples=200, deadline=None)
@given(raw=streams(), data=st.data())
def test_any_split_gives_the_same_events_as_the_reference(raw: bytes, data: st.DataObject) -> None:
    expected = reference(raw)
    assert run([raw]) == expected
    assert run(one_byte_at_a_time(raw)) == expected
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=8), label="cuts")
    assert run(split_at(raw, cuts)) == expected


fields = [b"data: ", b"data:", b"data", b"id: ", b"id:", b"event: ", b"retry: ", b":", b"x:"]
good_tokens = [b"1", b"a", b"xyz", b" ", b":", b"\x00", BOM, "가".encode(), "😀".encode()]
good_tokens += [b"\xef\xbb", b"\xbf", "ü".encode()]
bad_tokens = [b"\xea", b"\xb0", b"\x80", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf0\x9f"]
bad_tokens += [b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe0\x80"]
good_lines = st.builds(
    bytes.__add__,
    st.sampled_from(fields),
    st.lists(st.sampled_from(good_tokens), max_size=3).map(b"".join),
)
bad_lines = st.builds(
    bytes.__add__,
    st.sampled_from([b"", *fields]),
    st.lists(st.sampled_from(good_tokens + bad_tokens), min_size=1, max_size=3).map(b"".join),
)
byte_endings = st.sampled_from([b"\n", b"\r", b"\r\n"])
# Event-stream shaped bytes, in blocks that end in a blank line; about one line in five may
# hold invalid UTF-8.
byte_blocks = st.lists(
    st.one_of(good_lines, good_lines, good_lines, good_lines, bad_lines), min_size=1, max_size=4
).map(lambda block: [*block, b""])


@st.composite
def byte_soup(draw: st.DrawFn) -> bytes:
    byte_lines = [line for block in draw(st.lists(byte_blocks, max_size=6)) for line in block]
    body = b"".join(line + draw(byte_endings) for line in byte_lines)
    return body + draw(st.one_of(st.just(b""), good_lines, bad_lines))


@settings(max_examples=200, deadline=None)
@given(raw=byte_soup(), data=st.data())
def test_replace_mode_matches_the_reference_for_any_bytes(raw: bytes, data: st.DataObject) -> None:
    expected = reference(raw, "replace")
    assert run([raw], errors="replace") == expected
    assert run(one_byte_at_a_time(raw), errors="replace") == expected
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=8), label="cuts")
    assert run(split_at(raw, cuts), errors="replace") == expected


@settings(max_examples=200, deadline=None)
@given(raw=streams(), limit=st.integers(1, 80), data=st.data())
def test_limit_matches_the_reference(raw: bytes, limit: int, data: st.DataObject) -> None:
    events, state = reference(raw, limit=limit)
    expected = (events, state.get("error"))
    assert outcome([raw], max_event_size=limit) == expected
    assert outcome(one_byte_at_a_time(raw), max_event_size=limit) == expected
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=8), label="cuts")
    assert outcome(split_at(raw, cuts), max_event_size=limit) == expected


@settings(max_examples=200, deadline=None)
@given(raw=st.one_of(byte_soup(), streams()), limit=st.integers(1, 80), data=st.data())
def test_errors_do_not_depend_on_the_split(raw: bytes, limit: int, data: st.DataObject) -> None:
    """The same events come out before the same error, however the bytes were cut."""
    expected = outcome([raw], max_event_size=limit)
    assert outcome(one_byte_at_a_time(raw), max_event_size=limit) == expected
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=8), label="cuts")
    assert outcome(split_at(raw, cuts), max_event_size=limit) == expected
