"""The Arrow-side JSON writer against `rows.record_json`, on hand-built Arrow columns.

The columns are laid out as chdb hands them over (structs for records, int8 codes for
enums, nullable arrays for [null, T], dense unions in ClickHouse's Variant order), so the
writer is checked here without chdb; the integration suite checks it on chdb's own output.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from fastavro import parse_schema

from streams.archive.avroarrow import (
    JsonWriter,
    UnsupportedSchemaError,
    clickhouse_type,
    schema_tree,
    variant_children,
)
from streams.archive.rows import record_json

SCHEMA = parse_schema({
    "type": "record", "name": "t.Rec", "fields": [
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "n", "type": "long"},
        {"name": "b", "type": "boolean"},
        {"name": "e", "type": {"type": "enum", "name": "t.Color", "symbols": ["RED", "BLUE"]}},
        {"name": "raw", "type": "bytes"},
        {"name": "opt", "type": ["null", "double"]},
        {"name": "items", "type": {"type": "array", "items": {
            "type": "record", "name": "t.Item", "fields": [{"name": "x", "type": "double"}]}}},
        {"name": "tags", "type": {"type": "map", "values": "long"}},
        {"name": "body", "type": ["null", {
            "type": "record", "name": "t.A", "fields": [{"name": "a", "type": "string"}]}, {
            "type": "record", "name": "t.B", "fields": [{"name": "b", "type": "double"},
                                                        {"name": "c", "type": "long"}]}]},
    ]})
NODE = schema_tree(SCHEMA)


def random_double(rng: random.Random) -> float:
    kind = rng.randrange(4)
    if kind == 0:
        return struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
    if kind == 1:
        return round(rng.uniform(-5000, 5000), rng.randrange(9))
    if kind == 2:
        return rng.random() * 10.0 ** rng.randrange(-12, 25)
    return rng.choice([0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, 5e-324, 1e-4, 1e10,
                       9_999_999_999.5, 1e16, 3000.0])


def random_text(rng: random.Random) -> str:
    alphabet = 'ab"\\/\n\t\x00\x01\x0b\x1f\x7fé€😀\u2028\u2029 '
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(8)))


def records(count: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        body: Any = rng.choice([None, ("t.A", {"a": random_text(rng)}),
                                ("t.B", {"b": random_double(rng), "c": rng.randrange(-9, 9)})])
        out.append({
            "d": random_double(rng), "s": random_text(rng), "n": rng.randrange(-2**63, 2**63),
            "b": rng.random() < 0.5, "e": rng.choice(["RED", "BLUE"]),
            "raw": rng.randbytes(rng.randrange(4)),
            "opt": None if rng.random() < 0.3 else random_double(rng),
            "items": [{"x": random_double(rng)} for _ in range(rng.randrange(3))],
            "tags": {random_text(rng) + str(i): rng.randrange(100) for i in
                     range(rng.randrange(3))},
            "body": body})
    return out


def as_columns(rows: list[dict[str, Any]]) -> pa.StructArray:
    """The records laid out the way chdb decodes them into Arrow."""
    union = NODE.field("body")
    child_of = dict(zip(["t.A", "t.B"], variant_children(union), strict=True))
    types, offsets, children = [], [], {0: [], 1: [], 2: []}
    for row in rows:
        code = 2 if row["body"] is None else child_of[row["body"][0]]
        types.append(code)
        offsets.append(len(children[code]))
        children[code].append(row["body"])
    a_type = pa.struct([("a", pa.string())])
    b_type = pa.struct([("b", pa.float64()), ("c", pa.int64())])
    typed = {child_of["t.A"]: a_type, child_of["t.B"]: b_type}
    arrays = [pa.array([v[1] for v in children[k]], typed[k]) for k in (0, 1)]
    arrays.append(pa.nulls(len(children[2])))
    body = pa.UnionArray.from_dense(pa.array(types, pa.int8()), pa.array(offsets, pa.int32()),
                                    arrays)
    columns = {
        "d": pa.array([r["d"] for r in rows], pa.float64()),
        "s": pa.array([r["s"].encode() for r in rows], pa.binary()),
        "n": pa.array([r["n"] for r in rows], pa.int64()),
        "b": pa.array([r["b"] for r in rows]),
        "e": pa.array([["RED", "BLUE"].index(r["e"]) for r in rows], pa.int8()),
        "raw": pa.array([r["raw"] for r in rows], pa.binary()),
        "opt": pa.array([r["opt"] for r in rows], pa.float64()),
        "items": pa.array([r["items"] for r in rows], pa.list_(pa.struct([("x", pa.float64())]))),
        "tags": pa.array([list(r["tags"].items()) for r in rows], pa.map_(pa.string(), pa.int64())),
        "body": body,
    }
    return pa.StructArray.from_arrays(list(columns.values()), list(columns))


def test_records_are_written_exactly_like_record_json() -> None:
    rows = records(3_000)
    text, flagged = JsonWriter(NODE).write(as_columns(rows))
    assert not flagged.any()
    assert text.to_pylist() == [record_json(row) for row in rows]


def test_doubles_are_written_like_python_over_many_values() -> None:
    rng = random.Random(7)
    values = [random_double(rng) for _ in range(200_000)]
    template = records(1)[0]
    text, _ = JsonWriter(NODE).write(as_columns([{**template, "d": v} for v in values]))
    for value, line in zip(values, text.to_pylist(), strict=True):
        # '{"d":<the double>,"s":...': what json.dumps writes for the double alone
        assert line.startswith('{"d":' + record_json(value) + ',"s":'), value


def test_text_that_python_would_not_write_is_flagged() -> None:
    rows = records(4, seed=3)
    columns = as_columns(rows)
    names = list(columns.type.names)
    arrays = [columns.field(i) for i in range(columns.type.num_fields)]
    s_index = names.index("s")
    arrays[s_index] = pa.array([b"ok", b"\xff\xfe", b"fine", b"\xc3"], pa.binary())
    tags_index = names.index("tags")
    arrays[tags_index] = pa.array([[("k", 1), ("k", 2)], [], [("a", 1)], []],
                                  pa.map_(pa.string(), pa.int64()))
    _, flagged = JsonWriter(NODE).write(pa.StructArray.from_arrays(arrays, names))
    # row 0 repeats a map key (a dict keeps one), rows 1 and 3 hold bytes that are no UTF-8
    assert list(flagged) == [True, True, False, True]
    assert isinstance(flagged, np.ndarray)


def test_clickhouse_types_of_the_decoded_values() -> None:
    assert clickhouse_type(NODE.field("e")) == "Enum8('RED' = 0, 'BLUE' = 1)"
    assert clickhouse_type(NODE.field("opt")) == "Nullable(Float64)"
    assert clickhouse_type(NODE.field("tags")) == "Map(String, Int64)"
    assert clickhouse_type(NODE.field("body")) == (
        "Variant(Tuple(a String), Tuple(b Float64, c Int64))")  # sorted, like ClickHouse


@pytest.mark.parametrize("field", [
    {"name": "x", "type": ["null", {"type": "array", "items": "long"}]},  # null would be []
    {"name": "x", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "x", "type": ["null", {"type": "record", "name": "t.P", "fields": []},
                           {"type": "record", "name": "t.Q", "fields": []}]},  # same type
])
def test_what_cannot_be_written_exactly_is_refused(field: dict[str, Any]) -> None:
    schema = parse_schema({"type": "record", "name": "t.R", "fields": [field]})
    with pytest.raises(UnsupportedSchemaError):
        JsonWriter(schema_tree(schema))
