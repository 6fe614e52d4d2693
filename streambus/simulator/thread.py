"""The simulator in a background thread, for synchronous clients.

A sync ``openai.OpenAI`` or ``anthropic.Anthropic`` client blocks its thread, so the server
needs its own: this runs ``trio.run`` in a daemon thread and stops it from outside through
the run's ``TrioToken``. It is the only thread streambus starts.
"""

from __future__ import annotations

import contextlib
import threading
from types import TracebackType
from typing import Any

import trio

from .config import SimulatorConfig
from .server import Simulator, open_simulator

__all__ = ["SimulatorThread", "start_in_thread"]

_START_TIMEOUT = 10.0


class SimulatorThread:
    """A simulator running in its own thread; use as a context manager or ``start``/``stop``.

    The address properties mirror ``Simulator``'s and are valid once started.
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._config = config
        self._host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._simulator: Simulator | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._error: BaseException | None = None

    @property
    def simulator(self) -> Simulator:
        if self._simulator is None:
            raise RuntimeError("the simulator thread is not running")
        return self._simulator

    @property
    def port(self) -> int:
        return self.simulator.port

    @property
    def base_url(self) -> str:
        return self.simulator.base_url

    @property
    def anthropic_base_url(self) -> str:
        return self.simulator.anthropic_base_url

    @property
    def requests(self) -> list[Any]:
        return self.simulator.requests

    def start(self) -> Simulator:
        """Start the thread and wait until the server listens."""
        if self._thread is not None:
            raise RuntimeError("a SimulatorThread can be started only once")
        self._thread = threading.Thread(target=self._run, name="streambus-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("the simulator thread did not start in time")
        if self._error is not None:
            raise RuntimeError("the simulator thread failed to start") from self._error
        return self.simulator

    def stop(self) -> None:
        """Cancel the server and wait for the thread to end. Safe to call twice."""
        token, scope, thread = self._token, self._scope, self._thread
        if token is not None and scope is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)
        if thread is not None:
            thread.join()
        if self._error is not None:
            raise RuntimeError("the simulator thread failed") from self._error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            self._token = trio.lowlevel.current_trio_token()
            async with open_simulator(self._config, host=self._host, port=self._port) as sim:
                self._simulator = sim
                self._ready.set()
                await trio.sleep_forever()

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_in_thread(
    config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> SimulatorThread:
    """A ``SimulatorThread`` to use in a ``with`` block: it starts on entry, stops on exit."""
    return SimulatorThread(config, host=host, port=port)
