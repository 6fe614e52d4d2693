"""Options and reports shared by the test suite."""

from __future__ import annotations

from typing import Any

import pytest

SOAK_REPORT = pytest.StashKey[list[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-sessions",
        type=int,
        default=300,
        help="How many concurrent sessions the soak test runs (CI: 300).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SOAK_REPORT] = []


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The soak test's figures (memory per wave, sessions by outcome), shown after the run."""
    lines = config.stash.get(SOAK_REPORT, [])
    if lines:
        terminalreporter.section("soak")
        for line in lines:
            terminalreporter.write_line(line)
