"""Run the benchmarks: ``python -m bench [--quick] [--only NAME …] [--json PATH]``.

Each module named in ``SUITES`` has ``run(quick: bool) -> list[Result]``. ``--quick`` is the
seconds-long smoke version the test suite runs so the benchmarks never rot; the full run is
what docs/performance.md reports.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree, not an install

from bench.common import Result, machine, table

SUITES: list[str] = ["parse", "e2e", "concurrency", "recorder", "replay", "stats"]
"""Module names under bench/, in the order they run."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--only", nargs="*", choices=SUITES, help="run only these suites")
    parser.add_argument("--json", type=Path, help="also write the results here, as JSON")
    args = parser.parse_args(argv)
    results: list[Result] = []
    started = time.perf_counter()
    for name in args.only or SUITES:
        module = importlib.import_module(f"bench.{name}")
        print(f"running {name}…", file=sys.stderr, flush=True)
        results += module.run(args.quick)
    print(table(results))
    print(f"\n({time.perf_counter() - started:.0f} s; {machine()})", file=sys.stderr)
    if args.json:
        payload = {"machine": machine(), "results": [r.as_dict() for r in results]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
