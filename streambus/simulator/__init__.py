"""A built-in provider simulator: OpenAI and Anthropic streaming over real loopback HTTP.

Use ``open_simulator`` inside trio, ``start_in_thread`` for synchronous clients, or
``streambus sim`` (the CLI) to serve standalone. ``serve_canned`` replays recorded
bytes exactly, for tests.
"""

from __future__ import annotations

from ._http import (
    Canned,
    CannedServer,
    Disconnect,
    HTTPRequest,
    HTTPResponse,
    canned_handler,
    serve_canned,
    serve_http,
)
from .config import (
    FAULT_KINDS,
    FAULT_PHASES,
    Fault,
    FaultKind,
    FaultPhase,
    SimulatorConfig,
    parse_fault,
)
from .server import Simulator, open_simulator, serve
from .thread import SimulatorThread, start_in_thread

__all__ = [
    "FAULT_KINDS",
    "FAULT_PHASES",
    "Canned",
    "CannedServer",
    "Disconnect",
    "Fault",
    "FaultKind",
    "FaultPhase",
    "HTTPRequest",
    "HTTPResponse",
    "Simulator",
    "SimulatorConfig",
    "SimulatorThread",
    "canned_handler",
    "open_simulator",
    "parse_fault",
    "serve",
    "serve_canned",
    "serve_http",
    "start_in_thread",
]
