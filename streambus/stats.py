"""Latency statistics over recorded sessions. docs/latency.md defines them.

Per session, the figures are the ``sessions`` row the recorder wrote. Over a selection of
sessions (optionally grouped by provider or model), TTFT, end-to-end, TPOT, tokens/s and
output tokens count one value per session (in SQL), while ITL pools every gap of the
selected sessions, as vLLM does. Percentiles are :func:`streambus.latency.percentile`
applied to the ranks found, so they equal sorting every value in Python.

Each session's gaps are stored sorted, in one ``session_gaps`` blob written at its ``stop``
(a session without one has them read from its events). Pooled ITL covers millions of gaps,
and sorting them all takes seconds, so its ranks are found from a sample: a hashed sample of
the sessions estimates each percentile, then one pass over the blobs counts the gaps below a
bracket around each estimate (a binary search in each sorted blob) and takes those inside
it. A rank outside its bracket, which the sample's error margin makes unlikely, is found by
taking and sorting the gaps of its region in another pass. The result is exact either way;
only the time depends on the sample.
"""

from __future__ import annotations

import bisect
import csv
import datetime
import io
import json
import math
from array import array
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, Final, NamedTuple, overload

import msgspec

from streambus.db import session_conditions, unpack_gaps
from streambus.latency import percentile

if TYPE_CHECKING:
    import sqlite3

    import sqlite_utils

__all__ = [
    "BY",
    "PERCENTILES",
    "Distribution",
    "GroupStats",
    "Selection",
    "SessionStats",
    "aggregate",
    "per_session",
    "render",
]

PERCENTILES: Final = (50, 90, 99)
BY: Final = ("provider", "model", "session")
"""Groupings: ``session`` lists each session's own figures instead of aggregating."""

_SAMPLE_GAPS: Final = 100_000  # about how many gaps the sample estimating percentiles reads
_Z: Final = 6.0  # each estimate's bracket: this many standard errors either side


class Selection(msgspec.Struct, frozen=True, kw_only=True):
    """Which sessions: every condition given must hold.

    ``ids`` are full session ids (resolve prefixes with :func:`streambus.db.find_session`).
    ``status`` defaults to ``ok``, as vLLM and llmperf aggregate only successful requests;
    ``None`` selects every status. ``since`` is inclusive; naive means UTC.
    """

    ids: tuple[str, ...] = ()
    provider: str | None = None
    model: str | None = None
    status: str | None = "ok"
    since: datetime.datetime | None = None

    def where(self) -> tuple[str, list[Any]]:
        """An SQL condition on ``sessions`` (unqualified columns) and its parameters."""
        clauses, params = session_conditions(
            provider=self.provider, model=self.model, status=self.status, since=self.since
        )
        if self.ids:
            clauses.append("id in (select value from json_each(?))")
            params.append(json.dumps(self.ids))
        return " and ".join(clauses) or "1", params


class Distribution(msgspec.Struct, frozen=True, kw_only=True):
    """``n`` values summarized; all ``None`` when ``n`` is 0. Units are the figure's."""

    n: int = 0
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None


class GroupStats(msgspec.Struct, frozen=True, kw_only=True):
    """Aggregate latency of one group of sessions (all selected ones when ``by`` is None)."""

    by: str | None
    group: str | None
    sessions: int
    ttft_ns: Distribution
    itl_ns: Distribution
    """Pooled: every gap of every selected session counts once."""
    tpot_ns: Distribution
    tokens_per_s: Distribution
    e2e_ns: Distribution
    output_tokens: Distribution
    decode_tokens_per_s: float | None
    """Σ output tokens / Σ decode time (first to last content) over sessions with tokens/s:
    a mean of rates would weigh short, noisy sessions like long ones."""
    stall_ms: float
    stalls: int
    """Gaps longer than ``stall_ms``."""
    stalled_sessions: int


class SessionStats(msgspec.Struct, frozen=True, kw_only=True):
    """One session's stored figures (docs/latency.md), plus its stalls."""

    id: str
    provider: str | None
    model: str | None
    status: str | None
    started_at: str | None
    output_tokens: int | None
    ttft_ns: int | None
    e2e_ns: int | None
    content_events: int | None
    itl_mean_ns: float | None
    itl_p50_ns: float | None
    itl_p90_ns: float | None
    itl_p99_ns: float | None
    itl_max_ns: int | None
    tpot_ns: float | None
    tokens_per_s: float | None
    stall_ms: float
    stalls: int


_SESSION_FIGURES: Final = ("ttft_ns", "tpot_ns", "tokens_per_s", "e2e_ns", "output_tokens")


def aggregate(
    db: sqlite_utils.Database,
    selection: Selection = Selection(),  # noqa: B008 - frozen, so sharing it is safe
    *,
    by: str | None = None,
    stall_ms: float = 1000.0,
) -> list[GroupStats]:
    """Statistics of the selected sessions, one entry per group (none: nothing selected)."""
    if by not in (None, "provider", "model"):
        raise ValueError(f"cannot aggregate by {by!r}: provider or model (or per_session)")
    conn = db.conn
    where, params = selection.where()
    key = by or "null"
    summaries = conn.execute(
        f"select {key}, count(*), "
        + ", ".join(f"count({f}), avg({f}), max({f})" for f in _SESSION_FIGURES)
        # Σ N / Σ (l − f): l − f is N / (tokens/s); the sessions table keeps no l.
        + ", total(output_tokens) filter (where tokens_per_s is not null)"
        ", total(output_tokens / tokens_per_s) filter (where tokens_per_s is not null)"
        ", total(content_events)"  # about how many ITL gaps: sizes their sample
        f" from sessions where {where} group by 1 order by 1",
        params,
    ).fetchall()
    figures = {
        figure: _session_percentiles(conn, figure, key, where, params, summaries, 2 + 3 * i)
        for i, figure in enumerate(_SESSION_FIGURES)
    }
    groups = []
    for row in summaries:
        group = row[0]
        in_group = where if by is None else f"{where} and {by} is ?"
        gap_params = params if by is None else [*params, group]
        tokens, decode_s, content = row[-3:]
        pooled = _GapSelector(conn, in_group, gap_params, stall_ms).pooled(content)
        groups.append(
            GroupStats(
                by=by,
                group=group,
                sessions=row[1],
                ttft_ns=figures["ttft_ns"][group],
                itl_ns=pooled.itl,
                tpot_ns=figures["tpot_ns"][group],
                tokens_per_s=figures["tokens_per_s"][group],
                e2e_ns=figures["e2e_ns"][group],
                output_tokens=figures["output_tokens"][group],
                decode_tokens_per_s=tokens / decode_s if decode_s > 0 else None,
                stall_ms=stall_ms,
                stalls=pooled.stalls,
                stalled_sessions=pooled.stalled_sessions,
            )
        )
    return groups


def per_session(
    db: sqlite_utils.Database,
    selection: Selection = Selection(),  # noqa: B008 - frozen, so sharing it is safe
    *,
    stall_ms: float = 1000.0,
) -> list[SessionStats]:
    """Each selected session's figures, oldest first."""
    where, params = selection.where()
    columns = [f for f in SessionStats.__struct_fields__ if f not in ("stall_ms", "stalls")]
    rows = _with_gaps(db.conn, ", ".join(columns), where, params, "order by started_at, id")
    return [
        SessionStats(
            **dict(zip(columns, row, strict=True)),
            stall_ms=stall_ms,
            stalls=_stall_count(gaps, stall_ms),
        )
        for row, gaps in rows
    ]


def _with_gaps(
    conn: sqlite3.Connection, columns: str, where: str, params: list[Any], order: str = ""
) -> Iterator[tuple[tuple[Any, ...], array[int]]]:
    """Each selected session's ``columns`` and its ITL gaps, sorted.

    The gaps are the session's ``session_gaps`` blob, written at its ``stop``; a session
    without one (still streaming, or its process died) has them read from its events, a
    range of the key (docs/recording.md).
    """
    rows = conn.execute(
        f"select {columns}{', ' if columns else ''}id,"
        " (select gaps_ns from session_gaps where session_id = sessions.id)"
        f" from sessions where {where} {order}",
        params,
    )
    for *row, session_id, blob in rows:
        if blob is not None:
            gaps = unpack_gaps(blob)
        else:
            gaps = array(
                "q",
                sorted(
                    gap
                    for (gap,) in conn.execute(
                        "select gap_ns from events where session_id = ? and gap_ns is not null",
                        [session_id],
                    )
                ),
            )
        yield tuple(row), gaps


def _stall_count(gaps: array[int], stall_ms: float) -> int:
    """How many of a session's sorted gaps are longer than ``stall_ms``."""
    return len(gaps) - bisect.bisect_right(gaps, stall_ms * 1e6)


def _session_percentiles(
    conn: sqlite3.Connection,
    figure: str,
    key: str,
    where: str,
    params: list[Any],
    summaries: list[Any],
    at: int,
) -> dict[Any, Distribution]:
    """One per-session figure's distribution in each group: one window query for all."""
    counts = {row[0]: (row[at], row[at + 1], row[at + 2]) for row in summaries}
    wanted = {rank for n, _, _ in counts.values() for rank in _ranks_read(n)}
    known: dict[Any, dict[int, float]] = {group: {} for group in counts}
    if wanted:
        rows = conn.execute(
            f"select g, i, x from (select {key} as g, {figure} as x,"
            f" row_number() over (partition by {key} order by {figure}) - 1 as i"
            f" from sessions where {where} and {figure} is not null)"
            " where i in (select value from json_each(?))",
            [*params, json.dumps(sorted(wanted))],
        )
        for group, rank, value in rows:
            known[group][rank] = value
    return {
        group: _distribution(n, mean, top, known[group]) for group, (n, mean, top) in counts.items()
    }


class _Ranks(Sequence[float]):
    """``n`` sorted values of which only some are known: what :func:`percentile` reads.

    Without ``known`` it records the ranks read (answering 0), so SQL fetches exactly those.
    """

    def __init__(self, n: int, known: Mapping[int, float] | None = None) -> None:
        self._n = n
        self._known = known
        self.read: set[int] = set()

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[float]: ...
    def __getitem__(self, index: int | slice) -> float | Sequence[float]:
        if isinstance(index, slice):
            raise TypeError("_Ranks is read one rank at a time")
        if self._known is None:
            self.read.add(index)
            return 0.0
        return self._known[index]

    def __iter__(self) -> Iterator[float]:
        raise TypeError("_Ranks is read one rank at a time")


def _ranks_read(n: int) -> set[int]:
    """The ranks (0-based, ascending order) that the percentiles of ``n`` values read."""
    probe = _Ranks(n)
    for p in PERCENTILES:
        percentile(probe, p)
    return probe.read


def _distribution(
    n: int, mean: float | None, top: float | None, known: Mapping[int, float]
) -> Distribution:
    if n == 0:
        return Distribution()
    ranks = _Ranks(n, known)
    p50, p90, p99 = (percentile(ranks, p) for p in PERCENTILES)
    return Distribution(n=n, mean=mean, p50=p50, p90=p90, p99=p99, max=top)


class _Bucket(NamedTuple):
    """``n`` gaps, all in ``[low, high]`` (integers); ``values``: them sorted, if taken."""

    n: int
    low: int
    high: int
    values: list[int] | None = None


class _Pooled(NamedTuple):
    """A group's pooled ITL, and its stalls: gaps longer than ``stall_ms``, and how many
    sessions had one."""

    itl: Distribution
    stalls: int = 0
    stalled_sessions: int = 0


class _GapSelector:
    """Pooled ITL of the sessions matching ``where``: count, mean, max and exact ranks, and
    the stalls, counted in the same pass over every session.

    A hashed sample of the sessions (about ``_SAMPLE_GAPS`` gaps) estimates each percentile,
    with its standard error counted across sampled sessions, since one session's gaps are
    alike. One pass over the selection then counts, sums and bounds the gaps, counts those
    below each estimate's bracket (± ``_Z`` standard errors) and takes the few inside it:
    each session's gaps are sorted, so both are two binary searches and a slice. Each wanted
    rank is then read from a short sorted list. A rank the sample missed lies in a region
    between brackets, whose gaps another pass takes and sorts. Gaps are integers
    (differences of ``t_ns``), so ``[low, high]`` ranges tile them.
    """

    def __init__(
        self, conn: sqlite3.Connection, where: str, params: list[Any], stall_ms: float
    ) -> None:
        self._conn = conn
        self._where = where
        self._params = params
        self._stall_ms = stall_ms

    def pooled(self, expected: float) -> _Pooled:
        """``expected``: about how many gaps the selection has (Σ ``content_events``)."""
        share = max(1, int(expected) // _SAMPLE_GAPS)  # sample one session in ``share``
        sample = self._sample(share)
        pooled = sorted(chain.from_iterable(sample))
        if share == 1:  # the sample is the selection
            if not pooled:
                return _Pooled(Distribution())
            known = {r: float(pooled[r]) for r in _ranks_read(len(pooled))}
            itl = _distribution(len(pooled), sum(pooled) / len(pooled), pooled[-1], known)
            over = [_stall_count(gaps, self._stall_ms) for gaps in sample]
            return _Pooled(itl, sum(over), sum(map(bool, over)))
        n, total, buckets, stalls, stalled = self._bracketed(_brackets(sample, pooled))
        if n == 0:
            return _Pooled(Distribution())
        known = self._select(sorted(_ranks_read(n)), buckets)
        return _Pooled(_distribution(n, total / n, buckets[-1].high, known), stalls, stalled)

    def _gaps(self, where: str = "", params: Sequence[Any] = ()) -> Iterator[array[int]]:
        """Each selected session's sorted gaps (those with none too), further narrowed by
        ``where`` if given."""
        condition = f"({self._where}) and ({where})" if where else self._where
        for _, gaps in _with_gaps(self._conn, "", condition, [*self._params, *params]):
            yield gaps

    def _sample(self, share: int) -> list[array[int]]:
        """The sorted gaps of each sampled session that has some: one session in ``share``,
        chosen by a hash of its rowid (deterministic, and blind to round-robin patterns in
        the recording order)."""
        hashed = "(rowid * 2654435761) % 4294967296 < ?"
        return [gaps for gaps in self._gaps(hashed, [2**32 // share]) if gaps]

    def _bracketed(
        self, brackets: list[tuple[int, int]]
    ) -> tuple[int, int, list[_Bucket], int, int]:
        """One pass: the count and sum of the gaps, buckets tiling them (each bracket with
        its gaps taken, the regions between them counted), the stalls and the sessions with
        one."""
        n = total = stalls = stalled = 0
        lowest = highest = 0
        below = [0] * len(brackets)
        inside: list[array[int]] = [array("q") for _ in brackets]
        for gaps in self._gaps():
            if not gaps:
                continue
            lowest = gaps[0] if n == 0 else min(lowest, gaps[0])
            highest = gaps[-1] if n == 0 else max(highest, gaps[-1])
            n += len(gaps)
            total += sum(gaps)
            over = _stall_count(gaps, self._stall_ms)
            stalls += over
            stalled += over > 0
            for i, (low, high) in enumerate(brackets):
                first = bisect.bisect_left(gaps, low)
                end = bisect.bisect_right(gaps, high, first)
                below[i] += first
                if end > first:
                    inside[i].extend(gaps[first:end])
        if n == 0:
            return 0, 0, [], 0, 0
        buckets, done, start = [], 0, lowest
        for (low, high), under, taken in zip(brackets, below, inside, strict=True):
            buckets.append(_Bucket(under - done, start, low - 1))
            buckets.append(_Bucket(len(taken), low, high, sorted(taken)))
            done, start = under + len(taken), high + 1
        buckets.append(_Bucket(n - done, start, highest))
        return n, total, buckets, stalls, stalled

    def _region(self, low: int, high: int) -> list[int]:
        """Every selected gap in ``[low, high]``, sorted: one more pass."""
        taken: array[int] = array("q")
        for gaps in self._gaps():
            first = bisect.bisect_left(gaps, low)
            taken.extend(gaps[first : bisect.bisect_right(gaps, high, first)])
        return sorted(taken)

    def _select(self, ranks: list[int], buckets: list[_Bucket]) -> dict[int, float]:
        """Values at ``ranks``, given ``buckets`` that tile the gaps from rank 0 up."""
        found: dict[int, float] = {}
        below = 0
        for count, low, high, values in buckets:
            inside = [r for r in ranks if below <= r < below + count]
            if inside and values is None and low == high:
                found |= dict.fromkeys(inside, float(low))
            elif inside:
                if values is None:
                    values = self._region(low, high)
                assert len(values) == count
                found |= {r: float(values[r - below]) for r in inside}
            below += count
        return found


def _brackets(sample: Sequence[Sequence[int]], pooled: list[int]) -> list[tuple[int, int]]:
    """Disjoint gap ranges, ascending, likely to hold the selection's percentiles: each the
    sample's estimate ± ``_Z`` standard errors. ``sample`` is each sampled session's sorted
    gaps, ``pooled`` all of them sorted. The error is that of a ratio estimate over sampled
    sessions (clusters), so sessions whose gaps are all alike widen it as they should.
    """
    m = len(pooled)
    if m == 0:
        return []
    ranges = []
    for p in PERCENTILES:
        q = p / 100
        estimate = pooled[min(m - 1, int(q * m))]
        spread = sum((bisect.bisect_right(g, estimate) - q * len(g)) ** 2 for g in sample)
        error = math.sqrt(spread * len(sample) / max(1, len(sample) - 1)) / m
        margin = _Z * error + 1 / m
        low = pooled[max(0, math.floor((q - margin) * m))]
        ranges.append((low, pooled[min(m - 1, math.ceil((q + margin) * m))]))
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1]:
            first, last = merged.pop()
            low, high = first, max(high, last)
        merged.append((low, high))
    return merged


# -- output: a table for people, JSON and CSV for scripts ------------------------------------

_TABLE_ROWS: Final = (
    ("TTFT ms", "ttft_ns", 1e6),
    ("ITL ms", "itl_ns", 1e6),
    ("TPOT ms", "tpot_ns", 1e6),
    ("tokens/s", "tokens_per_s", 1),
    ("end-to-end ms", "e2e_ns", 1e6),
    ("output tokens", "output_tokens", 1),
)
_STATS: Final = ("n", "mean", "p50", "p90", "p99", "max")


def render(results: Sequence[GroupStats] | Sequence[SessionStats], fmt: str) -> str:
    """``table``, ``json`` or ``csv`` text of :func:`aggregate` or :func:`per_session` results
    (ms and tokens/s: names say the unit)."""
    records = [_record(r) for r in results]
    if fmt == "json":
        return json.dumps(records, ensure_ascii=False, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=_csv_fields(records[0]) if records else [])
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in _flat(r)} for r in records)
        return out.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}: table, json or csv")
    if results and isinstance(results[0], SessionStats):
        return _sessions_table([r for r in results if isinstance(r, SessionStats)])
    return "\n\n".join(_group_table(r) for r in results if isinstance(r, GroupStats))


def _record(result: GroupStats | SessionStats) -> dict[str, Any]:
    """The JSON form: durations in ms (``…_ms``), distributions as objects."""
    record: dict[str, Any] = {}
    for name, value in msgspec.structs.asdict(result).items():
        if isinstance(value, Distribution):
            scale = 1e6 if name.endswith("_ns") else 1
            record[name.removesuffix("_ns") + ("_ms" if scale != 1 else "")] = {
                stat: _scaled(getattr(value, stat), scale) if stat != "n" else value.n
                for stat in _STATS
            }
        elif name.endswith("_ns"):
            record[name.removesuffix("_ns") + "_ms"] = _scaled(value, 1e6)
        else:
            record[name] = value
    return record


def _flat(record: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """CSV columns: one per figure and statistic (``ttft_ms_p50``)."""
    for name, value in record.items():
        if isinstance(value, dict):
            yield from ((f"{name}_{stat}", v) for stat, v in value.items())
        else:
            yield name, value


def _csv_fields(record: dict[str, Any]) -> list[str]:
    return [name for name, _ in _flat(record)]


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value / scale


def _number(value: float | None) -> str:
    """Sensible precision for ms, tokens/s and tokens: three or four significant digits."""
    if value is None:
        return "–"
    size = abs(value)
    if size >= 1000 or value == int(value):
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _group_table(stats: GroupStats) -> str:
    title = "all sessions" if stats.by is None else f"{stats.by} {stats.group or '(unknown)'}"
    plural = "" if stats.sessions == 1 else "s"
    lines = [f"{title} · {stats.sessions} session{plural}"]
    cells = [["", *_STATS]]
    for label, attr, scale in _TABLE_ROWS:
        dist: Distribution = getattr(stats, attr)
        cells.append(
            [label, str(dist.n)] + [_number(_scaled(getattr(dist, s), scale)) for s in _STATS[1:]]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    speed = _number(stats.decode_tokens_per_s)
    stalled = f"{stats.stalled_sessions} session{'' if stats.stalled_sessions == 1 else 's'}"
    lines.append(
        f"decode speed {speed} tok/s (Σ tokens / Σ decode time) · "
        f"{stats.stalls} stall{'' if stats.stalls == 1 else 's'} > {_number(stats.stall_ms)} ms"
        f" in {stalled}"
    )
    return "\n".join(lines)


def _sessions_table(rows: list[SessionStats]) -> str:
    header = [
        "session",
        "model",
        "status",
        "TTFT ms",
        "ITL p50",
        "ITL p99",
        "ITL max",
        "TPOT ms",
        "tok/s",
        "e2e ms",
        "tokens",
        "stalls",
    ]
    cells = [header]
    for r in rows:
        cells.append(
            [
                r.id[:16],
                r.model or "–",
                r.status or "–",
                *(
                    _number(_scaled(v, 1e6))
                    for v in (r.ttft_ns, r.itl_p50_ns, r.itl_p99_ns, r.itl_max_ns, r.tpot_ns)
                ),
                _number(r.tokens_per_s),
                _number(_scaled(r.e2e_ns, 1e6)),
                _number(r.output_tokens),
                str(r.stalls),
            ]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    )
