"""Archive rows: a Kafka message (coordinates + Avro bytes) -> the row of its ClickHouse table.

Pure: no I/O, no clock (the archive time is passed in), no randomness. Every table starts
with the same Kafka coordinates and times, ends with the full record as JSON, and has typed
columns in between for what users filter and aggregate on. The column lists here must
match the DDL in infra/clickhouse/*.sql (a test compares them against both backends).

Each table has two builders of its typed columns: `build`, per decoded datum (a dict from
fastavro), and `columnar`, per batch of decoded Arrow columns (`streams.archive.columnar`,
what the archiver runs). The per-row one is the reference: `archive_row` maps one message
with it, and a test proves that both produce identical rows for every table. The columnar
path falls back to `archive_row` for the messages it cannot map (undecodable ones, changelog
tombstones, the rare rows flagged in `Decoded.flagged`).

To archive a new topic: add a migration creating its table, a `TableSpec` (columns and both
builders) below, and one line in `TABLES_BY_SCHEMA` (its value schema) or, for a Faust
table changelog, in `CHANGELOG_SCHEMAS`. Without a `columnar` builder it is archived per row.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streams.archive.avroarrow import Decoded, regroup, utf8_or_escaped
from streams.codecs.avro import decode_datum
from streams.errors import CodecError
from streams.topics import schema_for_topic

Datum = dict[str, Any]

# Faust table changelogs (topic "<app id>-<table>-changelog"): value schema of each. Keys
# are the raw UTF-8 table keys, values single-object encoded (None = key deleted).
CHANGELOG_SCHEMAS: dict[str, str] = {
    "aps-risk-accounts-changelog": "aps.AccountState",
}

DATETIME_MAX = 2**32 - 1  # ClickHouse DateTime is an unsigned 32-bit count of seconds
# fastavro's error messages may name a Python object ("<_io.BytesIO object at 0x7f...>"):
# the address is dropped so that a row is a function of the message alone
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass(frozen=True, slots=True)
class Column:
    """One column of an archive table: name and ClickHouse type."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class KafkaMessage:
    """A consumed message: coordinates, key, value and broker timestamp (epoch ms, -1 if none)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = -1


RowBuilder = Callable[[Datum], tuple[int, tuple[Any, ...]]]
# (event time in epoch ms, the typed columns in `typed` order), one value per row
ColumnarBuilder = Callable[[Decoded], tuple[pa.Array, list[Any]]]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """An archive table: its name, its columns and how a decoded datum becomes its row.

    `build` returns (event time in epoch ms, the typed columns in `columns` order); the
    common Kafka columns and the JSON record are added by `archive_row`.
    """

    name: str
    typed: tuple[Column, ...]
    build: RowBuilder | None
    columnar: ColumnarBuilder | None = None
    has_record: bool = True
    tombstone: Callable[[str], tuple[Any, ...]] | None = None  # changelogs: key deleted
    # an event time below 0 (unknown) is replaced by the Kafka timestamp
    unknown_time_is_kafka: bool = False

    @property
    def columns(self) -> tuple[Column, ...]:
        """Every column of the table, in insert order."""
        tail = (Column("record", "String"),) if self.has_record else ()
        return COMMON_COLUMNS + self.typed + tail

    @property
    def column_names(self) -> tuple[str, ...]:
        """Names of `columns`."""
        return tuple(c.name for c in self.columns)


COMMON_COLUMNS = (
    Column("topic", "String"),
    Column("kafka_partition", "Int32"),
    Column("kafka_offset", "Int64"),
    Column("kafka_key", "String"),
    Column("kafka_timestamp", "Int64"),
    Column("event_time", "Int64"),
    Column("event_dt", "DateTime('UTC')"),
    Column("archived_at", "DateTime('UTC')"),
)


def _cols(spec: str) -> tuple[Column, ...]:
    """Columns from a compact 'name Type, name Type' list."""
    out = []
    for item in spec.split(","):
        name, type_ = item.strip().split(" ", 1)
        out.append(Column(name, type_.strip()))
    return tuple(out)


def _short(name: str) -> str:
    """`aps.PositionChanged` -> `PositionChanged`."""
    return name.rsplit(".", 1)[-1]


def _instrument_id(instrument: Datum | None) -> str | None:
    return instrument["instrument_id"] if instrument else None


# --- row builders: datum -> (event time ms, typed columns) ----------------------------------

def _oracle_tick(d: Datum) -> tuple[int, tuple[Any, ...]]:
    body_name, body = d["body"]
    body_type = _short(body_name)
    if body_type == "ChainlinkRound":
        raw, expo, conf, source_time = body["answer"], None, None, body["updated_at"]
        round_id = body["round_id"]
    else:
        raw, expo, conf, source_time = str(body["price"]), body["expo"], body["conf"], \
            body["publish_time"]
        round_id = ""
    return d["received_at"], (d["chain"], d["source"], d["feed_id"], body_type, round_id, raw,
                              expo, conf, source_time)


def _oracle_tick_columns(d: Decoded) -> tuple[pa.Array, list[Any]]:
    cl, pyth = "ChainlinkRound", "PythPriceUpdate"
    return d.col("received_at"), [
        d.col("chain"), d.enum("source"), d.col("feed_id"), d.branch_names("body"),
        pc.fill_null(d.branch("body", cl, "round_id"), b""),
        pc.coalesce(d.branch("body", cl, "answer").cast(pa.string()),
                    d.branch("body", pyth, "price").cast(pa.string())),
        d.branch("body", pyth, "expo"), d.branch("body", pyth, "conf"),
        pc.coalesce(d.branch("body", cl, "updated_at"), d.branch("body", pyth, "publish_time")),
    ]


def _consensus_price(d: Datum) -> tuple[int, tuple[Any, ...]]:
    return d["event_time"], (
        d["asset"], d["price"], d["confidence"], d["status"], d["dispersion_bps"],
        list(d["sources_used"]), [s["source"] for s in d["sources_excluded"]],
        list(d["unhealthy_chains"]), d["sequence"],
    )


def _consensus_price_columns(d: Decoded) -> tuple[pa.Array, list[Any]]:
    excluded = d.col("sources_excluded")
    names = pc.struct_field(pc.list_flatten(excluded), ["source"])
    return d.col("event_time"), [
        d.col("asset"), d.col("price"), d.col("confidence"), d.enum("status"),
        d.col("dispersion_bps"), d.col("sources_used"), regroup(excluded, names),
        d.col("unhealthy_chains"), d.col("sequence"),
    ]


def _account_event_columns(d: Datum) -> tuple[Any, ...]:
    body_name, body = d["body"]
    body_type = _short(body_name)
    chain, instrument_id, quantity, entry_price = "", None, None, None
    balance_delta = reserve_delta = None
    if body_type == "PositionChanged":
        position = body["position"]
        chain = position["instrument"]["chain"]
        instrument_id = position["instrument"]["instrument_id"]
        quantity, entry_price = position["quantity"], position["entry_price"]
    elif body_type == "CollateralChanged":
        chain, balance_delta, reserve_delta = (body["chain"], body["balance_delta"],
                                               body["reserve_delta"])
    return (d["event_id"], d["account_id"], body_type, chain, instrument_id, quantity,
            entry_price, balance_delta, reserve_delta)


def _account_event(d: Datum) -> tuple[int, tuple[Any, ...]]:
    return d["event_time"], _account_event_columns(d)


def _account_event_columnar(d: Decoded) -> tuple[pa.Array, list[Any]]:
    changed, collateral = "PositionChanged", "CollateralChanged"
    return d.col("event_time"), [
        d.col("event_id"), d.col("account_id"), d.branch_names("body"),
        pc.coalesce(d.branch("body", changed, "position.instrument.chain"),
                    d.branch("body", collateral, "chain"), pa.scalar(b"", pa.binary())),
        d.branch("body", changed, "position.instrument.instrument_id"),
        d.branch("body", changed, "position.quantity"),
        d.branch("body", changed, "position.entry_price"),
        d.branch("body", collateral, "balance_delta"),
        d.branch("body", collateral, "reserve_delta"),
    ]


def _risk_input(d: Datum) -> tuple[int, tuple[Any, ...]]:
    body_name, body = d["body"]
    body_type = _short(body_name)
    if body_type == "AccountEvent":
        event_time, account_id, asset = body["event_time"], body["account_id"], ""
    elif body_type == "ConsensusPrice":
        event_time, account_id, asset = body["event_time"], "", body["asset"]
    else:  # ExecutionReport
        event_time, account_id, asset = body["executed_at"], body["account_id"], ""
    return event_time, (d["origin_topic"], d["origin_partition"], d["origin_offset"], body_type,
                        account_id, asset)


def _risk_input_columns(d: Decoded) -> tuple[pa.Array, list[Any]]:
    event, price, report = "AccountEvent", "ConsensusPrice", "ExecutionReport"
    empty = pa.scalar(b"", pa.binary())
    return pc.coalesce(d.branch("body", event, "event_time"),
                       d.branch("body", price, "event_time"),
                       d.branch("body", report, "executed_at")), [
        d.col("origin_topic"), d.col("origin_partition"), d.col("origin_offset"),
        d.branch_names("body"),
        pc.coalesce(d.branch("body", event, "account_id"),
                    d.branch("body", report, "account_id"), empty),
        pc.coalesce(d.branch("body", price, "asset"), empty),
    ]


def _command(d: Datum) -> tuple[int, tuple[Any, ...]]:
    p = d["provenance"]
    return d["created_at"], (
        d["command_id"], d["account_id"], d["chain"], d["reason"], d["rule"], d["action"],
        _instrument_id(d["instrument"]), p["asset"], d["side"], d["quantity"], d["amount"],
        d["limit_price"], d["slippage_bps"], int(d["reduce_only"]), d["created_at"],
        d["deadline"], p["price"], p["confidence"], p["price_status"], p["state_version"],
        p["rules_hash"], p["config_hash"], d["signature"],
    )


def _command_columns(d: Decoded) -> tuple[pa.Array, list[Any]]:
    return d.col("created_at"), [
        d.col("command_id"), d.col("account_id"), d.col("chain"), d.enum("reason"),
        d.col("rule"), d.enum("action"), d.col("instrument.instrument_id"),
        d.col("provenance.asset"), d.enum("side"), d.col("quantity"), d.col("amount"),
        d.col("limit_price"), d.col("slippage_bps"), d.col("reduce_only"), d.col("created_at"),
        d.col("deadline"), d.col("provenance.price"), d.col("provenance.confidence"),
        d.enum("provenance.price_status"), d.col("provenance.state_version"),
        d.col("provenance.rules_hash"), d.col("provenance.config_hash"), d.col("signature"),
    ]


def _execution_report(d: Datum) -> tuple[int, tuple[Any, ...]]:
    return d["executed_at"], (
        d["report_id"], d["command_id"], d["account_id"], d["chain"], d["status"], d["reason"],
        d["action"], _instrument_id(d["instrument"]), d["filled_quantity"], d["fill_price"],
        d["fee"], d["top_up_amount"], d["executed_at"], d["venue"],
    )


def _execution_report_columns(d: Decoded) -> tuple[pa.Array, list[Any]]:
    return d.col("executed_at"), [
        d.col("report_id"), d.col("command_id"), d.col("account_id"), d.col("chain"),
        d.enum("status"), d.col("reason"), d.enum("action"), d.col("instrument.instrument_id"),
        d.col("filled_quantity"), d.col("fill_price"), d.col("fee"), d.col("top_up_amount"),
        d.col("executed_at"), d.col("venue"),
    ]


def _dead_letter(d: Datum) -> tuple[int, tuple[Any, ...]]:
    return d["event_time"], (
        d["stage"], d["reason"], d["detail"], d["source_topic"], d["source_partition"],
        d["source_offset"], _text(d["key"]), len(d["payload"]),
    )


def _dead_letter_columns(d: Decoded) -> tuple[pa.Array, list[Any]]:
    return d.col("event_time"), [
        d.col("stage"), d.col("reason"), d.col("detail"), d.col("source_topic"),
        d.col("source_partition"), d.col("source_offset"), utf8_or_escaped(d.col("key")),
        pc.binary_length(d.col("payload")),
    ]


def _refusal(d: Datum) -> tuple[int, tuple[Any, ...]]:
    return d["event_time"], (d["account_id"], d["rule"], d["reason"], d["detail"])


def _refusal_columns(d: Decoded) -> tuple[pa.Array, list[Any]]:
    return d.col("event_time"), [
        d.col("account_id"), d.col("rule"), d.col("reason"), d.col("detail"),
    ]


def _account_state_deleted(account_id: str) -> tuple[Any, ...]:
    return (account_id, 1, 0, 0, 0, "", None, None, None, None, 0.0, 0, 0.0, 0.0)


def _account_state(d: Datum) -> tuple[int, tuple[Any, ...]]:
    valuation = d["valuation"]
    equity = maintenance = ratio = stress = None
    if valuation is not None:
        equity, maintenance = valuation["equity"], valuation["maintenance_margin"]
        ratio, stress = valuation["margin_ratio"], valuation["stress_loss"]
    return d["last_event_time"], (
        d["account_id"], 0, d["version"], len(d["positions"]), len(d["pending"]),
        d["rules_hash"], equity, maintenance, ratio, stress, d["min_margin_ratio"],
        int(d["breached_maintenance"]), math.fsum(c["balance"] for c in d["collateral"]),
        math.fsum(c["reserve"] for c in d["collateral"]),
    )


def _account_state_columns(d: Decoded) -> tuple[pa.Array, list[Any]]:
    return d.col("last_event_time"), [
        d.col("account_id"), pa.array(np.zeros(d.rows, np.uint8)), d.col("version"),
        d.length("positions"), d.length("pending"), d.col("rules_hash"),
        d.col("valuation.equity"), d.col("valuation.maintenance_margin"),
        d.col("valuation.margin_ratio"), d.col("valuation.stress_loss"),
        d.col("min_margin_ratio"), d.col("breached_maintenance"),
        exact_sums(d, "collateral", "balance"), exact_sums(d, "collateral", "reserve"),
    ]


def exact_sums(d: Decoded, path: str, field: str) -> pa.Array:
    """Per row, `math.fsum` of `field` over the records of the array at `path`.

    A plain sum of up to two finite items is already the correctly rounded one; longer lists
    and non-finite sums go through math.fsum, and rows where it raises are flagged.
    """
    lists = d.col(path)
    items = pc.struct_field(pc.list_flatten(lists), [field]).to_numpy()
    lengths = pc.list_value_length(lists).to_numpy()
    starts = np.cumsum(lengths) - lengths
    padded = np.append(items, 0.0)  # position len(items) stands for "no item"
    first = padded[np.where(lengths > 0, starts, len(items))]
    second = padded[np.where(lengths > 1, starts + 1, len(items))]
    with np.errstate(invalid="ignore", over="ignore"):
        sums = first + second
    for row in np.flatnonzero((lengths > 2) | ~np.isfinite(sums)):
        try:
            sums[row] = math.fsum(items[starts[row]:starts[row] + lengths[row]])
        except (ValueError, OverflowError):  # what makes the reference "unmappable"
            d.flagged[row] = True
    return pa.array(sums, pa.float64())


# --- the tables --------------------------------------------------------------------------

ORACLE_TICKS = TableSpec("oracle_ticks", _cols(
    "chain String, source String, feed_id String, body_type String, round_id String, "
    "raw_price String, expo Nullable(Int32), conf Nullable(Int64), source_time Int64"),
    _oracle_tick, _oracle_tick_columns)
CONSENSUS_PRICES = TableSpec("consensus_prices", _cols(
    "asset String, price Float64, confidence Float64, status String, dispersion_bps Float64, "
    "sources_used Array(String), sources_excluded Array(String), "
    "unhealthy_chains Array(String), sequence Int64"), _consensus_price,
    _consensus_price_columns)
ACCOUNT_EVENTS = TableSpec("account_events", _cols(
    "event_id String, account_id String, event_type String, chain String, "
    "instrument_id Nullable(String), quantity Nullable(Float64), "
    "entry_price Nullable(Float64), balance_delta Nullable(Float64), "
    "reserve_delta Nullable(Float64)"), _account_event, _account_event_columnar)
RISK_INPUTS = TableSpec("risk_inputs", _cols(
    "origin_topic String, origin_partition Int32, origin_offset Int64, body_type String, "
    "account_id String, asset String"), _risk_input, _risk_input_columns)
COMMANDS = TableSpec("commands", _cols(
    "command_id String, account_id String, chain String, reason String, rule String, "
    "action String, instrument_id Nullable(String), asset String, side Nullable(String), "
    "quantity Float64, amount Float64, limit_price Float64, slippage_bps Float64, "
    "reduce_only UInt8, created_at Int64, deadline Int64, price Float64, confidence Float64, "
    "price_status String, state_version Int64, rules_hash String, config_hash String, "
    "signature String"),
    _command, _command_columns)
EXECUTION_REPORTS = TableSpec("execution_reports", _cols(
    "report_id String, command_id String, account_id String, chain String, status String, "
    "reason String, action String, instrument_id Nullable(String), filled_quantity Float64, "
    "fill_price Float64, fee Float64, top_up_amount Float64, executed_at Int64, venue String"),
    _execution_report, _execution_report_columns)
DEAD_LETTERS = TableSpec("dead_letters", _cols(
    "stage String, reason String, detail String, source_topic String, "
    "source_partition Int32, source_offset Int64, source_key String, payload_size Int64"),
    _dead_letter, _dead_letter_columns, unknown_time_is_kafka=True)
ACCOUNT_STATES = TableSpec("account_states", _cols(
    "account_id String, deleted UInt8, version Int64, positions UInt32, pending UInt32, "
    "rules_hash String, equity Nullable(Float64), maintenance_margin Nullable(Float64), "
    "margin_ratio Nullable(Float64), stress_loss Nullable(Float64), "
    "min_margin_ratio Float64, breached_maintenance UInt8, collateral Float64, "
    "reserve Float64"), _account_state, _account_state_columns,
    tombstone=_account_state_deleted)
REFUSALS = TableSpec("refusals", _cols(
    "account_id String, rule String, reason String, detail String"), _refusal,
    _refusal_columns)
UNDECODABLE = TableSpec("undecodable_messages", _cols(
    "reason String, detail String, expected_schema String, payload_size Int64, "
    "payload_hex String, key_hex String"), None, has_record=False)

TABLES_BY_SCHEMA: dict[str, TableSpec] = {
    "aps.OracleObservation": ORACLE_TICKS,
    "aps.ConsensusPrice": CONSENSUS_PRICES,
    "aps.AccountEvent": ACCOUNT_EVENTS,
    "aps.RiskInput": RISK_INPUTS,
    "aps.ScalingCommand": COMMANDS,
    "aps.ExecutionReport": EXECUTION_REPORTS,
    "aps.DeadLetter": DEAD_LETTERS,
    "aps.AccountState": ACCOUNT_STATES,
    "aps.ActionRefused": REFUSALS,
}

ALL_TABLES: tuple[TableSpec, ...] = (*TABLES_BY_SCHEMA.values(), UNDECODABLE)


def table_by_name(name: str) -> TableSpec:
    """An archive table by its ClickHouse name."""
    for spec in ALL_TABLES:
        if spec.name == name:
            return spec
    raise KeyError(name)


def expected_schema(topic: str) -> str | None:
    """Value schema of an archived topic (APS topic or Faust changelog), None if unknown."""
    return CHANGELOG_SCHEMAS.get(topic) or schema_for_topic(topic)


# --- message -> row ------------------------------------------------------------------------

def archive_row(message: KafkaMessage, archived_at: int) -> tuple[TableSpec, tuple[Any, ...]]:
    """The table and row of one consumed message; anything undecodable goes to UNDECODABLE.

    `archived_at` is epoch seconds (the caller's clock): the only input not in the message.
    """
    expected = expected_schema(message.topic)
    if expected is None:
        return _undecodable(message, archived_at, "unknown_topic",
                            f"no schema is mapped to topic {message.topic!r}", "")
    spec = TABLES_BY_SCHEMA[expected]
    if message.value is None:
        if spec.tombstone is not None and message.topic in CHANGELOG_SCHEMAS:
            # a deleted table key: no event time of its own, the broker's stands in
            return spec, (*_common(message, message.timestamp, archived_at),
                          *spec.tombstone(_text(message.key)), "null")
        return _undecodable(message, archived_at, "empty_value", "message has no value",
                            expected)
    try:
        writer, datum = decode_datum(message.value)
    except CodecError as exc:
        return _undecodable(message, archived_at, exc.reason, str(exc), expected)
    if writer != expected:
        return _undecodable(message, archived_at, "wrong_schema",
                            f"topic expects {expected}, message is {writer}", expected)
    assert spec.build is not None
    try:
        event_time, typed = spec.build(datum)
    except (KeyError, TypeError, ValueError, IndexError, ArithmeticError) as exc:
        return _undecodable(message, archived_at, "unmappable",
                            f"{type(exc).__name__}: {exc}", expected)
    if spec.unknown_time_is_kafka and event_time < 0:
        event_time = message.timestamp  # a dead letter whose input had no event time
    return spec, (*_common(message, event_time, archived_at), *typed, record_json(datum))


def _common(message: KafkaMessage, event_time: int, archived_at: int) -> tuple[Any, ...]:
    return (message.topic, message.partition, message.offset, _text(message.key),
            message.timestamp, event_time, datetime_seconds(event_time), archived_at)


def _undecodable(message: KafkaMessage, archived_at: int, reason: str, detail: str,
                 expected: str) -> tuple[TableSpec, tuple[Any, ...]]:
    value = message.value or b""
    return UNDECODABLE, (
        *_common(message, message.timestamp, archived_at), reason,
        _ADDRESS.sub("", detail)[:2000], expected,
        len(value), value.hex(), (message.key or b"").hex(),
    )


def datetime_seconds(epoch_ms: int) -> int:
    """Epoch ms -> seconds clamped to the DateTime range (unknown times, -1, become 1970)."""
    return min(max(epoch_ms // 1000, 0), DATETIME_MAX)


def _text(raw: bytes | None) -> str:
    """Kafka key bytes as text; bytes that are not UTF-8 are kept as \\x escapes."""
    return raw.decode("utf-8", "backslashreplace") if raw else ""


# --- the JSON record ----------------------------------------------------------------------

def record_json(datum: Any) -> str:
    """The full decoded record as compact JSON text (field order = schema order).

    A union branch that is a record carries its short name in ``"_type"``; bytes are hex;
    NaN and infinities (not JSON) are the strings "NaN", "Infinity", "-Infinity".
    """
    return json.dumps(_jsonable(datum), separators=(",", ":"), allow_nan=False,
                      ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    # exact type checks: this walk is most of the archiver's CPU per message
    kind = type(value)
    if kind is dict:
        return {key: _jsonable(item) for key, item in value.items()}
    if kind is list:
        return [_jsonable(item) for item in value]
    if kind is tuple:  # (record name, fields) of a union branch
        name, inner = value
        return {"_type": _short(name), **_jsonable(inner)}
    if kind is float:
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if kind is bytes:
        return value.hex()
    return value
