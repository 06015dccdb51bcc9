"""Queries behind `aps history`: what a risk engineer asks the archive.

Every query reads its table with FINAL, so a message archived twice (after a crash
between insert and commit) is seen once. The SQL runs unchanged on ClickHouse 18.16 and
on chdb 26.x; parameters use ClickHouse's ``{name:Type}`` syntax.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.archive.backends import ArchiveBackend, ArchiveMissingError, QueryResult, open_archive
from streams.archive.migrations import MIGRATIONS_TABLE, table_exists
from streams.archive.rows import ALL_TABLES
from streams.config import Settings

DEFAULT_LIMIT = 20


@dataclass(frozen=True, slots=True)
class Filter:
    """An optional equality filter: column = value when value is given."""

    column: str
    value: str | None


def open_history(settings: Settings) -> ArchiveBackend:
    """The configured archive for reading; ArchiveMissingError if nothing was archived there."""
    backend = open_archive(settings, create=False)
    if not table_exists(backend, MIGRATIONS_TABLE):
        location = backend.location
        backend.close()
        raise ArchiveMissingError(
            f"the archive at {location} has no tables yet: nothing has been archived "
            "(run `aps run` or `aps archiver` first)")
    return backend


def _where(filters: list[Filter]) -> tuple[str, dict[str, object]]:
    clauses, params = [], {}
    for i, flt in enumerate(f for f in filters if f.value is not None):
        clauses.append(f"{flt.column} = {{p{i}:String}}")
        params[f"p{i}"] = flt.value
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _recent(backend: ArchiveBackend, select: str, table: str, filters: list[Filter],
            order: str, limit: int) -> QueryResult:
    where, params = _where(filters)
    params["limit"] = limit
    return backend.query(
        f"SELECT {select} FROM {table} FINAL{where} ORDER BY {order} LIMIT {{limit:UInt32}}",
        params)


def commands(backend: ArchiveBackend, limit: int = DEFAULT_LIMIT, *, account: str | None = None,
             chain: str | None = None, reason: str | None = None) -> QueryResult:
    """Scaling commands, newest first (event time), optionally for one account/chain/reason."""
    return _recent(
        backend,
        "command_id AS id, event_dt AS time, account_id AS account, chain, reason, rule, "
        "action, side, quantity, amount, price",
        "commands",
        [Filter("account_id", account), Filter("chain", chain), Filter("reason", reason)],
        "event_time DESC, command_id DESC", limit)


def prices(backend: ArchiveBackend, limit: int = DEFAULT_LIMIT, *, asset: str | None = None,
           status: str | None = None) -> QueryResult:
    """Consensus prices, newest first."""
    return _recent(
        backend,
        "asset, event_dt AS time, price, confidence, status, dispersion_bps, sources_used, "
        "sources_excluded, sequence",
        "consensus_prices", [Filter("asset", asset), Filter("status", status)],
        "event_time DESC, asset, sequence DESC", limit)


def reports(backend: ArchiveBackend, limit: int = DEFAULT_LIMIT, *, account: str | None = None,
            chain: str | None = None, status: str | None = None) -> QueryResult:
    """Execution reports, newest first."""
    return _recent(
        backend,
        "report_id AS id, event_dt AS time, command_id, account_id AS account, chain, status, "
        "reason, action, instrument_id AS instrument, filled_quantity, fill_price, fee, "
        "top_up_amount",
        "execution_reports",
        [Filter("account_id", account), Filter("chain", chain), Filter("status", status)],
        "event_time DESC, report_id DESC", limit)


def dead_letters(backend: ArchiveBackend, limit: int = DEFAULT_LIMIT, *,
                 stage: str | None = None, reason: str | None = None) -> QueryResult:
    """Dead letters, newest first."""
    return _recent(
        backend,
        "event_dt AS time, stage, reason, detail, source_topic, source_partition, "
        "source_offset, payload_size",
        "dead_letters", [Filter("stage", stage), Filter("reason", reason)],
        "event_time DESC, topic, kafka_partition, kafka_offset DESC", limit)


def undecodable(backend: ArchiveBackend, limit: int = DEFAULT_LIMIT, *,
                topic: str | None = None, reason: str | None = None) -> QueryResult:
    """Messages the archiver could not decode, newest first."""
    return _recent(
        backend,
        "event_dt AS time, topic, kafka_partition AS partition, kafka_offset AS offset, reason, "
        "detail, payload_size",
        "undecodable_messages", [Filter("topic", topic), Filter("reason", reason)],
        "event_time DESC, topic, kafka_partition, kafka_offset DESC", limit)


def accounts(backend: ArchiveBackend, limit: int = DEFAULT_LIMIT, *,
             account: str | None = None) -> QueryResult:
    """Latest state of each account (deleted ones left out), lowest margin ratio first.

    "Latest" is the last changelog record of the account (Kafka timestamp, then offset);
    accounts never valued (no margin ratio) come last.
    """
    where, params = _where([Filter("account_id", account)])
    params["limit"] = limit
    return backend.query(
        "SELECT account_id AS account, event_dt AS time, version, margin_ratio, "
        "min_margin_ratio AS min_ratio, equity, maintenance_margin AS maintenance, "
        "stress_loss, collateral, reserve, positions, pending, "
        "breached_maintenance AS breached FROM ("
        " SELECT * FROM account_states FINAL" + where +
        " ORDER BY account_id, kafka_timestamp DESC, kafka_offset DESC LIMIT 1 BY account_id"
        ") WHERE deleted = 0 ORDER BY margin_ratio ASC, account LIMIT {limit:UInt32}",
        params)


def counts(backend: ArchiveBackend) -> QueryResult:
    """Messages per table and topic: distinct (FINAL) and stored (copies not merged yet)."""
    rows = []
    for spec in ALL_TABLES:
        distinct = dict(backend.query(
            f"SELECT topic, count() FROM {spec.name} FINAL GROUP BY topic").rows)
        stored = dict(backend.query(
            f"SELECT topic, count() FROM {spec.name} GROUP BY topic").rows)
        if not stored:
            rows.append((spec.name, "", 0, 0))
        rows.extend((spec.name, topic, distinct.get(topic, 0), stored[topic])
                    for topic in sorted(stored))
    return QueryResult(("table", "topic", "messages", "stored"),
                       ("String", "String", "UInt64", "UInt64"), rows)


def sql(backend: ArchiveBackend, text: str) -> QueryResult:
    """An ad-hoc query, read-only (statements that would write are refused)."""
    return backend.query(text, readonly=True)
