"""The picture in docs/performance.md, drawn from a ``python -m bench --json`` file.

    python -m bench --json /tmp/bench.json
    python -m bench.figure /tmp/bench.json docs/performance.png

Left: µs per event to parse and normalize the same OpenAI text stream (4 KiB reads), every
contender, log scale. Right: CPU milliseconds per 1,000 events against concurrent streams,
streambus (everything recorded) and the official openai SDK (nothing recorded).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any


def main(source: Path, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = json.loads(source.read_text(encoding="utf-8"))
    results: list[dict[str, Any]] = report["results"]
    fig, (parse, concurrency) = plt.subplots(1, 2, figsize=(12, 4.8))

    rows = [r for r in results if r["group"].startswith("openai text, bulk")]
    names = [r["name"] for r in rows]
    values = [r["median"] for r in rows]
    colours = ["tab:blue" if n.startswith("ours") else "tab:gray" for n in names]
    parse.barh(names, values, color=colours)
    parse.set_xscale("log")
    parse.invert_yaxis()
    parse.set_xlabel("µs per event (log scale)")
    parse.set_title("Parse + normalize, OpenAI text, 4 KiB reads")
    for y, value in enumerate(values):
        parse.text(value * 1.1, y, f"{value:.1f}", va="center", fontsize=8)

    lines = {
        "streambus": ("tab:blue", "o-", "streambus (recorded)"),
        "openai-sdk": ("tab:gray", "o-", "openai SDK (not recorded)"),
        "vllm-client": ("tab:purple", "o-", "vLLM bench serve's client (not recorded)"),
        "httpx2-read": ("tab:orange", "s--", "floor: httpx2 read only"),
        "socket-read": ("tab:green", "s--", "floor: trio socket read only"),
    }
    for impl, (colour, style, label) in lines.items():
        points = []
        for r in results:
            match = re.fullmatch(rf"{impl} N=(\d+)", r["name"])
            if match:
                points.append((int(match[1]), r["median"], r["extra"].get("pass") == "yes"))
        points.sort()
        if not points:
            continue
        concurrency.plot(
            [p[0] for p in points], [p[1] for p in points], style, color=colour, label=label
        )
        failed = [p for p in points if not p[2]]
        concurrency.scatter(
            [p[0] for p in failed], [p[1] for p in failed], marker="x", color="tab:red", zorder=3
        )
    concurrency.set_xscale("log")
    concurrency.set_xlabel("concurrent streams at 50 events/s each (x: missed a target)")
    concurrency.set_ylabel("CPU ms per 1,000 events")
    concurrency.set_title("Concurrency on this machine")
    concurrency.set_ylim(bottom=0)
    concurrency.legend()
    machine = report["machine"]
    fig.suptitle(
        f"streambus {machine['versions']['streambus']} · CPython {machine['python']} · "
        f"{machine['cpus']} CPUs",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
