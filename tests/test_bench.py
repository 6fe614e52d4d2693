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
