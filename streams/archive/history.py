"""Queries behind `aps history`: what a risk engineer asks the archive.

Every query reads its table with FINAL, so a message archived twice (after a crash
between insert and commit) is seen once. The SQL runs unchanged on ClickHouse 18.16 and
on chdb 26.x; parameters use ClickHouse's ``{name:Type}`` syntax.

`sql` runs ad-hoc queries, and only over the archive: ClickHouse's own parser (chdb's,
for both backends; parsing runs nothing) must find one SELECT whose tables are all in the
archive's database, with no table function (file(), url(), remote() ...) and no function
that reads outside it (file(), dictGet(), joinGet() ...); then it runs read-only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.archive.backends import (
    ArchiveBackend,
    ArchiveError,
    ArchiveMissingError,
    QueryResult,
    chdb_query,
    local_session,
    open_archive,
)
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


def refusals(backend: ArchiveBackend, limit: int = DEFAULT_LIMIT, *,
             account: str | None = None, reason: str | None = None) -> QueryResult:
    """Actions the policy refused (cooldown, rate_limited, max_notional ...), newest first
    (event time), optionally for one account / reason; `values` is the JSON map of the
    numbers that decided each."""
    return _recent(
        backend,
        "event_dt AS time, account_id AS account, rule, reason, detail, "
        "visitParamExtractRaw(record, 'values') AS values",
        "refusals", [Filter("account_id", account), Filter("reason", reason)],
        "event_time DESC, account_id, topic, kafka_partition, kafka_offset DESC", limit)


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
    """An ad-hoc SELECT over the archive's tables, read-only (see the module docstring)."""
    database = str(backend.query("SELECT currentDatabase()").scalar())
    session = local_session(backend.location if backend.kind == "chdb" else None)
    try:
        check_archive_query(text, database, lambda q, p=None: _lines(session, q, p))
    finally:
        session.close()
    return backend.query(text, readonly=True)


class QueryRefusedError(ArchiveError):
    """An ad-hoc query that is not one SELECT over the archive's own tables."""


# functions that read what is not in the archive: files, dictionaries, other tables, models
_DENIED_FUNCTIONS = {"file", "hascolumnintable", "catboostevaluate", "modelevaluate"}
_DENIED_PREFIXES = ("dict", "joinget")
_IN_FUNCTIONS = {"in", "notin", "globalin", "globalnotin", "nullin", "notnullin",
                 "globalnullin", "globalnotnullin"}
_LINE = re.compile(r"^( *)(\w+)(?: (.*?))?(?: \(alias [^)]*\))?(?: \(children \d+\))?$")


@dataclass
class _AstNode:
    kind: str
    text: str
    children: list[_AstNode] = field(default_factory=list)


Parse = Callable[..., list[str]]


def check_archive_query(text: str, database: str, parse: Parse) -> None:
    """Refuse (QueryRefusedError) anything but one SELECT over tables of `database`.

    `parse(sql, params)` runs a statement on chdb and returns its output lines.
    """
    try:
        parse("SELECT formatQuery({q:String})", {"q": text})  # one statement, or a refusal
        lines = parse("EXPLAIN AST " + text)
    except ArchiveError as exc:
        raise QueryRefusedError(f"not a single valid query: {_first_line(exc)}") from None
    root = _tree(lines)
    if root is None or root.kind != "SelectWithUnionQuery":
        raise QueryRefusedError("only SELECT queries are allowed")
    _check(root, database)


def _check(node: _AstNode, database: str) -> None:
    if node.kind == "SelectWithUnionQuery" and len(node.children) != 1:
        raise QueryRefusedError("FORMAT and INTO OUTFILE are not allowed (use --format)")
    if node.kind == "TableIdentifier":
        _check_table(node.text, database)
    if node.kind == "TableExpression" and node.children and node.children[0].kind == "Function":
        raise QueryRefusedError(f"table functions are not allowed: {node.children[0].text}()")
    if node.kind == "Function":
        name = node.text.lower()
        if name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES):
            raise QueryRefusedError(f"function {node.text}() reads outside the archive")
        arguments = node.children[0].children if node.children else []
        if name in _IN_FUNCTIONS and len(arguments) == 2 and arguments[1].kind == "Identifier":
            _check_table(arguments[1].text, database)  # `x IN table`
    for child in node.children:
        _check(child, database)


def _check_table(name: str, database: str) -> None:
    qualifier, _, _ = name.rpartition(".")
    if qualifier and qualifier != database:
        raise QueryRefusedError(
            f"table {name} is outside the archive: only the tables of database {database} "
            "(see `aps history counts`) can be queried")


def _tree(lines: list[str]) -> _AstNode | None:
    """EXPLAIN AST output (one node per line, indented by depth) as a tree."""
    root: _AstNode | None = None
    stack: list[tuple[int, _AstNode]] = []
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            raise QueryRefusedError("the query could not be analysed")
        depth, node = len(match.group(1)), _AstNode(match.group(2), match.group(3) or "")
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            stack[-1][1].children.append(node)
        elif root is None:
            root = node
        else:
            raise QueryRefusedError("only one query is allowed")
        stack.append((depth, node))
    return root


def _lines(session: object, query: str, params: dict[str, str] | None = None) -> list[str]:
    raw = bytes(chdb_query(session, query, "TSVRaw", params).bytes())
    return [line for line in raw.decode("utf-8", "replace").split("\n") if line]


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
