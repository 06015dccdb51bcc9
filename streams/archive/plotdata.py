"""The series behind `aps history plot`: read from the archive, ready to draw.

Every query reads with FINAL and runs on ClickHouse 18.16 and on chdb; what only the
`record` JSON holds (net deltas, ladder thresholds, positions' underlyings) is parsed in
Python. Oracle ticks become prices with the feed registry (``APS_FEEDS_FILE``): a Pyth
price is ``price * 10**expo`` (expo in the record), a Chainlink answer is scaled by the
feed's decimals, which only the registry knows; ticks of feeds it does not know (and the
sequencer-uptime feeds) are left out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from streams.archive.backends import ArchiveBackend
from streams.archive.timeline import ALL_TIME, TimeRange, ladder_steps, net_deltas
from streams.domain import OracleSource
from streams.oracle.feeds import FeedRegistry, FeedSpec

NEAR_RATIO = 1.2  # "near maintenance": margin ratio below this (maintenance itself is 1.0)
MAX_BUCKETS = 120
_BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200,
              86400)


@dataclass
class Series:
    """Values over event time (epoch ms), in time order."""

    times: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, event_time: int, value: float) -> None:
        """Append one point."""
        self.times.append(event_time)
        self.values.append(value)


@dataclass(frozen=True, slots=True)
class Mark:
    """Something that happened at one event time, drawn as a marker in row `label`."""

    event_time: int
    label: str


@dataclass
class AccountSeries:
    """What `aps history plot account` draws for one account."""

    account: str
    prices: dict[str, Series]  # consensus price per underlying the account held
    ratio: Series  # margin ratio of each valued state
    ladder: dict[str, Series]  # threshold of each ladder step over time, by label
    deltas: dict[str, Series]  # net delta per underlying
    commands: list[Mark]  # label: the command's reason
    reports: list[Mark]  # label: the report's status

    def span(self) -> tuple[int, int] | None:
        """First and last event time of anything drawn; None if nothing."""
        times = [t for s in self._all_series() for t in s.times]
        times += [m.event_time for m in self.commands + self.reports]
        return (min(times), max(times)) if times else None

    def _all_series(self) -> list[Series]:
        return [self.ratio, *self.prices.values(), *self.ladder.values(),
                *self.deltas.values()]


@dataclass
class RunSeries:
    """What `aps history plot run` draws for the whole archive."""

    near_ratio: float
    bucket_ms: int
    accounts: int  # accounts valued at least once
    near: Series  # accounts whose latest ratio is below near_ratio, at each bucket's end
    past: Series  # accounts whose latest ratio is below 1 (past maintenance)
    commands: dict[str, Series]  # commands per bucket (start time), by reason
    consensus: dict[str, Series]  # consensus price per asset
    sources: dict[str, dict[str, Series]]  # asset -> source label -> price
    skipped_ticks: int = 0  # ticks of feeds the registry does not know, or no price


def _rows(backend: ArchiveBackend, sql: str, params: dict[str, Any],
          when: TimeRange) -> list[dict[str, Any]]:
    """`sql` has a WHERE clause ending where the time clauses are appended (`{range}`)."""
    clauses, extra = when.sql()
    return backend.query(sql.replace("{range}", clauses), {**params, **extra}).dicts()


# --- one account ---------------------------------------------------------------------------

def account_series(backend: ArchiveBackend, account: str,
                   when: TimeRange = ALL_TIME) -> AccountSeries:
    """The account's states, commands and reports in `when`, and the prices of what it held."""
    states = _rows(backend, "SELECT event_time, margin_ratio, deleted, record FROM "
                   "account_states FINAL WHERE account_id = {account:String}{range} ORDER BY "
                   "event_time, version, kafka_timestamp, kafka_offset",
                   {"account": account}, when)
    series = AccountSeries(account, {}, Series(), {}, {}, [], [])
    held: set[str] = set()
    for row in states:
        if not row["deleted"]:
            held |= _add_state(series, int(row["event_time"]), row["margin_ratio"],
                               json.loads(row["record"]))
    series.commands = _marks(backend, "reason", "commands", account, when)
    series.reports = _marks(backend, "status", "execution_reports", account, when)
    span = series.span()
    if span is not None:
        for asset in sorted(held):
            series.prices[asset] = _consensus(backend, asset, TimeRange(span[0], span[1] + 1))
    return series


def _add_state(series: AccountSeries, event_time: int, ratio: float | None,
               state: dict[str, Any]) -> set[str]:
    """Add one state version's points; return the underlyings of its positions."""
    if ratio is not None:
        series.ratio.add(event_time, ratio)
    for i, (threshold, action, fraction) in enumerate(ladder_steps(state.get("rules"))):
        label = f"ladder[{i}] {action} {fraction:.0%} below {threshold:.3g}"
        series.ladder.setdefault(label, Series()).add(event_time, threshold)
    for underlying, delta in net_deltas(state).items():
        series.deltas.setdefault(underlying, Series()).add(event_time, delta)
    return {p["instrument"]["underlying"] for p in state.get("positions", [])}


def _marks(backend: ArchiveBackend, column: str, table: str, account: str,
           when: TimeRange) -> list[Mark]:
    rows = _rows(backend, f"SELECT event_time, {column} AS label FROM {table} FINAL WHERE "
                 "account_id = {account:String}{range} ORDER BY event_time",
                 {"account": account}, when)
    return [Mark(int(r["event_time"]), r["label"]) for r in rows]


def _consensus(backend: ArchiveBackend, asset: str, when: TimeRange) -> Series:
    rows = _rows(backend, "SELECT event_time, price FROM consensus_prices FINAL WHERE "
                 "asset = {asset:String}{range} ORDER BY event_time, sequence",
                 {"asset": asset}, when)
    return Series([int(r["event_time"]) for r in rows], [r["price"] for r in rows])


# --- the whole run ---------------------------------------------------------------------------

def run_series(backend: ArchiveBackend, registry: FeedRegistry, when: TimeRange = ALL_TIME,
               near_ratio: float = NEAR_RATIO) -> RunSeries:
    """Accounts near/past maintenance, commands by reason and prices by source, over time.

    The time axis spans the consensus prices, the oracle ticks and the commands (within
    `when`), cut into at most MAX_BUCKETS buckets of a round number of seconds.
    """
    consensus = _all_consensus(backend, when)
    sources, skipped = _source_prices(backend, registry, when)
    times = [t for s in (*consensus.values(), *(x for by in sources.values()
                                               for x in by.values())) for t in s.times]
    times += _command_span(backend, when)
    if times:
        when = TimeRange(min(times), max(times) + 1)
    bucket = bucket_ms(when)
    run = RunSeries(near_ratio, bucket, 0, Series(), Series(), {}, consensus, sources, skipped)
    _count_accounts(run, backend, when)
    run.commands = _commands_per_bucket(backend, when, bucket)
    return run


def _command_span(backend: ArchiveBackend, when: TimeRange) -> list[int]:
    row = _rows(backend, "SELECT min(event_time) AS first, max(event_time) AS last, count() "
                "AS n FROM commands FINAL WHERE 1 = 1{range}", {}, when)[0]
    return [int(row["first"]), int(row["last"])] if row["n"] else []


def bucket_ms(when: TimeRange) -> int:
    """A round bucket width (ms) cutting `when` into at most MAX_BUCKETS buckets."""
    if when.start is None or when.end is None:
        return _BUCKETS_S[0] * 1000
    span_s = (when.end - when.start) / 1000
    return 1000 * next((b for b in _BUCKETS_S if span_s / b <= MAX_BUCKETS), _BUCKETS_S[-1])


def _all_consensus(backend: ArchiveBackend, when: TimeRange) -> dict[str, Series]:
    rows = _rows(backend, "SELECT asset, event_time, price FROM consensus_prices FINAL "
                 "WHERE 1 = 1{range} ORDER BY asset, event_time, sequence", {}, when)
    out: dict[str, Series] = {}
    for row in rows:
        out.setdefault(row["asset"], Series()).add(int(row["event_time"]), row["price"])
    return out


def _count_accounts(run: RunSeries, backend: ArchiveBackend, when: TimeRange) -> None:
    """At each bucket's end: accounts whose latest state is below each threshold.

    States before the window are read too: an account's latest state at the window's start
    may be older than the window.
    """
    rows = _rows(backend, "SELECT account_id, event_time, margin_ratio, deleted FROM "
                 "account_states FINAL WHERE 1 = 1{range} ORDER BY event_time, "
                 "kafka_timestamp, kafka_offset", {}, TimeRange(None, when.end))
    if not rows:
        return
    start = when.start if when.start is not None else int(rows[0]["event_time"])
    end = when.end if when.end is not None else int(rows[-1]["event_time"]) + 1
    latest: dict[str, float | None] = {}
    i = 0
    for edge in range(start + run.bucket_ms, end + run.bucket_ms, run.bucket_ms):
        while i < len(rows) and int(rows[i]["event_time"]) < edge:
            row = rows[i]
            latest[row["account_id"]] = None if row["deleted"] else row["margin_ratio"]
            i += 1
        _count_at(run, edge, latest)
    run.accounts = len({r["account_id"] for r in rows if r["margin_ratio"] is not None})


def _count_at(run: RunSeries, edge: int, latest: dict[str, float | None]) -> None:
    ratios = [r for r in latest.values() if r is not None]
    run.near.add(edge, sum(r < run.near_ratio for r in ratios))
    run.past.add(edge, sum(r < 1.0 for r in ratios))


def _commands_per_bucket(backend: ArchiveBackend, when: TimeRange,
                         bucket: int) -> dict[str, Series]:
    rows = _rows(backend, "SELECT intDiv(event_time, {bucket:Int64}) * {bucket:Int64} AS b, "
                 "reason, count() AS n FROM commands FINAL WHERE 1 = 1{range} "
                 "GROUP BY b, reason ORDER BY b, reason", {"bucket": bucket}, when)
    out: dict[str, Series] = defaultdict(Series)
    for row in rows:
        out[row["reason"]].add(int(row["b"]), float(row["n"]))
    return dict(out)


def _source_prices(backend: ArchiveBackend, registry: FeedRegistry,
                   when: TimeRange) -> tuple[dict[str, dict[str, Series]], int]:
    rows = _rows(backend, "SELECT event_time, chain, source, feed_id, raw_price, expo FROM "
                 "oracle_ticks FINAL WHERE 1 = 1{range} ORDER BY event_time, topic, "
                 "kafka_partition, kafka_offset", {}, when)
    out: dict[str, dict[str, Series]] = {}
    skipped = 0
    for row in rows:
        feed = _feed(registry, row)
        price = None if feed is None else tick_price(row["raw_price"], row["expo"], feed)
        if feed is None or price is None:
            skipped += 1
            continue
        out.setdefault(feed.asset, {}).setdefault(feed.label, Series()).add(
            int(row["event_time"]), price)
    return out, skipped


def _feed(registry: FeedRegistry, row: dict[str, Any]) -> FeedSpec | None:
    try:
        source = OracleSource(row["source"])
    except ValueError:
        return None
    feed = registry.lookup(row["chain"], source, row["feed_id"])
    return feed if isinstance(feed, FeedSpec) else None  # not a sequencer-uptime feed


def tick_price(raw_price: str, expo: int | None, feed: FeedSpec) -> float | None:
    """The price of a tick: the raw integer scaled by Pyth's expo or the feed's decimals.

    None for what is no price (not a number, or not positive: consensus refuses those).
    """
    exponent = expo if expo is not None else feed.exponent
    try:
        price = Decimal(raw_price).scaleb(exponent)
    except ArithmeticError:  # decimal.InvalidOperation: not a number
        return None
    return float(price) if price.is_finite() and price > 0 else None
