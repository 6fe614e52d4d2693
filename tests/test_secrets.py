"""Secrets never surface: the real CLI, run with a distinctive fake key every way a key can
travel, then every artifact of those runs searched for it.

A key travels as ``--api-key``, as ``OPENAI_API_KEY``/``ANTHROPIC_API_KEY``, as the password
(or the whole user part) of the base URL, and as a credential-looking query parameter of the
base URL. It comes back in a provider's error body, in an error event mid-stream, in a server's
echo of the URL, and in retry lines. The artifacts are the run's stdout and stderr, every file
it left (the database with its ``-wal``/``-shm``, anything under ``HOME``), and the output of
every command that reads recordings: ``sessions``, ``show``, ``replay``, ``export``, ``stats``,
``plot``, in each of their formats.

Each run is a separate process with one route for the key, so redacting one route never hides
a leak through another. Everything runs against simulators on 127.0.0.1 in this process.

Last, everything that listens (the simulator in all its forms, the canned server) must bind to
127.0.0.1 unless told otherwise. Unit tests of the redaction itself: tests/test_providers.py.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from cli import cli as streambus_cli
from streambus.simulator import (
    Fault,
    HTTPRequest,
    HTTPResponse,
    Simulator,
    SimulatorConfig,
    SimulatorThread,
    open_simulator,
    serve,
    serve_canned,
    serve_http,
    start_in_thread,
)
from tests.test_cli import clean_env, find_command, read_base_url

KEY_HEX = secrets.token_hex(16)
KEY = f"sk-streambus-TESTKEY-{KEY_HEX}"
NEEDLES = (
    KEY,
    "TESTKEY",  # its distinctive middle
    # and any 10 of its random characters in a row: a partial mask is no mask
    *(KEY_HEX[i : i + 10] for i in range(len(KEY_HEX) - 9)),
)

FAST = {"ttft": 0.0, "tokens_per_second": 0.0}
ECHOES = {
    # as api.openai.com answers a wrong key, but with the whole key
    "401": Fault(kind="http_error", status=401, message=f"Incorrect API key provided: {KEY}."),
    # retryable, with a partly masked key
    "503": Fault(
        kind="http_error",
        status=503,
        retry_after=0,
        message=f"Overloaded for key {KEY[:26]}****{KEY[-4:]}",
    ),
    # after some text: an error event with the key, and apart its middle without the prefix
    "error_event": Fault(
        kind="error_event", after_events=2, message=f"key {KEY} was revoked (ref {KEY[10:]})"
    ),
}


def leak(text: str | bytes) -> str | None:
    """The first needle found in ``text``, with a little context; None when clean."""
    data = text.encode() if isinstance(text, str) else text
    for needle in NEEDLES:
        at = data.find(needle.encode())
        if at >= 0:
            context = data[max(0, at - 40) : at + len(needle) + 40].decode("utf-8", "replace")
            return f"{needle!r} in …{context}…"
    return None


def assert_no_key(artifacts: dict[str, str | bytes]) -> None:
    """Fails naming every artifact that shows the key or a piece of it."""
    assert artifacts, "no artifacts collected"
    found = {name: where for name, value in artifacts.items() if (where := leak(value))}
    assert not found, f"the key leaked into {len(found)} artifact(s): " + "; ".join(
        f"[{name}] {where}" for name, where in found.items()
    )


def test_the_needles_find_a_partly_masked_key() -> None:
    """The check itself: the forms a key leaks in are found, unrelated text is not."""
    assert leak(f"Bearer {KEY}")
    assert leak(f"key=…{KEY[24:36]}…")  # a piece of its random part
    assert leak(f"{KEY[:22]}****{KEY[-4:]}")  # its middle
    assert leak(KEY.encode())
    assert not leak(f"sk-streambus-[redacted] and sk-proj-****{KEY[-4:]} and streambus run")
    with pytest.raises(AssertionError, match=r"\[show x\] 'sk-streambus-TESTKEY"):
        assert_no_key({"stdout": "ok", "show x": f"error: {KEY}"})


# -- the runs ---------------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    args: Callable[[dict[str, str]], list[str]]
    """The run's arguments, given the base URLs of the simulators (``openai ok``,
    ``anthropic 401``, … and ``closed``: a loopback port where nothing listens)."""
    env: Callable[[dict[str, str]], dict[str, str]] = lambda urls: {}
    code: int = 1
    expect: tuple[str, ...] = ()
    """Substrings of stdout + stderr that show the route was really taken."""
    recorded: bool = True


def with_userinfo(url: str, userinfo: str) -> str:
    return url.replace("http://", f"http://{userinfo}@", 1)


OPENAI = ["-p", "openai", "-m", "sim-1"]
ANTHROPIC = ["-p", "anthropic", "-m", "sim-1"]
REDACTED = "[redacted]"
ECHOED = f"Incorrect API key provided: {REDACTED}"
RETRIED = "retrying in"
REFUSED = "cannot connect to 127.0.0.1:"

SCENARIOS = [
    # --api-key
    Scenario(
        "openai --api-key, ok",
        lambda u: [*OPENAI, "--base-url", u["openai ok"], "--api-key", KEY, "Hi"],
        code=0,
    ),
    Scenario(
        "openai --api-key, 401 echoes it",
        lambda u: [*OPENAI, "--base-url", u["openai 401"], "--api-key", KEY, "Hi"],
        expect=(ECHOED,),
    ),
    Scenario(
        "openai --api-key, error event echoes it, jsonl",
        lambda u: [
            *(*OPENAI, "--base-url", u["openai error_event"]),
            *("--api-key", KEY, "-f", "jsonl", "Hi"),
        ],
        expect=(f"key {REDACTED} was revoked (ref {REDACTED}",),
    ),
    Scenario(
        "anthropic --api-key, 401 echoes it, jsonl",
        lambda u: [
            *(*ANTHROPIC, "--base-url", u["anthropic 401"]),
            *("--api-key", KEY, "-f", "jsonl", "Hi"),
        ],
        expect=(ECHOED,),
    ),
    # the environment
    Scenario(
        "OPENAI_API_KEY (auto), 503 echoes part of it, retried, jsonl",
        lambda u: ["--retries", "1", "-f", "jsonl", "Hi"],
        env=lambda u: {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": u["openai 503"]},
        expect=(RETRIED, f"Overloaded for key {REDACTED}"),
    ),
    Scenario(
        "ANTHROPIC_API_KEY, error event echoes it",
        lambda u: [*ANTHROPIC, "Hi"],
        env=lambda u: {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": u["anthropic error_event"]},
        expect=(f"key {REDACTED} was revoked (ref {REDACTED}",),
    ),
    # the user part of the base URL
    Scenario(
        "openai user:KEY@ in --base-url, ok, jsonl",
        lambda u: [
            *(*OPENAI, "--base-url", with_userinfo(u["openai ok"], f"user:{KEY}")),
            *("-f", "jsonl", "Hi"),
        ],
        code=0,
    ),
    Scenario(
        "openai KEY@ in --base-url, 401 echoes it",
        lambda u: [*OPENAI, "--base-url", with_userinfo(u["openai 401"], KEY), "Hi"],
        expect=(ECHOED,),
    ),
    Scenario(
        "ANTHROPIC_BASE_URL with user:KEY@, 503 echoes part of it, retried",
        lambda u: [*ANTHROPIC, "--retries", "1", "Hi"],
        env=lambda u: {"ANTHROPIC_BASE_URL": with_userinfo(u["anthropic 503"], f"user:{KEY}")},
        expect=(RETRIED, f"Overloaded for key {REDACTED}"),
    ),
    # a query parameter of the base URL
    Scenario(
        "openai ?api-key=KEY in --base-url, ok, jsonl",
        lambda u: [*OPENAI, "--base-url", f"{u['openai ok']}?api-key={KEY}", "-f", "jsonl", "Hi"],
        code=0,
    ),
    Scenario(
        "openai ?key=KEY on a wrong path: the server echoes the URL",
        lambda u: [*OPENAI, "--base-url", f"{u['openai ok']}/nope?key={KEY}", "Hi"],
        expect=("HTTP 404: Invalid URL",),
    ),
    Scenario(
        "anthropic ?access_token=KEY in --base-url, 401 echoes it, jsonl",
        lambda u: [
            *(*ANTHROPIC, "--base-url", f"{u['anthropic 401']}?x=1&access_token={KEY}"),
            *("-f", "jsonl", "Hi"),
        ],
        expect=(ECHOED,),
    ),
    # nothing listens: connection errors, and their retry lines
    Scenario(
        "openai user:KEY@ and ?key=KEY, connection refused, retried",
        lambda u: [
            *(*OPENAI, "--base-url", with_userinfo(u["closed"], f"u:{KEY}") + f"/v1?key={KEY}"),
            *("--retries", "1", "Hi"),
        ],
        expect=(RETRIED, REFUSED),
    ),
    Scenario(
        "anthropic --api-key, connection refused, retried, jsonl",
        lambda u: [
            *(*ANTHROPIC, "--base-url", u["closed"], "--api-key", KEY),
            *("--retries", "1", "-f", "jsonl", "Hi"),
        ],
        expect=(RETRIED, REFUSED),
    ),
    # refused before sending, with an error that names the base URL
    Scenario(
        "a base URL with user:KEY@ and a bad port",
        lambda u: [*OPENAI, "--base-url", f"http://user:{KEY}@127.0.0.1:99999/v1", "Hi"],
        code=2,
        expect=(f"invalid base URL 'http://{REDACTED}@127.0.0.1:99999/v1'",),
        recorded=False,
    ),
    Scenario(
        "a base URL with ?token=KEY and the wrong scheme",
        lambda u: [*OPENAI, "--base-url", f"ftp://127.0.0.1/v1?token={KEY}", "Hi"],
        code=2,
        expect=(f"got 'ftp://127.0.0.1/v1?token={REDACTED}'",),
        recorded=False,
    ),
    Scenario(
        "a base URL with KEY@ that does not parse",
        lambda u: [*ANTHROPIC, "--base-url", f"http://{KEY}@[::1/v1", "Hi"],
        code=2,
        expect=("invalid base URL",),
        recorded=False,
    ),
]


@dataclass
class Runs:
    home: Path
    results: dict[str, subprocess.CompletedProcess[str]]
    after_runs: dict[str, bytes]
    """The database's files as the runs left them, before any reading command."""
    sessions: dict[str, str] = field(default_factory=dict)
    """Scenario name → its recorded session id."""


def cli_env(home: Path, **env: str) -> dict[str, str]:
    """A clean environment with a private HOME, so that anything written there is found."""
    return clean_env(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        MPLCONFIGDIR=str(home / ".matplotlib"),
        STREAMBUS_DB=str(home / "recordings.db"),
        **env,
    )


def cli(cmd: str, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed command, run as a user runs it."""
    return subprocess.run(
        [cmd, *args], capture_output=True, text=True, env=cli_env(home, **env), timeout=60
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_files(db: Path) -> dict[str, bytes]:
    """The database and whatever SQLite keeps beside it (-wal, -shm, -journal)."""
    return {f"file {p.name}": p.read_bytes() for p in sorted(db.parent.glob(db.name + "*"))}


# The reading commands are many (show and replay once per session and format), and every
# start of the command spends 0.5 s importing. So they run in processes forked from one that
# ran those imports once: each child runs the installed `streambus` script itself (runpy),
# with its own argv, environment, stdout and stderr, and exits with the script's exit code.
# test_forked_commands_print_what_the_command_prints holds them to the real command.
FORKED_RUNNER = """
import json, os, runpy, sys, traceback
command, jobs = sys.argv[1], json.load(sys.stdin)
sys.path[0] = os.path.dirname(command)  # as for the script: not the working directory
import sqlite_utils, streambus._cli  # what the script and the commands import, once
codes = []
for job in jobs:
    out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    pid = os.fork()
    if pid == 0:
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.environ.clear()
        os.environ.update(job["env"])
        sys.argv = [command, *job["args"]]
        try:
            runpy.run_path(command, run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.close(out)
    os.close(err)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
json.dump(codes, sys.stdout)
"""


def forked(
    cmd: str, home: Path, commands: list[list[str]]
) -> list[subprocess.CompletedProcess[str]]:
    """Each command as ``cli(cmd, home, *args)`` would run it, forked (above)."""
    if not hasattr(os, "fork"):
        return [cli(cmd, home, *args) for args in commands]
    outputs = home.parent / f"{home.name}-outputs"
    outputs.mkdir(exist_ok=True)
    env = cli_env(home)
    jobs = [
        {
            "args": args,
            "env": env,
            "stdout": str(outputs / f"{i}.out"),
            "stderr": str(outputs / f"{i}.err"),
        }
        for i, args in enumerate(commands)
    ]
    python = str(Path(cmd).parent / "python")
    driver = subprocess.run(
        [python, "-c", FORKED_RUNNER, cmd],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=120,
    )
    assert driver.returncode == 0, driver.stderr
    codes = json.loads(driver.stdout)
    return [
        subprocess.CompletedProcess(
            [cmd, *job["args"]],
            code,
            Path(job["stdout"]).read_text(),
            Path(job["stderr"]).read_text(),
        )
        for job, code in zip(jobs, codes, strict=True)
    ]


@pytest.fixture(scope="module")
def streambus_cmd() -> str:
    return find_command()


@pytest.fixture(scope="module")
def simulators() -> Iterator[dict[str, str]]:
    """Base URLs by name: ``openai ok``, ``anthropic ok``, and for each of ``ECHOES`` (a fault
    that echoes the key) ``openai 401``, ``anthropic 401``, …; ``closed``: nothing listens."""
    configs = {"ok": SimulatorConfig(**FAST)}
    configs |= {name: SimulatorConfig(**FAST, fault=fault) for name, fault in ECHOES.items()}
    threads = {name: start_in_thread(config) for name, config in configs.items()}
    try:
        urls = {"closed": f"http://127.0.0.1:{closed_port()}"}
        for name, thread in threads.items():
            thread.start()
            urls[f"openai {name}"] = thread.base_url
            urls[f"anthropic {name}"] = thread.anthropic_base_url
        yield urls
    finally:
        for thread in threads.values():
            thread.stop()  # a no-op for one that never started


@pytest.fixture(scope="module")
def runs(
    streambus_cmd: str, simulators: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Runs:
    """Every scenario run once (a few at a time), all recording into one database."""
    home = tmp_path_factory.mktemp("home")

    def one(scenario: Scenario) -> subprocess.CompletedProcess[str]:
        args = scenario.args(simulators)
        return cli(streambus_cmd, home, "run", *args, **scenario.env(simulators))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip([s.name for s in SCENARIOS], pool.map(one, SCENARIOS), strict=True))
    collected = Runs(home, results, database_files(home / "recordings.db"))
    for name, result in results.items():
        match = re.search(r"session ([0-9a-f]{24}) \(recorded\)", result.stderr)
        if match:
            collected.sessions[name] = match.group(1)
    return collected


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_a_run_never_shows_the_key(runs: Runs, scenario: Scenario) -> None:
    result = runs.results[scenario.name]
    assert_no_key({"stdout": result.stdout, "stderr": result.stderr})
    # and the route was really taken: the run ended as it should, the key really came back
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == scenario.code, output
    for expected in scenario.expect:
        assert expected in output, output
    assert (scenario.name in runs.sessions) == scenario.recorded, output


def test_recordings_never_show_the_key(streambus_cmd: str, runs: Runs) -> None:
    """Every reading command, in every format, over every recorded session; then every file
    the runs and the commands left."""
    ids = list(runs.sessions.values())
    assert len(ids) == sum(s.recorded for s in SCENARIOS)
    answered = [runs.sessions[s.name] for s in SCENARIOS if s.recorded and s.code == 0]
    home = runs.home
    commands: list[list[str]] = [
        ["sessions"],
        ["sessions", "-f", "json", "-n", "0"],
        ["export", "--all"],
        ["export", *ids, "-o", str(home / "export.jsonl")],
        ["stats", "--status", "all"],
        ["stats", "--status", "all", "-f", "json"],
        ["stats", "--status", "all", "-f", "csv"],
        ["stats", "--status", "all", "--by", "session"],
        ["plot", *answered, "-o", str(home / "plot.svg")],
    ]
    for session in ids:
        # (show without --events prints the beginning of what show --events prints)
        commands += [
            ["show", session, "--events"],
            ["show", session, "--events", "-f", "json"],
            ["replay", session, "--instant"],
            ["replay", session, "--instant", "-f", "jsonl"],
        ]

    results = forked(streambus_cmd, home, commands)
    artifacts: dict[str, str | bytes] = {}
    for args, result in zip(commands, results, strict=True):
        name = " ".join(Path(a).name if "/" in a else a for a in args)
        expected = (0, 1) if args[0] == "replay" else (0,)  # a failed session replays as failed
        assert result.returncode in expected, f"{name}: {result.stderr}"
        assert "Traceback" not in result.stderr, f"{name}: {result.stderr}"
        artifacts[f"{name} (stdout)"] = result.stdout
        artifacts[f"{name} (stderr)"] = result.stderr
    artifacts |= {f"{name}, after the runs": data for name, data in runs.after_runs.items()}
    for path in sorted(home.rglob("*")):  # the database, -wal, -shm, the export, the plot, …
        if path.is_file():
            artifacts[f"file {path.relative_to(home)}"] = path.read_bytes()
    assert_no_key(artifacts)
    # and the search looked at what it should: the files, and commands that read the sessions
    assert {"file recordings.db", "file export.jsonl", "file plot.svg"} <= set(artifacts)
    listed = json.loads(results[1].stdout)
    assert sorted(row["id"] for row in listed) == sorted(ids)
    assert sum(REDACTED in (row["error"] or "") for row in listed) >= 6


def test_forked_commands_print_what_the_command_prints(streambus_cmd: str, runs: Runs) -> None:
    """The shortcut above changes nothing: the same output and exit code as the command."""
    failed = runs.sessions["openai --api-key, 401 echoes it"]
    commands = [["show", failed, "--events"], ["replay", failed, "--instant"], ["show", "nope"]]
    for args, fork in zip(commands, forked(streambus_cmd, runs.home, commands), strict=True):
        real = cli(streambus_cmd, runs.home, *args)
        assert (fork.returncode, fork.stdout, fork.stderr) == (
            real.returncode,
            real.stdout,
            real.stderr,
        ), args


# -- what listens binds to 127.0.0.1 by default ---------------------------------------------


LISTENERS: list[Callable[..., Any]] = [
    serve_http,
    serve_canned,
    serve,
    open_simulator,
    start_in_thread,
    SimulatorThread,
    Simulator,
]


@pytest.mark.parametrize("listener", LISTENERS, ids=lambda f: f.__qualname__)
def test_the_default_host_is_loopback(listener: Callable[..., Any]) -> None:
    assert inspect.signature(listener).parameters["host"].default == "127.0.0.1"


def test_the_sim_command_defaults_to_loopback() -> None:
    sim = streambus_cli.commands["sim"]
    assert {p.name: p.default for p in sim.params}["host"] == "127.0.0.1"


def listening_on(port: int) -> set[str]:
    """The addresses listening on TCP ``port``, from Linux's /proc/net/tcp and tcp6."""
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = Path("/proc/net") / table
        if not path.exists():  # no IPv6
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)  # 32-bit words in the host's byte order
                if sys.byteorder == "little":
                    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(socket.inet_ntop(family, raw))
    return found


async def test_the_servers_listen_on_loopback_only() -> None:
    async def nothing(request: HTTPRequest) -> HTTPResponse:
        return HTTPResponse(204)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, nothing)
        simulator = await nursery.start(serve)
        async with open_simulator() as sim, serve_canned({}) as canned:
            for name, bound in [
                ("serve_http", port),
                ("serve", simulator.port),
                ("open_simulator", sim.port),
                ("serve_canned", canned.port),
            ]:
                assert listening_on(bound) == {"127.0.0.1"}, name
        nursery.cancel_scope.cancel()


def test_the_simulator_thread_listens_on_loopback_only() -> None:
    with start_in_thread() as sim:
        assert sim.base_url == f"http://127.0.0.1:{sim.port}/v1"
        assert listening_on(sim.port) == {"127.0.0.1"}


def test_streambus_sim_listens_on_loopback_only(streambus_cmd: str) -> None:
    command = [streambus_cmd, "sim", "--port", "0"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=clean_env()) as server:
        try:
            base_url = read_base_url(server)
            match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/v1", base_url)
            assert match, base_url
            port = int(match[1])
            assert listening_on(port) == {"127.0.0.1"}
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
