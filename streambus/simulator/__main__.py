"""``python -m streambus.simulator``: serve the simulator until Ctrl-C.

argparse, not click: the library never imports click.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import trio

from .config import FAULT_KINDS, Fault, SimulatorConfig
from .server import Simulator, serve

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m streambus.simulator",
        description="Serve simulated OpenAI and Anthropic streaming APIs on a local port.",
    )
    defaults = SimulatorConfig()
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="port, 0 for any (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--ttft", type=float, default=defaults.ttft, help="seconds to first token")
    parser.add_argument(
        "--tps",
        type=float,
        default=defaults.tokens_per_second,
        help="tokens per second, 0 = no delay",
    )
    parser.add_argument("--jitter", type=float, default=defaults.jitter)
    parser.add_argument("--chunk-tokens", type=int, default=defaults.chunk_tokens)
    parser.add_argument("--model", default=defaults.model, help="model listed by /v1/models")
    parser.add_argument("--reasoning", action="store_true", help="stream reasoning/thinking first")
    fault = parser.add_argument_group("fault injection (every request)")
    fault.add_argument("--fault", choices=FAULT_KINDS, help="failure to inject")
    fault.add_argument("--fault-status", type=int, default=500, help="HTTP status for http_error")
    fault.add_argument("--retry-after", type=float, help="retry-after header for http_error")
    fault.add_argument("--fault-message", default="simulated failure")
    fault.add_argument("--after-events", type=int, default=0, help="content events before it")
    fault.add_argument("--stall-seconds", type=float, default=3600.0)
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    fault = None
    if args.fault:
        fault = Fault(
            kind=args.fault,
            status=args.fault_status,
            retry_after=args.retry_after,
            message=args.fault_message,
            after_events=args.after_events,
            stall_seconds=args.stall_seconds,
        )
    return SimulatorConfig(
        seed=args.seed,
        ttft=args.ttft,
        tokens_per_second=args.tps,
        jitter=args.jitter,
        chunk_tokens=args.chunk_tokens,
        model=args.model,
        fault=fault,
        include_reasoning=args.reasoning,
    )


async def _run(config: SimulatorConfig, host: str, port: int) -> None:
    """Serve until SIGINT (Ctrl-C) or SIGTERM, then shut down cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            simulator: Simulator = await nursery.start(serve, config, host, port)
            print(f"streambus simulator listening on {simulator.url}", flush=True)
            print(f"  OpenAI:    OPENAI_BASE_URL={simulator.base_url}", flush=True)
            print(f"  Anthropic: ANTHROPIC_BASE_URL={simulator.anthropic_base_url}", flush=True)
            print("  any API key is accepted. Press Ctrl-C to stop.", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failure: BaseException | None = None
    try:
        trio.run(_run, config, args.host, args.port)
    except* OSError as group:  # `return` is not allowed inside except*
        failure = _first_leaf(group)
    if failure is not None:
        print(f"error: cannot listen on {args.host}:{args.port}: {failure}", file=sys.stderr)
        return 1
    print("stopped", file=sys.stderr)
    return 0


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


if __name__ == "__main__":
    sys.exit(main())
