"""Long provider streams for the benchmarks, rendered by the simulator's own code, and a server.

The simulator's answers come from its corpus (140 tokens at most), so a 100,000-event stream
cannot be asked of ``streambus sim``. Instead the simulator's planner makes its usual plan for
a prompt, the plan's text is lengthened to ``n`` corpus tokens, and the simulator's
``stream_steps`` render it: the exact bytes ``streambus sim --tps 0`` would send for such an
answer (OpenAI chunks with ids, obfuscation and ``usage``; Anthropic's event sequence), one
content event per token.

``python -m bench._canned --events N`` serves both on loopback (``/v1/chat/completions`` and
``/v1/messages``) with :func:`streambus.simulator.serve_canned`, in its own process so its CPU
does not count against the client's, and prints ``URL http://127.0.0.1:PORT`` on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree, not an install

import msgspec

from streambus.simulator import anthropic_api, openai_api
from streambus.simulator.config import SimulatorConfig
from streambus.simulator.corpus import CORPUS, tokenize
from streambus.simulator.plan import make_plan, request_key

PROMPT = "Tell me how token streaming works, in great detail."
MODEL = "sim-1"
PIECE = 16 * 1024  # the server sends the body in chunked pieces of this size


def _tokens(n: int) -> tuple[str, ...]:
    """``n`` tokens of corpus text, cycling through the English entries."""
    pool = [token for entry in CORPUS["en"] for token in tokenize(entry.text)]
    return tuple(itertools.islice(itertools.cycle(pool), n))


def openai_body(n: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": n,
    }


def anthropic_body(n: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": n,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
    }


def render_openai(n: int) -> bytes:
    """An OpenAI Chat Completions stream with ``n`` one-token content chunks."""
    return _render(openai_api, openai_body(n), n)


def render_anthropic(n: int) -> bytes:
    """An Anthropic Messages stream with ``n`` one-token text deltas."""
    return _render(anthropic_api, anthropic_body(n), n)


def _render(api: Any, body: dict[str, Any], n: int) -> bytes:
    """What the simulator's ``api`` streams for ``body``, its text replaced by ``n`` tokens."""
    config = SimulatorConfig()
    request = api.parse_request(body)
    plan = make_plan(request.conversation, config, request_key(body, config.seed))
    plan = msgspec.structs.replace(plan, text=_tokens(n))
    steps, _ = api.stream_steps(plan, request, config)
    return b"".join(step.data for step in steps)


def main() -> None:
    import trio

    from streambus.simulator import Canned, serve_canned

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, required=True)
    args = parser.parse_args()
    routes = {
        "/v1/chat/completions": Canned(render_openai(args.events), chunk_size=PIECE),
        "/v1/messages": Canned(render_anthropic(args.events), chunk_size=PIECE),
    }

    async def serve() -> None:
        async with serve_canned(routes) as server:
            print(f"URL {server.url}", flush=True)
            await trio.sleep_forever()

    trio.run(serve)  # until terminated


if __name__ == "__main__":
    main()
