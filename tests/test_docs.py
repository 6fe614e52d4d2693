"""The docs stay true to the code: CLI help, the event JSON Schema, the runnable examples,
and the public API surface. ``python -m tests.test_docs`` rewrites the generated parts."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import msgspec
import pytest
from click.testing import CliRunner

import streambus
from cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HELP_BLOCK = re.compile(r"<!-- help:(?P<cmd>[^>]*?) -->\n.*?<!-- /help -->", re.S)


def render_help(command: str) -> str:
    args = [*command.split(), "--help"]
    result = CliRunner().invoke(cli, args, prog_name="streambus", terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def render_cli_docs(text: str) -> str:
    def block(match: re.Match[str]) -> str:
        cmd = match.group("cmd").strip()
        return f"<!-- help: {cmd} -->\n```\n{render_help(cmd)}```\n<!-- /help -->".replace(
            "<!-- help:  -->", "<!-- help: -->"
        )

    return HELP_BLOCK.sub(block, text)


def render_schema() -> str:
    schema = _clean_descriptions(msgspec.json.schema(streambus.Event))
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _clean_descriptions(node: Any) -> Any:
    """Docstrings as ``inspect.cleandoc`` leaves them, which msgspec 0.23 does itself and
    0.22 did not: the committed schema must not depend on the version installed."""
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v)
            if k == "description" and isinstance(v, str)
            else _clean_descriptions(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(v) for v in node]
    return node


def command_names(group: click.Group = cli, prefix: str = "") -> list[str]:
    """Every command and group below ``group``, as typed after ``streambus``."""
    names = [prefix]
    for name, command in sorted(group.commands.items()):
        full = f"{prefix} {name}".strip()
        if isinstance(command, click.Group):
            names += command_names(command, full)
        else:
            names.append(full)
    return names


def test_cli_docs_match_the_help() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    documented = sorted(m.strip() for m in HELP_BLOCK.findall(text))
    assert documented == sorted(command_names()), "every command needs a help block in cli.md"
    assert text == render_cli_docs(text), "docs/cli.md is stale: run python -m tests.test_docs"


def test_event_schema_doc_matches_the_types() -> None:
    schema = (DOCS / "events.schema.json").read_text(encoding="utf-8")
    assert schema == render_schema(), "docs/events.schema.json is stale: python -m tests.test_docs"


def run_example(example: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("example", sorted((DOCS / "examples").glob("*.py")), ids=lambda p: p.name)
def test_examples_run(example: Path) -> None:
    assert run_example(example).stdout.strip()


def test_the_stop_button_example_keeps_the_partial_answer() -> None:
    *answer, last = run_example(DOCS / "examples" / "stop_button.py").stdout.splitlines()
    match = re.fullmatch(r"\[cancelled\] kept (\d+) deltas, (\d+) characters", last)
    assert match, last
    assert int(match[1]) >= 20  # clicked after 20 text deltas, mid-answer
    assert len("\n".join(answer)) == int(match[2]) > 0  # what was shown is what was kept


def test_public_api_is_exactly_all() -> None:
    public = {name for name in dir(streambus) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(streambus, name)).__name__ == "module"}
    assert public - modules == set(streambus.__all__) - {"__version__"}
    for name in streambus.__all__:
        assert getattr(streambus, name) is not None


def test_the_library_never_imports_click() -> None:
    for module in (ROOT / "streambus").rglob("*.py"):
        source = module.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from) click\b", source, re.M), module
    # Importing the library loads no CLI framework (sqlite-utils, which does, loads lazily).
    code = "import sys, streambus, streambus.simulator; print('click' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "False", result.stderr


if __name__ == "__main__":
    path = DOCS / "cli.md"
    path.write_text(render_cli_docs(path.read_text(encoding="utf-8")), encoding="utf-8")
    (DOCS / "events.schema.json").write_text(render_schema(), encoding="utf-8")
    print("docs/cli.md and docs/events.schema.json regenerated")


def test_cli_log_lines_never_carry_a_traceback() -> None:
    import logging

    from cli import _OneLine

    try:
        raise RuntimeError("handler bug")
    except RuntimeError:
        record = logging.LogRecord(
            "streambus", logging.ERROR, __file__, 1, "subscriber 'x' failed", (), sys.exc_info()
        )
    assert _OneLine("streambus: %(message)s").format(record) == ("streambus: subscriber 'x' failed")
