"""The ``streambus`` command: parse arguments, call the library, choose the exit code.

This file sits at the top of the repository because the library package never imports click.
The wheel ships it as ``streambus/_cli.py`` (see ``pyproject.toml`` and docs/architecture.md),
so installing streambus puts no bare ``cli`` module into site-packages.

Exit codes: 0 the stream ended normally; 1 the stream failed (after printing what arrived) or a
subscriber failed; 2 bad usage or configuration; 130 after Ctrl-C; 143 after SIGTERM; 141
when whoever read stdout went away (``| head``), as for a process ended by SIGPIPE.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import msgspec
import trio

import streambus
import streambus.conversation
import streambus.db
import streambus.plot
import streambus.providers
import streambus.stats
import streambus.tools
from streambus import exchange
from streambus.simulator import SimulatorConfig, parse_fault

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_F = TypeVar("_F", bound=Callable[..., Any])
_SHUTDOWN_GRACE = 10.0
"""Seconds from the first signal to the end of the run: publishing the cancelled stop, the
subscribers draining, the recording committed. Past it (an async tool that ignores
cancellation, a database locked by another writer) the process exits anyway, as after a
second Ctrl-C. Twice the bus's grace, which bounds each of the publish and the drain."""


def _timeout_option(flag: str, budget: str, help: str) -> Callable[[_F], _F]:
    """A timeout flag in seconds, defaulting to the library's (0 on the command line: none)."""
    value: float | None = getattr(streambus.Timeouts(), budget)
    return click.option(
        flag,
        type=float,
        metavar="SECONDS",
        default=0 if value is None else value,
        show_default=True,
        help=help,
    )


def _format_option(choices: tuple[str, ...], help: str) -> Callable[[_F], _F]:
    """``-f/--format``, as every command spells it: the first choice is the default."""
    return click.option(
        "-f",
        "--format",
        "fmt",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help=help,
    )


def _budget(name: str, seconds: float) -> float | None:
    if not (seconds >= 0 and math.isfinite(seconds)):
        _fail(f"{name} must be a number of seconds, or 0 for no limit")
    return seconds or None


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


class _OneLine(logging.Formatter):
    """No tracebacks on the terminal: the message already says what failed."""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_info = None
        record.exc_text = None
        return super().format(record)


def _setup_logging() -> None:
    """Library warnings (retries, failed subscribers) become one plain line on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine("streambus: %(message)s"))
    log = logging.getLogger("streambus")
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    log.propagate = False


class _Commands(click.Group):
    """The ``streambus`` group: a Ctrl-C that no command listens for exits 130, quietly.

    A command listens for signals only while it streams or replays (``_drive``). Before that
    (importing a ``--tools`` file, opening the database) or just after, Python raises
    KeyboardInterrupt, which click would turn into "Aborted!" and exit code 1.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            sys.exit(128 + signal.SIGINT)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option(
    "-m",
    "--model",
    help="Model name (default: "
    + ", ".join(f"{m} for {p}" for p, m in streambus.providers.DEFAULT_MODELS.items())
    + ").",
)
@click.option("--base-url", help="Provider base URL (else OPENAI_BASE_URL / ANTHROPIC_BASE_URL).")
@click.option("--api-key", help="API key (else OPENAI_API_KEY / ANTHROPIC_API_KEY).")
@click.option("-s", "--system", help="System prompt.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Maximum tokens to generate.")
@click.option("--temperature", type=click.FloatRange(0, 2), help="Sampling temperature.")
@_format_option(
    ("text", "jsonl"),
    "text for people; jsonl prints every event in its public JSON form, one per line.",
)
@click.option(
    "--tool",
    "tool_specs",
    metavar="MODULE:FUNCTION",
    multiple=True,
    help="Offer this function as a tool (repeatable); calls run and the answer follows.",
)
@click.option(
    "--tools",
    "tool_files",
    metavar="FILE.py",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Offer every public function defined in this file as a tool (repeatable).",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=streambus.conversation.DEFAULT_MAX_STEPS,
    show_default=True,
    help="With tools: at most this many turns (requests) in the conversation.",
)
@click.option("--no-record", is_flag=True, help="Do not record this session.")
@_DB_OPTION
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Extra attempts on connection errors, 408/409/429/5xx/529 and overload, "
    "only before any content.",
)
@_timeout_option(
    "--timeout",
    "total",
    "Total budget of the run, every attempt included, in seconds (0: no limit).",
)
@_timeout_option("--connect-timeout", "connect", "Seconds to open the connection.")
@_timeout_option(
    "--first-token-timeout",
    "first_token",
    "Seconds from the request to the first content (reasoning models think long).",
)
@_timeout_option(
    "--idle-timeout", "idle", "Seconds without a single byte (keep-alives count as bytes)."
)
@_timeout_option(
    "--stall-timeout",
    "stall",
    "Seconds without content once it began; pings and keep-alives do not count.",
)
@click.option("--sim-seed", type=int, default=0, show_default=True, help="Simulator: seed.")
@click.option("--sim-ttft", type=float, help="Simulator: seconds to the first token.")
@click.option("--sim-tps", type=float, help="Simulator: tokens per second (0 = no delay).")
@click.option(
    "--sim-fault",
    metavar="FAULT",
    help="Simulator: inject a fault, written KIND[:N][@PHASE][xTIMES], e.g. http_error:529x2 "
    "(the first 2 attempts get 529), disconnect:5 (after 5 content events), stall@headers, "
    "ping_stall@arguments, cut_chunk@terminator. Kinds and phases: docs/simulator.md.",
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
    tool_specs: tuple[str, ...],
    tool_files: tuple[str, ...],
    max_steps: int,
    no_record: bool,
    db: str | None,
    retries: int,
    timeout: float,
    connect_timeout: float,
    first_token_timeout: float,
    idle_timeout: float,
    stall_timeout: float,
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
      streambus run --tools docs/examples/weather.py "서울 날씨는?"
    """
    _setup_logging()
    prompt = _read_prompt(prompt)
    tools = _load_tools(tool_specs, tool_files)
    timeouts = streambus.Timeouts(  # 0 on the command line: no limit
        connect=_budget("--connect-timeout", connect_timeout),
        first_token=_budget("--first-token-timeout", first_token_timeout),
        idle=_budget("--idle-timeout", idle_timeout),
        stall=_budget("--stall-timeout", stall_timeout),
        total=_budget("--timeout", timeout),
    )
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
    options = {"timeouts": timeouts, "retries": retries, "simulator": sim_config}
    code = trio.run(_run, config, request, subscribers, options, tools, max_steps)
    sys.exit(code)


def _load_tools(specs: tuple[str, ...], files: tuple[str, ...]) -> Any:
    """The registry for --tool/--tools, or None; a bad tool is a usage error (exit 2)."""
    if not specs and not files:
        return None
    if specs and "" not in sys.path:  # module:function names a module here, as python -m would
        sys.path.insert(0, "")
    try:
        return streambus.tools.load_tools([*files, *specs])
    except (ImportError, TypeError, ValueError) as exc:
        _fail(f"cannot load tools: {exc}")


def _read_prompt(prompt: str | None) -> str:
    """The argument; or standard input when there is none (or it is ``-``).

    Standard input is never read beside an argument: ``while read q; do streambus run "$q";
    done < questions.txt`` must not swallow the rest of the file, nor an inherited pipe hang.
    """
    text = prompt
    if prompt is None or prompt == "-":
        text = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    if not text or not text.strip():
        _fail("no prompt: give one as an argument or on standard input")
    return text


async def _run(
    config: streambus.ProviderConfig,
    request: streambus.Request,
    subscribers: list[Any],
    options: dict[str, Any],
    tools: Any,
    max_steps: int,
) -> int:
    """Stream one request (or, with tools, a conversation) to the subscribers; the exit code."""
    sessions: list[str] = []
    exhausted = False

    async def produce(bus: streambus.Bus) -> streambus.Message:
        nonlocal exhausted
        if tools is None:
            return await streambus.stream(bus, request, provider=config, **options)
        conversation = await streambus.conversation.converse(
            bus, request, tools, provider=config, max_steps=max_steps, **options
        )
        exhausted = conversation.exhausted
        return conversation.final

    def note_start(event: streambus.Event) -> None:
        if isinstance(event, streambus.Start):
            sessions.append(event.session)

    message, failures, signum = await _drive([*subscribers, note_start], produce)
    recorders = [s for s in subscribers if isinstance(s, streambus.Recorder)]
    unwritten = sum(r.pending for r in recorders)
    recorded = "recorded" if recorders else "not recorded"
    if unwritten:
        recorded = f"recording incomplete: {_plural(unwritten, 'event')} not written"
    if not sessions:
        which = "no session started"
    elif len(sessions) == 1:
        which = f"session {sessions[0]}"
    else:
        which = f"sessions {', '.join(sessions)}"
    click.echo(f"streambus: {which} ({recorded})", err=True)
    if unwritten and signum is None:
        why = "; ".join(dict.fromkeys(r.last_error or "unknown error" for r in recorders))
        click.echo(f"streambus: error: the recording could not be written: {why}", err=True)
    if exhausted and signum is None:
        click.echo(
            f"streambus: error: stopped after {_plural(max_steps, 'turn')} while the model still "
            "asked for tools (see --max-steps)",
            err=True,
        )
        return 1
    code = _exit_code(message, failures, signum)
    return code or (1 if unwritten else 0)


async def _drive(
    subscribers: list[Any], produce: Callable[[streambus.Bus], Awaitable[streambus.Message]]
) -> tuple[streambus.Message | None, list[streambus.SubscriberFailure], int | None]:
    """Publish a session to ``subscribers`` under a signal watcher (run and replay share it).

    The first Ctrl-C/SIGTERM cancels ``produce`` (which then publishes a cancelled ``stop``);
    a second one exits at once, and so does a shutdown still going after ``_SHUTDOWN_GRACE``
    (``os._exit``: a recording write cut short is rolled back by SQLite, never half done).
    Returns the message, failed subscribers and the signal.
    """
    received: list[int] = []
    message: streambus.Message | None = None
    failures: list[streambus.SubscriberFailure] = []
    with trio.open_signal_receiver(*_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            work = trio.CancelScope()

            def stop(signum: int) -> None:
                if not received:
                    received.append(signum)
                    nursery.start_soon(give_up_after_grace)
                work.cancel()

            async def give_up_after_grace() -> None:
                await trio.sleep(_SHUTDOWN_GRACE)
                click.echo(
                    f"streambus: still stopping after {_SHUTDOWN_GRACE:g} s; quitting now", err=True
                )
                os._exit(128 + received[0])

            async def watch() -> None:
                async for signum in signals:
                    if received:  # a second signal while shutting down: leave now
                        os._exit(128 + received[0])
                    stop(signum)

            nursery.start_soon(watch)

            def reader_left() -> None:  # like `yes | head`: end quietly, as if by SIGPIPE
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())  # nothing more to say on stdout, ever
                os.close(devnull)
                stop(signal.SIGPIPE)

            with work:
                async with streambus.open_bus() as bus:
                    failures = bus.failures
                    for subscriber in subscribers:
                        name = getattr(subscriber, "__name__", type(subscriber).__name__)
                        if isinstance(
                            subscriber, streambus.ConsolePrinter | streambus.JsonlPrinter
                        ):
                            subscriber = _PipeGuard(subscriber, reader_left)
                        bus.subscribe(subscriber, name=name)
                    message = await produce(bus)
            nursery.cancel_scope.cancel()
    return message, failures, (received[0] if received else None)


class _PipeGuard:
    """A printer whose stdout reader may go away (``streambus run … | head -1``)."""

    def __init__(self, printer: Any, on_closed: Callable[[], None]) -> None:
        self.printer = printer
        self.on_closed = on_closed
        self.flush_interval = printer.flush_interval
        self.closed = False

    def on_events(self, batch: Any) -> None:
        if not self.closed:
            self._guard(self.printer.on_events, batch)

    def flush(self) -> None:
        if not self.closed:
            self._guard(self.printer.flush)

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except BrokenPipeError:
            self.closed = True
            self.on_closed()


def _exit_code(
    message: streambus.Message | None,
    failures: list[streambus.SubscriberFailure],
    signum: int | None,
) -> int:
    """128 + the signal; 1 for a failed stream or subscriber (said on stderr); else 0."""
    for failure in failures:
        click.echo(f"streambus: error: {failure}", err=True)
    if signum is not None:
        return 128 + signum
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
    metavar="FAULT",
    help="Inject a fault: KIND[:N][@PHASE][xTIMES] (see run --sim-fault).",
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


# -- recordings: sessions, show, replay, export, import --------------------------------------


def _open_existing_db(db: str | None) -> Any:
    """Reading commands never create a database: a mistyped --db should not look empty."""
    path = _db_path(db)
    if not path.exists():
        _fail(f"no recordings database at {path}: nothing was recorded there", 1)
    return _open_db(str(path))


def _find(database: Any, ref: str) -> str:
    try:
        return streambus.db.find_session(database, ref)
    except LookupError as exc:
        _fail(str(exc), 1)


def _local_time(started_at: str | None) -> str:
    if not started_at:
        return "-"
    try:
        moment = datetime.datetime.fromisoformat(started_at)
    except ValueError:
        return started_at
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _seconds(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e9:.2f} s"


def _status(row: dict[str, Any]) -> str:
    """``ok``, or ``ok (length)`` when it stopped for a reason worth seeing."""
    status, reason = row.get("status") or "-", row.get("stop_reason")
    return f"{status} ({reason})" if reason and reason not in ("stop", status) else status


def _tokens(row: dict[str, Any]) -> str:
    if row.get("input_tokens") is None and row.get("output_tokens") is None:
        return "-"
    return "/".join(
        "?" if row.get(k) is None else str(row[k]) for k in ("input_tokens", "output_tokens")
    )


def _with_request(row: dict[str, Any]) -> dict[str, Any]:
    """A sessions row for JSON output: the stored request text becomes the object it is."""
    request = row.get("request")
    return row | {"request": json.loads(request)} if isinstance(request, str) else row


def _json_out(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2))


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--since`` as a datetime, or the one-line error every command gives for it."""
    try:
        return streambus.db.parse_since(value) if value is not None else None
    except ValueError as exc:
        _fail(f"--since: {exc}")


def _session_filters(command: Callable[..., Any]) -> Callable[..., Any]:
    """The filters that `sessions` and `stats` share (each adds its own --status)."""
    for option in reversed(
        [
            click.option("--provider", help="Only this provider (sim, openai, anthropic, …)."),
            click.option("-m", "--model", help="Only this model."),
            click.option(
                "--since",
                metavar="WHEN",
                callback=_since,
                help="Only sessions started since: 2h, 3d, 2026-03-01, ….",
            ),
        ]
    ):
        command = option(command)
    return command


@cli.command()
@_session_filters
@click.option("--status", type=click.Choice(streambus.db.STATUSES), help="Only this status.")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="At most this many (0: all).",
)
@_format_option(("table", "json"), "table for people; json prints the full rows.")
@_DB_OPTION
def sessions(
    provider: str | None,
    model: str | None,
    status: str | None,
    since: datetime.datetime | None,
    limit: int,
    fmt: str,
    db: str | None,
) -> None:
    """List recorded sessions, newest first.

    \b
      streambus sessions --since 2h --status error
      streambus sessions --format json | jq '.[] | .ttft_ns'
    """
    rows = streambus.db.list_sessions(
        _open_existing_db(db),
        provider=provider,
        model=model,
        status=status,
        since=since,
        limit=limit or None,
    )
    if fmt == "json":
        _json_out([_with_request(row) for row in rows])
        return
    if not rows:
        click.echo("streambus: no sessions match", err=True)
        return
    header = ("id", "started", "provider", "model", "status", "tokens", "ttft", "duration")
    table = [header] + [
        (
            row["id"][:16],
            _local_time(row.get("started_at")),
            row.get("provider") or "-",
            row.get("model") or "-",
            _status(row),
            _tokens(row),
            _seconds(row.get("ttft_ns")),
            _seconds(row.get("e2e_ns")),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    numeric = {5, 6, 7}
    for line in table:
        cells = [
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())


@cli.command()
@click.argument("ref", metavar="ID")
@click.option(
    "--events", "with_events", is_flag=True, help="Also list the events, one JSON object per line."
)
@_format_option(("text", "json"), "text for people; json for scripts.")
@_DB_OPTION
def show(ref: str, with_events: bool, fmt: str, db: str | None) -> None:
    """Show one recorded session: the request, the answer, how it ended, its timing.

    ID is a session id, a unique prefix of one, or `latest`.

    \b
      streambus show latest
      streambus show 01a2b3 --events
    """
    database = _open_existing_db(db)
    session_id = _find(database, ref)
    row = database["sessions"].get(session_id)
    events = list(streambus.db.read_events(database, session_id))
    message = streambus.assemble(events)
    if fmt == "json":
        document: dict[str, Any] = {
            "session": _with_request(row),
            "message": {
                "text": message.text,
                "reasoning": message.reasoning,
                "refusal": message.refusal,
                "tool_calls": [dataclasses.asdict(call) for call in message.tool_calls],
                "usage": msgspec.to_builtins(message.usage),
                "stop": msgspec.to_builtins(message.stop),
            },
        }
        if with_events:
            document["events"] = [msgspec.to_builtins(event) for event in events]
        _json_out(document)
        return
    for line in _describe_session(row, message):
        click.echo(line)
    if with_events:
        click.echo("\nevents:")
        for event in events:
            click.echo(streambus.encode_event(event).decode())


def _describe_session(row: dict[str, Any], message: streambus.Message) -> list[str]:
    """The text form of ``streambus show``."""
    lines = [
        f"session   {row['id']}",
        f"started   {_local_time(row.get('started_at'))}",
        "provider  " + " · ".join(str(row[k]) for k in ("provider", "model", "host") if row.get(k)),
    ]
    if message.conversation:
        lines.append(f"turn      {message.turn} of conversation {message.conversation}")
    stop = message.stop
    if stop is None:
        lines.append("status    incomplete: the recording ends without a stop")
    else:
        raw = f" ({stop.raw_reason})" if stop.raw_reason and stop.raw_reason != stop.reason else ""
        reason = "" if stop.reason == row.get("status") else f" · {stop.reason}{raw}"
        lines.append(f"status    {row.get('status')}{reason}")
        if stop.error:
            lines.append(f"error     {stop.error}")
    request = json.loads(row["request"]) if row.get("request") else {}
    lines += _describe_request(request)
    timing = [f"TTFT {_seconds(row.get('ttft_ns'))}", f"duration {_seconds(row.get('e2e_ns'))}"]
    if row.get("input_tokens") is not None or row.get("output_tokens") is not None:
        timing.append(f"{_tokens(row).replace('/', ' in / ')} out tokens")
    if row.get("tokens_per_s") is not None:
        timing.append(f"{row['tokens_per_s']:.1f} tok/s")
    if row.get("itl_p50_ns") is not None:
        timing.append(
            f"ITL p50 {row['itl_p50_ns'] / 1e6:.1f} ms, p99 {row['itl_p99_ns'] / 1e6:.1f} ms"
        )
    lines.append("timing    " + " · ".join(timing))
    for result in message.tool_results:  # what the previous turn's calls returned
        failed = f" · {result.error}" if result.error else ""
        lines += [
            "",
            f"[tool result {result.index}] {result.name or '?'} ({result.id or 'no id'}) · "
            f"ran {result.duration_ns / 1e6:.1f} ms{failed}",
            result.content,
        ]
    if message.reasoning:
        lines += ["", "[reasoning]", message.reasoning]
    if message.text:
        lines += ["", "[answer]", message.text]
    if message.refusal:
        lines += ["", "[refusal]", message.refusal]
    for call in message.tool_calls:
        lines += ["", f"[tool call {call.index}] {call.name or '?'} ({call.id or 'no id'})"]
        lines.append(call.arguments)
    return lines


def _describe_request(request: dict[str, Any]) -> list[str]:
    """The request in a few lines: model, each message's role and start, the tools offered."""
    if not request:
        return ["request   (not recorded)"]
    messages = request.get("messages") or []
    lines = [f"request   {request.get('model', '?')} · {len(messages)} message(s)"]
    if request.get("system"):  # Anthropic keeps the system prompt outside the messages
        lines.append(f"  system: {_clip(request['system'])}")
    for message in messages[:5]:
        content = message.get("content") or message.get("tool_calls")  # a call has no text
        lines.append(f"  {message.get('role', '?')}: {_clip(content)}")
    if len(messages) > 5:
        lines.append(f"  … {len(messages) - 5} more")
    names = [(t.get("function") or t).get("name", "?") for t in request.get("tools") or []]
    if names:
        lines.append(f"  tools: {', '.join(names)}")
    return lines


def _clip(content: Any, width: int = 72) -> str:
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@cli.command()
@click.argument("ref", metavar="ID")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Time runs this many times faster (0.5: slower).",
)
@click.option("--instant", is_flag=True, help="No pacing: everything at once.")
@_format_option(("text", "jsonl"), "As for run: text for people, jsonl for the events.")
@_DB_OPTION
def replay(ref: str, speed: float, instant: bool, fmt: str, db: str | None) -> None:
    """Replay a recorded session with its original pacing, printed as `run` prints.

    ID is a session id, a unique prefix of one, or `latest`. Replays are not recorded.

    \b
      streambus replay latest
      streambus replay 01a2b3 --speed 4 --format jsonl
    """
    _setup_logging()
    if not math.isfinite(speed):
        _fail("--speed must be a finite number")
    source = click.get_current_context().get_parameter_source("speed")
    if instant and source == click.core.ParameterSource.COMMANDLINE:
        _fail("--speed and --instant exclude each other")
    database = _open_existing_db(db)
    session_id = _find(database, ref)
    replayer = streambus.Replayer(database, session_id, speed=None if instant else speed)
    printer: Any = streambus.JsonlPrinter() if fmt == "jsonl" else streambus.ConsolePrinter()
    message, failures, signum = trio.run(_drive, [printer], replayer.run)
    click.echo(f"streambus: replayed session {session_id}", err=True)
    sys.exit(_exit_code(message, failures, signum))


@cli.command()
@click.argument("refs", metavar="[ID]...", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every session in the database.")
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    default="-",
    help="Write here instead of standard output.",
)
@_format_option(("jsonl",), "One event per line, in its public JSON form.")
@_DB_OPTION
def export(refs: tuple[str, ...], everything: bool, output: str, fmt: str, db: str | None) -> None:
    """Export sessions as JSON lines, for `streambus import` or any other tool.

    ID is a session id, a unique prefix of one, or `latest`.

    \b
      streambus export latest -o session.jsonl
      streambus export --all | gzip > recordings.jsonl.gz
    """
    if everything == bool(refs):
        _fail("give session IDs or --all (not both)")
    database = _open_existing_db(db)
    ids = None if everything else list(dict.fromkeys(_find(database, ref) for ref in refs))
    try:
        with click.open_file(output, "wb", atomic=output != "-") as out:
            count, events = exchange.export_sessions(database, out, ids)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}", 1)
    where = "" if output == "-" else f" to {output}"
    click.echo(
        f"streambus: exported {_plural(count, 'session')} ({events} events){where}", err=True
    )


@cli.command("import")
@click.argument("sources", metavar="FILE...", nargs=-1, required=True)
@_DB_OPTION
def import_(sources: tuple[str, ...], db: str | None) -> None:
    """Import sessions from JSON lines exports (`-` reads standard input).

    Each file is all or nothing: one bad line imports nothing from it. Sessions already in the
    database are skipped, so importing a file twice is harmless.

    \b
      streambus import recordings/*.jsonl
      ssh host streambus export --all | streambus import -
    """
    database = _open_db(db)
    for source in sources:
        name = "standard input" if source == "-" else source
        try:
            with click.open_file(source, "rb") as lines:
                result = exchange.import_sessions(database, lines)
        except OSError as exc:
            _fail(f"cannot read {name}: {exc.strerror or exc}", 1)
        except ValueError as exc:
            _fail(f"{name}: {exc}; nothing imported from it", 1)
        except sqlite3.Error as exc:
            _fail(f"cannot import {name} into {_db_path(db)}: {exc}; nothing imported from it", 1)
        click.echo(
            f"streambus: imported {_plural(len(result.imported), 'session')} "
            f"({result.imported_events} events) from {name}",
            err=True,
        )
        if result.skipped:
            shown = ", ".join(result.skipped[:3]) + (", …" if len(result.skipped) > 3 else "")
            click.echo(
                f"streambus: skipped {_plural(len(result.skipped), 'session')} "
                f"({result.skipped_events} events) already in the database: {shown}",
                err=True,
            )


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# -- latency: stats, plot --------------------------------------------------------------------


def _resolve(database: Any, refs: tuple[str, ...]) -> tuple[str, ...]:
    """Full session ids for ids, prefixes and ``latest``, each once, in the order given."""
    return tuple(dict.fromkeys(_find(database, ref) for ref in refs))


@cli.command()
@click.argument("refs", metavar="[ID]...", nargs=-1)
@_session_filters
@click.option(
    "--status",
    type=click.Choice([*streambus.db.STATUSES, "all"]),
    help="Only this status. Default: ok (as benchmark tools count), or all when IDs are given.",
)
@click.option(
    "--by",
    type=click.Choice(streambus.stats.BY),
    help="One block per provider or model; session: each session's own figures.",
)
@click.option(
    "--stall-ms",
    type=click.FloatRange(min=0),
    default=1000,
    show_default=True,
    help="A gap between content events longer than this is a stall.",
)
@_format_option(
    ("table", "json", "csv"),
    "table for people; json and csv for scripts (times in ms).",
)
@_DB_OPTION
def stats(
    refs: tuple[str, ...],
    provider: str | None,
    model: str | None,
    status: str | None,
    since: datetime.datetime | None,
    by: str | None,
    stall_ms: float,
    fmt: str,
    db: str | None,
) -> None:
    """Latency statistics of recorded sessions: TTFT, ITL, TPOT, tokens/s, stalls.

    Mean, p50, p90, p99 and max over the selected sessions (percentiles interpolate linearly,
    as numpy's do); ITL pools every gap of every session, as vLLM does. ID is a session id, a
    unique prefix of one, or `latest`. Definitions and the benchmark tools' names for each
    figure: docs/latency.md.

    \b
      streambus stats --by model
      streambus stats --since 1d --provider openai --format json | jq '.[0].ttft_ms.p90'
      streambus stats latest --by session
    """
    database = _open_existing_db(db)
    if status is None:
        status = "all" if refs else "ok"
    selection = streambus.stats.Selection(
        ids=_resolve(database, refs),
        provider=provider,
        model=model,
        status=None if status == "all" else status,
        since=since,
    )
    results: Any
    if by == "session":
        results = streambus.stats.per_session(database, selection, stall_ms=stall_ms)
    else:
        results = streambus.stats.aggregate(database, selection, by=by, stall_ms=stall_ms)
    if not results:
        hint = " (status ok by default: --status all counts failed ones too)" if not refs else ""
        _fail(f"no recorded sessions match{hint}", 1)
    click.echo(streambus.stats.render(results, fmt))


@cli.command()
@click.argument("refs", metavar="[ID]...", nargs=-1)
@click.option(
    "-o", "--output", metavar="FILE", required=True, help="The figure to write: .png or .svg."
)
@_DB_OPTION
def plot(refs: tuple[str, ...], output: str, db: str | None) -> None:
    """Plot token arrival over time and the ITL distribution of recorded sessions.

    One line per session (default: the latest) on the left, a histogram of the gaps between
    content events on the right. Needs matplotlib: pip install 'streambus[plot]'.

    \b
      streambus plot -o latest.png
      streambus plot 019ab2c4f1e0 019ab2c4f2a7 -o compare.svg
    """
    if Path(output).suffix.lower() not in streambus.plot.FORMATS:
        _fail(f"--output {output}: the figure is written as FILE.png or FILE.svg")
    database = _open_existing_db(db)
    ids = _resolve(database, refs or ("latest",))
    traces = streambus.plot.load(database, ids)
    if not any(t.arrivals_s for t in traces):
        _fail(f"nothing to plot: no content arrived in {_plural(len(ids), 'session')}", 1)
    try:
        streambus.plot.draw(traces, output)
    except ImportError as exc:
        _fail(str(exc), 1)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}", 1)
    click.echo(f"streambus: wrote {output} ({_plural(len(ids), 'session')})", err=True)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="streambus")


if __name__ == "__main__":
    main()
