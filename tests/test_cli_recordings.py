"""The recordings commands (sessions, show, replay, export, import), run for real in a
subprocess against a temporary database, as tests/test_cli.py runs `streambus run`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from streambus import Delta, Event, Start, Stop, decode_event
from tests.test_cli import DB, FAST, ROOT, find_command, interrupt_when, run

KOREAN_SAMPLE = ROOT / "recordings" / "korean-answer.jsonl"


@pytest.fixture(scope="module")
def streambus_cmd() -> str:
    return find_command()


@pytest.fixture(autouse=True)
def fresh_database(tmp_path: Path) -> Path:
    """Every test records into its own database, never the user's."""
    DB["path"] = str(tmp_path / "recordings.db")
    return Path(DB["path"])


def record(cmd: str, *args: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    """``streambus run`` on the fast simulator; the session id and the result."""
    result = run(cmd, "run", *FAST, *args)
    match = re.search(r"streambus: session ([0-9a-f]{24}) \(recorded\)", result.stderr)
    assert match, result.stderr
    return match.group(1), result


def events_of(jsonl: str) -> list[Event]:
    return [decode_event(line) for line in jsonl.splitlines()]


def test_sessions_lists_newest_first_with_filters(streambus_cmd: str) -> None:
    ok, _ = record(streambus_cmd, "What is streaming?")
    failed, _ = record(streambus_cmd, "--sim-fault", "disconnect:3", "Hi")

    table = run(streambus_cmd, "sessions")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        *("id", "started", "provider", "model", "status", "tokens", "ttft", "duration")
    ]
    assert [row.split()[0] for row in rows] == [failed[:16], ok[:16]]
    assert re.fullmatch(
        rf"{ok[:16]}  \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d  sim\s+sim-1\s+ok\s+\d+/\d+\s+"
        r"\d+\.\d\d s\s+\d+\.\d\d s",
        rows[1],
    ), rows[1]
    assert rows[0].split()[5] == "error"

    listing = run(streambus_cmd, "sessions", "--format", "json")
    assert listing.returncode == 0, listing.stderr
    full = json.loads(listing.stdout)
    assert [row["id"] for row in full] == [failed, ok]
    assert full[1]["request"]["messages"] == [{"role": "user", "content": "What is streaming?"}]
    assert full[1]["status"] == "ok" and full[1]["ttft_ns"] > 0 and full[1]["output_tokens"] > 0

    def ids(*args: str) -> list[str]:
        result = run(streambus_cmd, "sessions", "-f", "json", *args)
        assert result.returncode == 0, result.stderr
        return [row["id"] for row in json.loads(result.stdout)]

    assert ids("--status", "error") == [failed]
    assert ids("--status", "ok", "--provider", "sim", "--model", "sim-1") == [ok]
    assert ids("--since", "1h") == [failed, ok]
    assert ids("--since", "2999-01-01") == []
    assert ids("--limit", "1") == [failed]
    assert ids("--provider", "anthropic") == []
    empty = run(streambus_cmd, "sessions", "--provider", "anthropic")
    assert (empty.returncode, empty.stdout) == (0, "")
    assert empty.stderr == "streambus: no sessions match\n"

    bad = run(streambus_cmd, "sessions", "--since", "last week")
    assert bad.returncode == 2
    assert bad.stderr.startswith("streambus: error: --since: 'last week' is neither a duration")
    assert len(bad.stderr.splitlines()) == 1


def test_reading_commands_never_create_a_database(streambus_cmd: str, fresh_database: Path) -> None:
    for args in (["sessions"], ["show", "latest"], ["replay", "latest"], ["export", "--all"]):
        result = run(streambus_cmd, *args)
        assert result.returncode == 1, args
        assert result.stderr == (
            f"streambus: error: no recordings database at {fresh_database}: "
            "nothing was recorded there\n"
        )
    assert not fresh_database.exists()


def test_show_latest_as_text_with_events_and_as_json(streambus_cmd: str) -> None:
    session, recorded = record(streambus_cmd, "--format", "jsonl", "What is streaming?")
    events = events_of(recorded.stdout)
    answer = "".join(e.text for e in events if isinstance(e, Delta) and e.channel == "text")

    text = run(streambus_cmd, "show", "latest")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"session   {session}"
    assert "status    ok · stop" in lines
    assert "  user: What is streaming?" in lines
    timing = next(line for line in lines if line.startswith("timing"))
    assert re.search(r"TTFT \d+\.\d\d s · duration \d+\.\d\d s · \d+ in / \d+ out tokens", timing)
    assert re.search(r"ITL p50 \d+\.\d ms, p99 \d+\.\d ms", timing)
    assert text.stdout.endswith(f"[answer]\n{answer}\n")

    with_events = run(streambus_cmd, "show", session[:10], "--events")
    assert with_events.returncode == 0, with_events.stderr
    report, listed = with_events.stdout.split("\nevents:\n")
    assert report == text.stdout
    assert listed == recorded.stdout

    as_json = run(streambus_cmd, "show", session, "--format", "json", "--events")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["session"]["id"] == session
    assert document["message"]["text"] == answer
    assert document["message"]["stop"]["reason"] == "stop"
    assert document["message"]["usage"]["output_tokens"] > 0
    assert [
        json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in document["events"]
    ] == (recorded.stdout.splitlines())

    missing = run(streambus_cmd, "show", "ffff")
    assert (missing.returncode, missing.stderr) == (
        1,
        "streambus: error: no session matches 'ffff'\n",
    )


def test_instant_replay_prints_exactly_what_was_recorded(streambus_cmd: str) -> None:
    session, recorded = record(streambus_cmd, "--format", "jsonl", "Tell me about tokens")
    replayed = run(streambus_cmd, "replay", session, "--instant", "--format", "jsonl")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout
    assert replayed.stderr == f"streambus: replayed session {session}\n"

    text = run(streambus_cmd, "replay", "latest", "--speed", "50")
    assert text.returncode == 0, text.stderr
    answer = "".join(e.text for e in events_of(recorded.stdout) if isinstance(e, Delta))
    assert text.stdout == answer + "\n"
    assert text.stderr.splitlines()[0].startswith("[stop · ")

    sessions = json.loads(run(streambus_cmd, "sessions", "-f", "json").stdout)
    assert [row["id"] for row in sessions] == [session]  # replays are not recorded

    both = run(streambus_cmd, "replay", session, "--instant", "--speed", "2")
    assert (both.returncode, both.stderr) == (
        2,
        "streambus: error: --speed and --instant exclude each other\n",
    )


def test_replaying_a_failed_session_fails_the_same_way(streambus_cmd: str) -> None:
    session, recorded = record(streambus_cmd, "--sim-fault", "disconnect:3", "Hi")
    assert recorded.returncode == 1
    replayed = run(streambus_cmd, "replay", session, "--instant")
    assert replayed.returncode == 1
    assert replayed.stdout == recorded.stdout
    assert replayed.stderr.splitlines()[-1] == recorded.stderr.splitlines()[-1]
    assert "broke mid-stream" in replayed.stderr.splitlines()[-1]


async def test_ctrl_c_mid_replay_ends_with_a_cancelled_stop(streambus_cmd: str) -> None:
    imported = run(streambus_cmd, "import", str(KOREAN_SAMPLE))
    assert imported.returncode == 0, imported.stderr
    cmd = [streambus_cmd, "replay", "latest", "--speed", "0.2", "--format", "jsonl"]
    code, stdout, stderr = await interrupt_when(cmd, lambda out: out.count(b'"type":"delta"') >= 2)
    assert code == 130
    assert b"Traceback" not in stderr
    events = events_of(stdout.decode())
    recorded = events_of(KOREAN_SAMPLE.read_text(encoding="utf-8"))
    assert events[:-1] == recorded[: len(events) - 1]  # what was replayed, as recorded
    assert len(events) < len(recorded) // 2
    last = events[-1]
    assert isinstance(last, Stop) and last.reason == "cancelled"
    assert last.seq == events[-2].seq + 1 and last.t_ns >= events[-2].t_ns
    assert sum(isinstance(e, Stop) for e in events) == 1

    code, stdout, stderr = await interrupt_when(
        [streambus_cmd, "replay", "latest", "--speed", "0.2"], lambda out: len(out) >= 20
    )
    assert code == 130 and stdout
    lines = stderr.decode().strip().splitlines()
    assert lines[-2].startswith("[cancelled"), lines
    assert lines[-1].startswith("streambus: replayed session ")


def test_export_import_round_trip(streambus_cmd: str, tmp_path: Path) -> None:
    first, _ = record(streambus_cmd, "What is streaming?")
    second, _ = record(streambus_cmd, "--sim-fault", "disconnect:3", "Hi")
    exported = tmp_path / "all.jsonl"
    result = run(streambus_cmd, "export", "--all", "-o", str(exported))
    assert result.returncode == 0, result.stderr
    lines = exported.read_bytes().splitlines()
    assert result.stderr.startswith(f"streambus: exported 2 sessions ({len(lines)} events) to ")
    assert isinstance(decode_event(lines[0]), Start)

    one = run(streambus_cmd, "export", first[:14])
    assert one.returncode == 0, one.stderr
    assert all(event.session == first for event in events_of(one.stdout))
    assert exported.read_text(encoding="utf-8").startswith(one.stdout)

    other = str(tmp_path / "other.db")
    imported = run(streambus_cmd, "import", "--db", other, str(exported))
    assert imported.returncode == 0, imported.stderr
    assert imported.stderr == (
        f"streambus: imported 2 sessions ({len(lines)} events) from {exported}\n"
    )
    again = run(streambus_cmd, "import", "--db", other, "-", input=exported.read_text("utf-8"))
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines() == [
        "streambus: imported 0 sessions (0 events) from standard input",
        f"streambus: skipped 2 sessions ({len(lines)} events) already in the database: "
        f"{first}, {second}",
    ]
    round_trip = run(streambus_cmd, "export", "--all", "--db", other)
    assert round_trip.stdout.encode() == exported.read_bytes()


def test_a_bad_import_names_the_line_and_imports_nothing(
    streambus_cmd: str, tmp_path: Path, fresh_database: Path
) -> None:
    good = KOREAN_SAMPLE.read_text(encoding="utf-8").splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*good[:3], '{"type":"delta"}', *good[3:]]) + "\n", "utf-8")
    result = run(streambus_cmd, "import", str(broken))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"streambus: error: {broken}: line 4: not a streambus event: Object missing required field"
    )
    assert result.stderr.endswith("; nothing imported from it\n")
    assert len(result.stderr.splitlines()) == 1
    listing = run(streambus_cmd, "sessions", "-f", "json")
    assert json.loads(listing.stdout) == []

    missing = run(streambus_cmd, "import", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"streambus: error: cannot read {tmp_path / 'nope.jsonl'}")
    usage = run(streambus_cmd, "export")
    assert (usage.returncode, usage.stderr) == (
        2,
        "streambus: error: give session IDs or --all (not both)\n",
    )


def test_a_speed_that_is_not_a_number_is_a_one_line_error(streambus_cmd: str) -> None:
    assert run(streambus_cmd, "import", str(KOREAN_SAMPLE)).returncode == 0
    result = run(streambus_cmd, "replay", "latest", "--speed", "nan")
    assert result.returncode == 2
    assert result.stderr == "streambus: error: --speed must be a finite number\n"
