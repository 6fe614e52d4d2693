"""The ``streambus`` command: parse arguments, call the library, choose the exit code.

This file sits at the top of the repository because the library package never imports click.
The wheel ships it as ``streambus/_cli.py`` (see ``pyproject.toml`` and docs/architecture.md),
so installing streambus puts no bare ``cli`` module into site-packages.

Exit codes: 0 the stream ended normally; 1 the stream failed (after printing what arrived) or a
subscriber failed; 2 bad usage or configuration; 130 after Ctrl-C; 143 after SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import trio

import streambus
from streambus.simulator import SimulatorConfig, parse_fault

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"streambus: error: {message}", err=True)
    sys.exit(code)


def _db_path(db: str | None) -> Path:
    """``--db``, else ``STREAMBUS_DB``, else the user's app directory (as ``llm`` does)."""
    if db:
        return Path(db)
    env = os.environ.get("STREAMBUS_DB")
    if env:
        return Path(env)
    return Path(click.get_app_dir("streambus")) / "streambus.db"


_DB_OPTION = click.option(
    "--db",
    "db",
    metavar="PATH",
    help="Recordings database (else STREAMBUS_DB, else the app directory: `streambus db path`).",
)


def _open_db(db: str | None) -> Any:
    path = _db_path(db)
    try:
        return streambus.open_db(path)
    except sqlite3.Error as exc:
        _fail(f"cannot open {path}: {exc}", 1)


def _setup_logging() -> None:
    """Library warnings (retries, failed subscribers) become one plain line on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("streambus: %(message)s"))
    log = logging.getLogger("streambus")
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(streambus.__version__, prog_name="streambus")
def cli() -> None:
    """Stream LLM responses as one typed event bus (OpenAI, Anthropic, built-in simulator).

    With no API key configured, `streambus run` uses the built-in simulator.
    """


@cli.command()
@click.argument("prompt", required=False)
@click.option(
    "-p",
    "--provider",
    type=click.Choice(["auto", *streambus.providers.PROVIDERS]),
    default="auto",
    show_default=True,
    envvar="STREAMBUS_PROVIDER",
    help="auto: openai if OPENAI_API_KEY is set, else anthropic if ANTHROPIC_API_KEY, else sim.",
)
@click.option("-m", "--model", help="Model name (default depends on the provider).")
@click.option("--base-url", help="Provider base URL (else OPENAI_BASE_URL / ANTHROPIC_BASE_URL).")
@click.option("--api-key", help="API key (else OPENAI_API_KEY / ANTHROPIC_API_KEY).")
@click.option("-s", "--system", help="System prompt.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Maximum tokens to generate.")
@click.option("--temperature", type=click.FloatRange(0, 2), help="Sampling temperature.")
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["text", "jsonl"]),
    default="text",
    show_default=True,
    help="text for people; jsonl prints every event in its public JSON form, one per line.",
)
@click.option("--no-record", is_flag=True, help="Do not record this session.")
@_DB_OPTION
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Extra attempts on connection errors and 408/409/429/5xx/529 before any content.",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), help="Total budget, in seconds."
)
@click.option("--sim-seed", type=int, default=0, show_default=True, help="Simulator: seed.")
@click.option("--sim-ttft", type=float, help="Simulator: seconds to the first token.")
@click.option("--sim-tps", type=float, help="Simulator: tokens per second (0 = no delay).")
@click.option(
    "--sim-fault",
    metavar="KIND[:N]",
    help="Simulator: inject a fault: http_error:STATUS, or disconnect:N, stall:N, "
    "malformed_json:N, error_event:N (after N content events), or no_done.",
)
def run(
    prompt: str | None,
    provider: str,
    model: str | None,
    base_url: str | None,
    api_key: str | None,
    system: str | None,
    max_tokens: int | None,
    temperature: float | None,
    fmt: str,
    no_record: bool,
    db: str | None,
    retries: int,
    timeout: float | None,
    sim_seed: int,
    sim_ttft: float | None,
    sim_tps: float | None,
    sim_fault: str | None,
) -> None:
    """Stream a response to PROMPT (or to standard input) and print it as it arrives.

    \b
      streambus run "안녕하세요, 스트리밍이 뭐예요?"
      echo "Why stream?" | streambus run --format jsonl | jq .
      streambus run -p openai -m gpt-4o-mini "Hello"
    """
    _setup_logging()
    prompt = _read_prompt(prompt)
    try:
        config = streambus.resolve_provider(
            provider, model=model, base_url=base_url, api_key=api_key
        )
        fault = parse_fault(sim_fault) if sim_fault else None
    except (streambus.ConfigError, ValueError) as exc:
        _fail(str(exc))
    sim_config: SimulatorConfig | None = None
    if config.name == "sim":
        overrides: dict[str, Any] = {"seed": sim_seed, "fault": fault}
        if sim_ttft is not None:
            overrides["ttft"] = sim_ttft
        if sim_tps is not None:
            overrides["tokens_per_second"] = sim_tps
        sim_config = SimulatorConfig(**overrides)
        if provider == "auto":
            click.echo(
                "streambus: using the built-in simulator "
                "(no OPENAI_API_KEY or ANTHROPIC_API_KEY set; see --provider)",
                err=True,
            )
    elif sim_fault or sim_ttft is not None or sim_tps is not None:
        _fail("--sim-* options only apply to --provider sim")
    request = streambus.Request.from_prompt(
        prompt, system=system, max_tokens=max_tokens, temperature=temperature
    )
    printer: Any = streambus.JsonlPrinter() if fmt == "jsonl" else streambus.ConsolePrinter()
    subscribers = [printer]
    if not no_record:
        subscribers.append(streambus.Recorder(_open_db(db)))
    code = trio.run(_run, config, request, subscribers, timeout, retries, sim_config)
    sys.exit(code)


def _read_prompt(prompt: str | None) -> str:
    """The argument, standard input, or both (``cat notes.txt | streambus run "Summarize"``)."""
    piped = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if prompt and piped:
        return f"{prompt}\n\n{piped}"
    text = prompt or piped
    if not text or not text.strip():
        _fail("no prompt: give one as an argument or on standard input")
    return text


async def _run(
    config: streambus.ProviderConfig,
    request: streambus.Request,
    subscribers: list[Any],
    timeout: float | None,
    retries: int,
    sim_config: SimulatorConfig | None,
) -> int:
    """Stream under a signal watcher: the first Ctrl-C/SIGTERM cancels, a second one exits."""
    received: list[int] = []
    session = streambus.new_session_id()
    message: streambus.Message | None = None
    failures: list[streambus.SubscriberFailure] = []
    with trio.open_signal_receiver(*_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            work = trio.CancelScope()

            async def watch() -> None:
                async for signum in signals:
                    if received:  # a second signal while shutting down: leave now
                        os._exit(128 + received[0])
                    received.append(signum)
                    work.cancel()

            nursery.start_soon(watch)
            with work:
                async with streambus.open_bus() as bus:
                    failures = bus.failures
                    for subscriber in subscribers:
                        bus.subscribe(subscriber, name=type(subscriber).__name__)
                    message = await streambus.stream(
                        bus,
                        request,
                        provider=config,
                        timeout=timeout,
                        retries=retries,
                        simulator=sim_config,
                        session=session,
                    )
            nursery.cancel_scope.cancel()
    recorded = (
        "recorded"
        if any(isinstance(s, streambus.Recorder) for s in subscribers)
        else "not recorded"
    )
    click.echo(f"streambus: session {session} ({recorded})", err=True)
    for failure in failures:
        click.echo(f"streambus: error: {failure}", err=True)
    if received:
        return 128 + received[0]
    assert message is not None and message.stop is not None
    if message.stop.reason == "error":
        click.echo(f"streambus: error: {message.stop.error}", err=True)
        return 1
    return 1 if failures else 0


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=8765, show_default=True, help="0 picks a free port.")
@click.option("--seed", type=int, default=0, show_default=True, help="Decides answers and ids.")
@click.option("--ttft", type=float, default=0.25, show_default=True, help="Seconds to 1st token.")
@click.option("--tps", type=float, default=60.0, show_default=True, help="Tokens/s (0: no delay).")
@click.option("--jitter", type=click.FloatRange(0, 1), default=0.2, show_default=True)
@click.option("--chunk-tokens", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--model", default="sim-1", show_default=True, help="Model listed by /v1/models.")
@click.option("--reasoning", is_flag=True, help="Stream reasoning (thinking) before the answer.")
@click.option(
    "--fault",
    metavar="KIND[:N]",
    help="Inject a fault into every response (see streambus run --sim-fault).",
)
@click.option("--retry-after", type=float, help="With --fault http_error: a retry-after header.")
@click.option("--stall-seconds", type=float, default=3600, show_default=True, help="For stall.")
def sim(
    host: str,
    port: int,
    seed: int,
    ttft: float,
    tps: float,
    jitter: float,
    chunk_tokens: int,
    model: str,
    reasoning: bool,
    fault: str | None,
    retry_after: float | None,
    stall_seconds: float,
) -> None:
    """Serve the simulator so any OpenAI or Anthropic client can stream from it.

    \b
      streambus sim --port 8765 &
      OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=x python my_app.py
    """
    from streambus.simulator import serve

    try:
        injected = parse_fault(fault) if fault else None
        if injected is not None:
            injected.retry_after = retry_after
            injected.stall_seconds = stall_seconds
        config = SimulatorConfig(
            seed=seed,
            ttft=ttft,
            tokens_per_second=tps,
            jitter=jitter,
            chunk_tokens=chunk_tokens,
            model=model,
            include_reasoning=reasoning,
            fault=injected,
        )
    except ValueError as exc:
        _fail(str(exc))

    async def main() -> int:
        with trio.open_signal_receiver(*_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:
                simulator = await nursery.start(serve, config, host, port)
                click.echo(
                    f"streambus simulator listening\n"
                    f"  OpenAI base URL:    {simulator.base_url}\n"
                    f"  Anthropic base URL: {simulator.anthropic_base_url}\n"
                    "Ctrl-C to stop.",
                    err=True,
                )
                async for signum in signals:
                    nursery.cancel_scope.cancel()
                    return 128 + signum
        return 0  # pragma: no cover - the signal loop only ends by returning

    code, error = 1, None
    try:
        code = trio.run(main)
    except* OSError as group:  # binding failed, wrapped by the simulator's nurseries
        error = _first_leaf(group)
    if error is not None:
        _fail(f"cannot listen on {host}:{port}: {error.strerror or error}", 1)
    sys.exit(code)


def _first_leaf(group: BaseExceptionGroup[OSError]) -> OSError:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


@cli.group()
def db() -> None:
    """The recordings database."""


@db.command("path")
@_DB_OPTION
def db_path(db: str | None) -> None:
    """Print where recordings are stored (--db, else STREAMBUS_DB, else the app directory)."""
    click.echo(_db_path(db))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="streambus")


if __name__ == "__main__":
    main()
