"""The column-wise mapping (what the archiver runs) gives exactly the per-row reference's rows.

`rows.archive_row` maps one message at a time from fastavro's datum: it is the reference.
`ColumnarMapper` decodes whole batches with chdb and maps them with Arrow kernels. Here
both map the same messages, and every row of every table must be identical: typed
columns, the `record` JSON byte for byte, the raw rows of undecodable messages, tombstones.
Then the rows stored by each path are read back from both backends and compared.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from streams.archive.archiver import insert_tables
from streams.archive.backends import ArchiveBackend, ChdbBackend
from streams.archive.columnar import ColumnarMapper, MessageBatch, open_mapper
from streams.archive.migrations import migrate
from streams.archive.rows import ALL_TABLES, TABLES_BY_SCHEMA, KafkaMessage, record_json
from streams.archive.workload import Workload
from streams.codecs.avro import decode_datum, encode
from streams.errors import CodecError
from tests.integration.archive import edge_cases as e
from tests.integration.archive import samples as s
from tests.integration.archive.samples import ARCHIVED_AT, reference_rows


@pytest.fixture
def mapper(tmp_path: Any) -> Iterator[ColumnarMapper]:
    """A column-wise mapper on a scratch embedded archive."""
    backend = ChdbBackend(tmp_path / "chdb")
    mapper = open_mapper(backend)
    yield mapper
    mapper.close()
    backend.close()


def canonical(value: Any) -> Any:
    """A value comparable with ==: NaN equals NaN, -0.0 differs from 0.0."""
    if isinstance(value, float):
        return ("nan",) if math.isnan(value) else (value, math.copysign(1.0, value))
    if isinstance(value, list | tuple):
        return tuple(canonical(v) for v in value)
    return value


def rows_by_table(tables: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {name: sorted((canonical(tuple(row.values())) for row in table.to_pylist()),
                         key=lambda row: row[:3])
            for name, (_, table) in tables.items()}


def reference_by_table(messages: list[KafkaMessage]) -> dict[str, list[tuple[Any, ...]]]:
    return {name: sorted((canonical(row) for row in rows), key=lambda row: row[:3])
            for name, (_, rows) in reference_rows(messages).items()}


def assert_same_rows(mapper: ColumnarMapper, messages: list[KafkaMessage]) -> None:
    got = rows_by_table(mapper.map(MessageBatch.of(messages), ARCHIVED_AT))
    want = reference_by_table(messages)
    assert sorted(got) == sorted(want)
    for table, rows in want.items():
        names = [c.name for c in next(t for t in ALL_TABLES if t.name == table).columns]
        assert len(got[table]) == len(rows), table
        for mine, theirs in zip(got[table], rows, strict=True):
            diff = {n: (a, b) for n, a, b in zip(names, mine, theirs, strict=True) if a != b}
            assert not diff, f"{table} row {theirs[:3]}: {diff}"


def test_every_archived_schema_is_mapped_column_wise(mapper: ColumnarMapper) -> None:
    # no schema silently falls back to the per-row path (ClickHouse infers what we expect)
    for schema in TABLES_BY_SCHEMA:
        assert mapper._compile(schema) is not None, schema


def test_realistic_mix_maps_to_the_reference_rows(mapper: ColumnarMapper) -> None:
    messages = Workload(seed=3).messages(3_000)
    assert_same_rows(mapper, messages)
    tables = {m.topic for m in messages}
    assert {"risk.inputs", s.CHANGELOG, "account.events", "oracle.ticks"} <= tables


def test_samples_of_every_schema_map_to_the_reference_rows(mapper: ColumnarMapper) -> None:
    messages = s.as_messages(s.samples("c-"))
    tables = mapper.map(MessageBatch.of(messages), ARCHIVED_AT)
    assert set(tables) | {"undecodable_messages"} == {spec.name for spec in ALL_TABLES}
    assert_same_rows(mapper, messages)


def test_odd_values_map_to_the_reference_rows(mapper: ColumnarMapper) -> None:
    # NaN, infinities, -0.0, subnormals, every notation boundary of doubles, strings that
    # need JSON escapes, collateral sums that math.fsum refuses, unknown event times
    assert_same_rows(mapper, e.as_messages(e.value_edge_cases()))


def test_odd_bytes_map_to_the_reference_rows(mapper: ColumnarMapper) -> None:
    # garbage, unknown and wrong schemas, truncated values (one inside its last string,
    # which fastavro reads and chdb refuses), trailing bytes, invalid UTF-8, a map with a
    # repeated key, tombstones, non-UTF-8 keys; mixed with valid messages of the same topics
    odd = e.byte_edge_cases()
    valid = [(m.topic, m.key, m.value) for m in Workload(seed=5).messages(400)]
    messages = e.as_messages(valid[:200] + odd + valid[200:])
    assert_same_rows(mapper, messages)
    assert mapper.fallbacks > 0  # groups chdb refused were split, not lost


def test_mutated_messages_map_to_the_reference_rows(mapper: ColumnarMapper) -> None:
    # flipped, cut and extended bytes of real messages: whatever fastavro makes of them
    messages = e.as_messages(e.mutants(600))
    for start in range(0, len(messages), 150):
        assert_same_rows(mapper, messages[start:start + 150])


def test_both_paths_store_the_same_rows(archive_backend: ArchiveBackend) -> None:
    """What each path stores reads back the same from chdb and from the server."""
    migrate(archive_backend)
    messages = (Workload(seed=9).messages(800)
                + e.as_messages(e.value_edge_cases() + e.byte_edge_cases(), 10_000))

    def stored() -> dict[str, list[Any]]:
        out = {}
        for spec in ALL_TABLES:
            result = archive_backend.query(
                f"SELECT * FROM {spec.name} ORDER BY topic, kafka_partition, kafka_offset")
            out[spec.name] = [canonical(row) for row in result.rows]
            archive_backend.execute(f"TRUNCATE TABLE {spec.name}")
        return out

    s.insert_messages_per_row(archive_backend, messages)
    by_reference = stored()
    mapper = open_mapper(archive_backend)
    try:
        insert_tables(archive_backend, mapper.map(MessageBatch.of(messages), ARCHIVED_AT))
    finally:
        mapper.close()
    by_columns = stored()
    assert sum(len(rows) for rows in by_columns.values()) == len(messages)
    assert by_columns == by_reference


def test_batches_holding_only_some_union_branches_are_mapped_column_wise(
        mapper: ColumnarMapper) -> None:
    # chdb cannot write a Variant nested in an empty Variant branch as Arrow (risk inputs
    # without account events): the mapper reads unions split, and must not fall back
    def body(message: KafkaMessage) -> str:
        try:
            writer, datum = decode_datum(message.value or b"")
        except CodecError:  # the workload's few malformed messages
            return ""
        return str(datum["body"][0]) if "body" in datum else writer

    workload = [m for m in Workload(seed=13).messages(3_000)
                if m.value is not None and m.topic in ("risk.inputs", "oracle.ticks")]
    prices_and_reports = [m for m in workload if m.topic == "risk.inputs"
                          and body(m) != "aps.AccountEvent"]
    pyth_only = [m for m in workload if m.topic == "oracle.ticks"
                 and body(m) == "aps.PythPriceUpdate"]
    for messages in (prices_and_reports + pyth_only, prices_and_reports[:1], pyth_only[:2]):
        mapper.fallbacks = 0
        assert_same_rows(mapper, messages)
        assert mapper.fallbacks == 0


def test_a_corrupted_null_branch_index_is_the_one_documented_difference(
        mapper: ColumnarMapper) -> None:
    """ClickHouse reads a nullable union whose branch index is not 1 as null; fastavro
    refuses an index outside the union. When the byte of a null's index (0) is corrupted
    into another value, nothing else moves, so the column-wise path archives the record
    as written (that field null) where the reference keeps the message raw as
    malformed_avro. Every other corruption tried gives identical rows (see docs/archive.md).
    """
    value = encode(s.top_up("acct-n", 0))
    action_then_nulls = b"\x02\x00\x00"  # action TOP_UP, instrument null, side null
    assert value.count(action_then_nulls) == 1
    at = value.index(action_then_nulls) + 1
    corrupted = value[:at] + b"\x04" + value[at + 1:]  # instrument: branch index 2
    message = KafkaMessage("exec.ethereum.commands", 0, 0, b"k", corrupted, s.T0)
    reference = reference_rows([message])
    assert list(reference) == ["undecodable_messages"]
    assert "IndexError" in reference["undecodable_messages"][1][0][9]
    tables = mapper.map(MessageBatch.of([message]), ARCHIVED_AT)
    assert list(tables) == ["commands"]
    row = tables["commands"][1].to_pylist()[0]
    assert row["instrument_id"] is None and json.loads(row["record"])["instrument"] is None
    assert row["record"] == record_json(decode_datum(value)[1])  # the record as written
