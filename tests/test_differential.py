"""Differential tests: the same bytes, served over real loopback HTTP, read by our provider
edge and by the official openai/anthropic SDKs. Text, reasoning, tool calls, finish reason and
usage must agree, except where a fixture documents (``sdk_differs``) that the SDK is wrong
or blind, e.g. it cannot see a stream cut before ``[DONE]``."""

from __future__ import annotations

from typing import Any

import pytest

from streambus import Event, ProviderConfig, open_bus, stream
from streambus.simulator import Canned, serve_canned

from .cases import CASES, Case, assert_matches, our_view
from .oracles import anthropic_oracle, openai_oracle


async def read_with_both(case: Case, chunk_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    path = "/v1/chat/completions" if case.provider == "openai" else "/v1/messages"
    async with serve_canned({path: Canned(case.body, chunk_size=chunk_size)}) as server:
        base = server.url + "/v1" if case.provider == "openai" else server.url
        config = ProviderConfig(
            case.provider,
            case.provider,
            base,
            "test-model",
            api_key="test-key",  # type: ignore[arg-type]
        )
        seen: list[Event] = []
        async with open_bus() as bus:
            bus.subscribe(seen.append)
            message = await stream(bus, "Hello", provider=config, retries=0)
        oracle = openai_oracle if case.provider == "openai" else anthropic_oracle
        sdk = await oracle(base)
    return our_view(message, seen), sdk


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_we_agree_with_the_official_sdk(case: Case) -> None:
    ours, sdk = await read_with_both(case, chunk_size=5)
    assert_matches(ours, case.expected, skip=set())
    differs = set(case.expected.get("sdk_differs", {}))
    # Error texts differ by design; whether there was one must not.
    if "error" not in differs:
        assert (ours["error"] is None) == (sdk["error"] is None), (ours["error"], sdk["error"])
    assert_matches(ours, {**sdk, "error": None}, skip=differs | {"error"})


async def test_the_sdk_comparison_can_fail() -> None:
    """Guard against a vacuous oracle: a different stream must disagree with the SDK."""
    text_case = next(c for c in CASES if c.id == "openai/text_basic")
    other = next(c for c in CASES if c.id == "openai/text_korean")
    ours, _ = await read_with_both(text_case, chunk_size=1 << 20)
    _, sdk = await read_with_both(other, chunk_size=1 << 20)
    with pytest.raises(AssertionError):
        assert_matches(ours, sdk, skip={"error"})
