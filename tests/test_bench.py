"""The benchmarks' smoke run: every suite runs in seconds and reports sane figures.

Numbers are never asserted here (docs/performance.md holds them, measured on demand); this
only keeps ``python -m bench`` from rotting as the code changes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import concurrency
from bench.__main__ import SUITES

ROOT = Path(__file__).resolve().parent.parent


def test_every_suite_runs_quickly_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["machine"]["cpus"] >= 1
    groups = {r["group"] for r in report["results"]}
    assert len(groups) >= len(SUITES)  # every suite said something
    for r in report["results"]:
        assert all(math.isfinite(r[k]) and r[k] >= 0 for k in ("median", "low", "high")), r
        assert r["low"] <= r["median"] <= r["high"], r


@pytest.mark.parametrize(
    ("passed", "failed", "true_limit"),
    [(25, 50, 37), (25, 50, 25), (25, 50, 49), (125, 150, 140), (200, 300, 260), (0, 10, 0)],
)
def test_the_concurrency_limit_is_bisected_to_within_its_resolution(
    monkeypatch: pytest.MonkeyPatch, passed: int, failed: int, true_limit: int
) -> None:
    """Between two ladder levels the limit is found to within 10 % (or 5 streams)."""
    tried: list[int] = []

    def measured(impl: str, port: int, pid: int, n: int, runs: int, results: list) -> bool:
        tried.append(n)
        return n <= true_limit

    monkeypatch.setattr(concurrency, "_measured", measured)
    limit = concurrency._bisected("streambus", 0, 0, passed, failed, [])
    assert limit <= true_limit
    assert true_limit - limit <= max(5, concurrency.RESOLUTION * limit)
    assert all(passed < n < failed for n in tried) and len(tried) == len(set(tried))
    assert tried or passed == 0 or failed - passed <= 5


def _split_at(body: bytes, marker: bytes, offset: int) -> list[bytes]:
    """``body`` as two reads, cut ``offset`` bytes into the first ``marker``."""
    at = body.index(marker) + offset
    return [body[:at], body[at:]]


def test_the_benchmark_tools_loops_are_timed_as_they_behave() -> None:
    """The parse suite's stand-ins for vLLM ``bench serve`` and llmperf behave as those tools
    do on reads cut anywhere: vLLM's loop, which strips every read, loses a token's leading
    space at a cut before it and fails at a cut between ``data:`` and its space (as
    vllm-project/vllm#51172 reports), so the suite times it on live reads only; unstripped,
    and llmperf's, they get the text right."""
    from bench import parse
    from bench.payloads import payloads

    payload = payloads(60)[0]
    assert payload.name == "openai text"
    before_space = _split_at(payload.body, b'"content":" ', len(b'"content":"'))
    after_field = _split_at(payload.body, b"data: {", len(b"data:"))
    released = parse.vllm_bench_serve("openai")
    assert released(before_space).text == payload.text.replace(" ", "", 1)
    with pytest.raises(json.JSONDecodeError):
        released(after_field)
    for contender in (parse.vllm_bench_serve_fixed("openai"), parse.llmperf("openai")):
        for reads in (before_space, after_field):
            assert contender(reads).text == payload.text
