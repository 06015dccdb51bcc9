"""`aps history account`: everything the archive knows about one account, in event-time order.

One query per kind of row (every one with FINAL, so a message archived twice is seen once),
merged and sorted in Python: that runs unchanged on ClickHouse 18.16 (no window functions,
no JSON* functions) and on chdb. Kinds, and the order of rows at the same event time:

- ``price``: a consensus price one of the account's commands acted on (its provenance
  names the asset and the price's event time; the row is that `consensus_prices` row, or
  the provenance's own figures when the price is not in the archive);
- ``event``: an account event (position, collateral or rules change);
- ``state``: a version of the account's risk state (`account_states`); the net delta per
  underlying is the valuation's exposures in the state record (the engine's own figure);
- ``command``, ``refusal`` (table `refusals`, skipped while the archive has none),
  ``report``, ``deadletter`` (dead letters whose source key is the account).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streams.archive.backends import ArchiveBackend, QueryResult
from streams.archive.migrations import table_exists
from streams.clock import utc

DEFAULT_TIMELINE_LIMIT = 200
REFUSALS_TABLE = "refusals"
KINDS = ("price", "event", "state", "command", "refusal", "report", "deadletter")

COLUMNS = ("time", "kind", "what", "price", "quantity", "amount", "margin_ratio", "equity",
           "maintenance", "net_delta", "detail", "id")
_NUMBER = "Nullable(Float64)"
TYPES = ("DateTime64(3, 'UTC')", "String", "String", _NUMBER, _NUMBER, _NUMBER, _NUMBER,
         _NUMBER, _NUMBER, "String", "String", "String")


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Event times from `start` (inclusive) to `end` (exclusive), epoch ms; None: open."""

    start: int | None = None
    end: int | None = None

    def sql(self, column: str = "event_time") -> tuple[str, dict[str, int]]:
        """` AND ...` clauses on `column` and their parameters."""
        clauses, params = "", {}
        if self.start is not None:
            clauses += f" AND {column} >= {{start:Int64}}"
            params["start"] = self.start
        if self.end is not None:
            clauses += f" AND {column} < {{end:Int64}}"
            params["end"] = self.end
        return clauses, params

    def __contains__(self, event_time: int) -> bool:
        return ((self.start is None or event_time >= self.start)
                and (self.end is None or event_time < self.end))


ALL_TIME = TimeRange()


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the timeline; `tie` orders rows of one kind at the same event time."""

    event_time: int
    kind: str
    what: str
    id: str = ""
    price: float | None = None
    quantity: float | None = None
    amount: float | None = None
    margin_ratio: float | None = None
    equity: float | None = None
    maintenance: float | None = None
    net_delta: str = ""
    detail: str = ""
    tie: tuple[Any, ...] = ()

    def sort_key(self) -> tuple[Any, ...]:
        """Event time, then the kind's place in KINDS, then the kind's own order."""
        return (self.event_time, KINDS.index(self.kind), self.tie)

    def row(self) -> tuple[Any, ...]:
        """The values in COLUMNS order."""
        return (utc(self.event_time), self.kind, self.what, self.price, self.quantity,
                self.amount, self.margin_ratio, self.equity, self.maintenance, self.net_delta,
                self.detail, self.id)


@dataclass(frozen=True, slots=True)
class Timeline:
    """The first `limit` rows of an account's timeline; `truncated` if more exist."""

    entries: list[Entry]
    truncated: bool
    skipped: tuple[str, ...] = ()  # tables absent from this archive

    def result(self) -> QueryResult:
        """The rows as a query result (for the table, CSV and JSON printers)."""
        return QueryResult(COLUMNS, TYPES, [e.row() for e in self.entries])


def account_timeline(backend: ArchiveBackend, account: str, when: TimeRange = ALL_TIME,
                     limit: int = DEFAULT_TIMELINE_LIMIT) -> Timeline:
    """The account's rows of every kind within `when`, in event-time order, at most `limit`.

    Each kind's query takes its own first `limit` rows in the same order, so the merge
    holds the timeline's first `limit` rows.
    """
    readers: list[Callable[[ArchiveBackend, str, TimeRange, int], list[Entry]]] = [
        _prices, _events, _states, _commands, _reports, _dead_letters]
    skipped: tuple[str, ...] = ()
    if table_exists(backend, REFUSALS_TABLE):
        readers.append(_refusals)
    else:
        skipped = (REFUSALS_TABLE,)
    entries = sorted((e for read in readers for e in read(backend, account, when, limit)),
                     key=Entry.sort_key)
    return Timeline(entries[:limit], len(entries) > limit, skipped)


def _select(backend: ArchiveBackend, columns: str, table: str, where: str, account: str,
            when: TimeRange, order: str, limit: int) -> list[dict[str, Any]]:
    clauses, params = when.sql()
    result = backend.query(
        f"SELECT event_time, {columns} FROM {table} FINAL WHERE {where} = {{account:String}}"
        f"{clauses} ORDER BY event_time, {order} LIMIT {{limit:UInt32}}",
        {"account": account, "limit": limit, **params})
    return result.dicts()


# --- prices the account's commands acted on ----------------------------------------------

def _prices(backend: ArchiveBackend, account: str, when: TimeRange,
            limit: int) -> list[Entry]:
    # provenance: asset, price event time (only in the record), price and status
    named = backend.query(
        "SELECT asset, visitParamExtractInt(record, 'price_event_time') AS t, any(price), "
        "any(price_status) FROM commands FINAL WHERE account_id = {account:String} "
        "GROUP BY asset, t ORDER BY t, asset",
        {"account": account}).rows
    wanted = {(asset, int(t)): (price, status) for asset, t, price, status in named
              if int(t) in when}
    if not wanted:
        return []
    times = ", ".join(str(t) for t in sorted({t for _, t in wanted}))  # integers: safe inline
    found = {}
    for row in backend.query(
            "SELECT asset, event_time, price, status, sources_used, sources_excluded, "
            f"sequence, record FROM consensus_prices FINAL WHERE event_time IN ({times}) "
            "ORDER BY event_time, asset, sequence").dicts():
        key = (row["asset"], int(row["event_time"]))
        if key in wanted:
            found.setdefault(key, _consensus_entry(row))
    entries = [found.get(key) or _provenance_entry(key, *wanted[key]) for key in wanted]
    return sorted(entries, key=Entry.sort_key)[:limit]


def _consensus_entry(row: dict[str, Any]) -> Entry:
    excluded = [f"{x['source']} ({x['reason']})"
                for x in json.loads(row["record"]).get("sources_excluded", [])]
    detail = "used: " + ", ".join(row["sources_used"])
    if excluded:
        detail += "; excluded: " + ", ".join(excluded)
    return Entry(int(row["event_time"]), "price", f"{row['asset']} {row['status']}",
                 id=f"{row['asset']}#{row['sequence']}", price=row["price"], detail=detail,
                 tie=(row["asset"],))


def _provenance_entry(key: tuple[str, int], price: float, status: str) -> Entry:
    asset, event_time = key
    return Entry(event_time, "price", f"{asset} {status}", price=price,
                 detail="not in consensus_prices: the figures of the command's provenance",
                 tie=(asset,))


# --- account events and states -----------------------------------------------------------

def _events(backend: ArchiveBackend, account: str, when: TimeRange,
            limit: int) -> list[Entry]:
    rows = _select(backend, "kafka_partition, kafka_offset, event_id, event_type, chain, "
                   "instrument_id, quantity, entry_price, balance_delta, reserve_delta, record",
                   "account_events", "account_id", account, when,
                   "kafka_partition, kafka_offset", limit)
    return [_event_entry(row) for row in rows]


def _event_entry(row: dict[str, Any]) -> Entry:
    kind, tie = row["event_type"], (row["kafka_partition"], row["kafka_offset"])
    base = {"event_time": int(row["event_time"]), "kind": "event", "id": row["event_id"],
            "tie": tie}
    if kind == "PositionChanged":
        return Entry(what=f"{kind} {row['instrument_id']}", quantity=row["quantity"],
                     price=row["entry_price"], detail=f"on {row['chain']}", **base)
    if kind == "CollateralChanged":
        return Entry(what=f"{kind} {row['chain']}", amount=row["balance_delta"],
                     detail=f"reserve delta {row['reserve_delta']:.8g}", **base)
    rules = json.loads(row["record"]).get("body", {}).get("rules")
    return Entry(what=kind, detail=describe_rules(rules), **base)


def describe_rules(rules: dict[str, Any] | None) -> str:
    """The rules in one line: delta band, volatility scaling, ladder steps."""
    if not rules:
        return "no rules"
    parts = []
    if band := rules.get("delta_band"):
        parts.append(f"delta band {band['target']:g} ± {band['band']:g} "
                     f"(hard limit {band['hard_limit']:g})")
    if vol := rules.get("vol_scaling"):
        parts.append(f"vol target {vol['vol_target']:g}, max gamma {vol['max_gamma']:g}")
    for step in ladder_steps(rules):
        parts.append(f"ladder {step[0]:.4g} {step[1]} {step[2]:g}")
    return "; ".join(parts) or "no rules"


def ladder_steps(rules: dict[str, Any] | None) -> list[tuple[float, str, float]]:
    """(margin ratio threshold, action, fraction) of each margin-ladder step, in order."""
    ladder = (rules or {}).get("margin_ladder") or {}
    return [(number(s["margin_ratio"]), s["action"], number(s["fraction"]))
            for s in ladder.get("steps", [])]


def _states(backend: ArchiveBackend, account: str, when: TimeRange,
            limit: int) -> list[Entry]:
    rows = _select(backend, "kafka_timestamp, kafka_offset, version, deleted, equity, "
                   "maintenance_margin, margin_ratio, breached_maintenance, record",
                   "account_states", "account_id", account, when,
                   "version, kafka_timestamp, kafka_offset", limit)
    return [_state_entry(row) for row in rows]


def _state_entry(row: dict[str, Any]) -> Entry:
    tie = (row["version"], row["kafka_timestamp"], row["kafka_offset"])
    if row["deleted"]:
        return Entry(int(row["event_time"]), "state", "deleted (changelog tombstone)", tie=tie)
    record = json.loads(row["record"])
    what = f"version {row['version']}" + (" breached" if row["breached_maintenance"] else "")
    return Entry(int(row["event_time"]), "state", what, id=str(row["version"]),
                 margin_ratio=row["margin_ratio"], equity=row["equity"],
                 maintenance=row["maintenance_margin"],
                 net_delta=", ".join(f"{u} {d:+.6g}" for u, d in net_deltas(record).items()),
                 detail=f"{len(record['positions'])} positions, {len(record['pending'])} "
                        "pending", tie=tie)


def net_deltas(state: dict[str, Any]) -> dict[str, float]:
    """Net delta per underlying of a state record (its valuation's exposures); {} unvalued."""
    valuation = state.get("valuation") or {}
    return {x["underlying"]: number(x["delta"]) for x in valuation.get("exposures", [])}


def number(value: Any) -> float:
    """A double of a `record` (where NaN and infinities are "NaN", "Infinity", "-Infinity")."""
    return float(value)


# --- what the engine and the executors did -------------------------------------------------

def _commands(backend: ArchiveBackend, account: str, when: TimeRange,
              limit: int) -> list[Entry]:
    rows = _select(backend, "command_id, chain, reason, rule, action, side, instrument_id, "
                   "quantity, amount, limit_price, price, price_status", "commands",
                   "account_id", account, when, "command_id", limit)
    return [Entry(int(r["event_time"]), "command", _command_what(r), id=r["command_id"],
                  price=r["price"], quantity=r["quantity"] if r["action"] == "TRADE" else None,
                  amount=r["amount"] if r["action"] == "TOP_UP" else None,
                  detail=f"on {r['chain']}, price {r['price_status']}"
                         + (f", limit {r['limit_price']:.8g}" if r["action"] == "TRADE" else ""),
                  tie=(r["command_id"],))
            for r in rows]


def _command_what(row: dict[str, Any]) -> str:
    words: Iterable[str | None] = (row["reason"], row["rule"], row["side"] or row["action"],
                                   row["instrument_id"])
    return " ".join(w for w in words if w)


def _reports(backend: ArchiveBackend, account: str, when: TimeRange,
             limit: int) -> list[Entry]:
    rows = _select(backend, "report_id, command_id, status, reason, action, instrument_id, "
                   "filled_quantity, fill_price, fee, top_up_amount, venue",
                   "execution_reports", "account_id", account, when, "report_id", limit)
    return [Entry(int(r["event_time"]), "report", _report_what(r), id=r["report_id"],
                  price=r["fill_price"] if r["action"] == "TRADE" else None,
                  quantity=r["filled_quantity"] if r["action"] == "TRADE" else None,
                  amount=r["top_up_amount"] if r["action"] == "TOP_UP" else None,
                  detail=_report_detail(r), tie=(r["report_id"],))
            for r in rows]


def _report_what(row: dict[str, Any]) -> str:
    return " ".join(w for w in (row["status"], row["action"], row["instrument_id"]) if w)


def _report_detail(row: dict[str, Any]) -> str:
    parts = [f"command {row['command_id']}", f"venue {row['venue']}"]
    if row["status"] == "FILLED":
        parts.append(f"fee {row['fee']:.8g}")
    if row["reason"]:
        parts.append(row["reason"])
    return ", ".join(parts)


def _refusals(backend: ArchiveBackend, account: str, when: TimeRange,
              limit: int) -> list[Entry]:
    rows = _select(backend, "kafka_partition, kafka_offset, rule, reason, detail",
                   REFUSALS_TABLE, "account_id", account, when,
                   "kafka_partition, kafka_offset", limit)
    return [Entry(int(r["event_time"]), "refusal", f"{r['rule']} {r['reason']}".strip(),
                  detail=r["detail"], tie=(r["kafka_partition"], r["kafka_offset"]))
            for r in rows]


def _dead_letters(backend: ArchiveBackend, account: str, when: TimeRange,
                  limit: int) -> list[Entry]:
    rows = _select(backend, "kafka_partition, kafka_offset, stage, reason, detail, "
                   "source_topic, source_partition, source_offset", "dead_letters",
                   "source_key", account, when, "kafka_partition, kafka_offset", limit)
    return [Entry(int(r["event_time"]), "deadletter", f"{r['stage']} {r['reason']}",
                  id=f"{r['source_topic']}:{r['source_partition']}:{r['source_offset']}",
                  detail=r["detail"], tie=(r["kafka_partition"], r["kafka_offset"]))
            for r in rows]
