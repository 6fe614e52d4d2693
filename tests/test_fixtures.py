"""Every recorded provider stream, through our decoder and normalizer with no I/O, split
into network reads every way that matters: whole, per byte, and odd sizes. The result must
match the fixture's expectations exactly, whatever the split."""

from __future__ import annotations

import pytest

from streambus import Event, SSEDecoder, assemble
from streambus.normalizers import AnthropicNormalizer, Normalizer, OpenAINormalizer

from .cases import CASES, Case, assert_matches, our_view


def normalize(case: Case, chunk_size: int) -> list[Event]:
    cls: type[Normalizer] = OpenAINormalizer if case.provider == "openai" else AnthropicNormalizer
    normalizer = cls(session="s", provider=case.provider, model="m")
    decoder = SSEDecoder()
    events: list[Event] = [normalizer.start()]
    body = case.body
    for t, start in enumerate(range(0, len(body), chunk_size), start=1):
        events += normalizer.receive(decoder.feed(body[start : start + chunk_size]), t)
    decoder.close()
    events += normalizer.end_of_stream(10**9, mid_event=decoder.truncated)
    return events


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("chunk_size", [1 << 20, 1, 3, 64])
def test_fixture_normalizes_as_expected(case: Case, chunk_size: int) -> None:
    events = normalize(case, chunk_size)
    assert_matches(our_view(assemble(events), events), case.expected, skip=set())


def test_there_are_fixtures_for_both_providers() -> None:
    assert {c.provider for c in CASES} == {"openai", "anthropic"}
    assert len(CASES) >= 40
