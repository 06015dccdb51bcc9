"""Decoded Avro as Arrow columns: the schema tree, the JSON text of records, field access.

chdb decodes a batch of Avro records column-wise (`streams.archive.columnar`) and hands
back Arrow arrays: a record's fields are columns, nested records structs, unions of null
and one type nullable arrays, unions of several types dense unions whose children are in
the order of ClickHouse's Variant (sorted type names, NULL last), enums their int8 index.

`JsonWriter` turns those columns into the ``record`` text with Arrow compute kernels (no
Python object per row), byte for byte what `streams.archive.rows.record_json` writes from
fastavro's datum: schema field order, ``"_type"`` on the branches of a union with more
than one record, bytes as lowercase hex, NaN and infinities as "NaN"/"Infinity"/
"-Infinity", doubles as Python's ``repr`` writes them. Rows whose text could differ (a
string that is not UTF-8, which fastavro refuses; a map that repeats a key, which a
Python dict collapses) are reported instead, for the per-row reference path.

Anything this module cannot reproduce exactly raises `UnsupportedSchemaError` when the writer
is built; that schema is then archived per row, so a schema change cannot silently change
what the archive holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}

_CLICKHOUSE_PRIMITIVES = {
    "boolean": "Bool", "int": "Int32", "long": "Int64", "float": "Float32",
    "double": "Float64", "bytes": "String", "string": "String",
}

# both Arrow and Python print doubles in this range in fixed notation with the same
# shortest digits (Arrow: 1e-6 <= |x| < 1e10, Python: 1e-4 <= |x| < 1e16); Python adds
# ".0" to whole numbers. Doubles outside it (and NaN, infinities) are written by Python.
_FIXED_LOW, _FIXED_HIGH = 1e-4, 1e10
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'  # what json.dumps(ensure_ascii=False) escapes


class UnsupportedSchemaError(ValueError):
    """A schema construct whose decoded form cannot be written exactly."""


@dataclass(frozen=True, slots=True)
class Node:
    """One Avro type: `kind` is a primitive name, or record/enum/fixed/array/map/union."""

    kind: str
    name: str = ""  # full name of a named type
    fields: tuple[tuple[str, Node], ...] = ()  # record
    symbols: tuple[str, ...] = ()  # enum
    size: int = 0  # fixed
    items: Node | None = None  # array items, map values
    branches: tuple[Node, ...] = ()  # union

    @property
    def short_name(self) -> str:
        """`aps.PositionChanged` -> `PositionChanged`."""
        return self.name.rsplit(".", 1)[-1]

    def field(self, name: str) -> Node:
        """The type of the record field `name`."""
        for field_name, node in self.fields:
            if field_name == name:
                return node
        raise KeyError(f"{self.name} has no field {name}")

    @property
    def present(self) -> list[Node]:
        """The branches of a union other than null."""
        return [b for b in self.branches if b.kind != "null"]


def schema_tree(parsed: Any) -> Node:
    """A fastavro-parsed schema as a `Node` tree (named references resolved)."""
    return _node(parsed, {})


def _node(schema: Any, named: dict[str, Node]) -> Node:
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return Node(schema)
        if schema not in named:
            raise UnsupportedSchemaError(f"unknown or recursive named type {schema}")
        return named[schema]
    if isinstance(schema, list):
        return Node("union", branches=tuple(_node(s, named) for s in schema))
    if schema.get("logicalType"):
        raise UnsupportedSchemaError(f"logical type {schema['logicalType']}")
    kind = schema["type"]
    if kind in PRIMITIVES:
        return Node(kind)
    if kind == "array":
        return Node("array", items=_node(schema["items"], named))
    if kind == "map":
        return Node("map", items=_node(schema["values"], named))
    if kind == "record":
        fields = tuple((f["name"], _node(f["type"], named)) for f in schema["fields"])
        node = Node("record", name=schema["name"], fields=fields)
    elif kind == "enum":
        node = Node("enum", name=schema["name"], symbols=tuple(schema["symbols"]))
    elif kind == "fixed":
        node = Node("fixed", name=schema["name"], size=int(schema["size"]))
    else:
        raise UnsupportedSchemaError(f"Avro type {kind}")
    named[node.name] = node
    return node


# --- the types ClickHouse infers ------------------------------------------------------------

def clickhouse_type(node: Node) -> str:
    """The type ClickHouse's Avro input gives a value of `node` (as `toTypeName` prints it)."""
    if node.kind in _CLICKHOUSE_PRIMITIVES:
        return _CLICKHOUSE_PRIMITIVES[node.kind]
    if node.kind == "record":
        return "Tuple(" + ", ".join(f"{name} {clickhouse_type(field)}"
                                    for name, field in node.fields) + ")"
    if node.kind == "enum":
        width = 8 if len(node.symbols) <= 127 else 16
        return f"Enum{width}(" + ", ".join(
            f"'{symbol}' = {i}" for i, symbol in enumerate(node.symbols)) + ")"
    if node.kind == "fixed":
        return f"FixedString({node.size})"
    if node.kind in ("array", "map"):
        assert node.items is not None
        inner = clickhouse_type(node.items)
        return f"Array({inner})" if node.kind == "array" else f"Map(String, {inner})"
    if node.kind == "union":
        return _union_type(node)
    raise UnsupportedSchemaError(f"no ClickHouse type for Avro {node.kind}")


def _union_type(node: Node) -> str:
    present = node.present
    if not present:
        raise UnsupportedSchemaError("a union of null alone")
    if len(present) == 1:
        inner = present[0]
        if len(node.branches) == 1:
            return clickhouse_type(inner)
        if inner.kind in ("array", "map", "union"):
            # ClickHouse has no Nullable(Array) / Nullable(Map): a null would read as empty
            raise UnsupportedSchemaError(f"a nullable {inner.kind}")
        return f"Nullable({clickhouse_type(inner)})"
    return "Variant(" + ", ".join(sorted(variant_types(node))) + ")"


def variant_types(node: Node) -> list[str]:
    """ClickHouse types of the branches of a union read as Variant, in branch order."""
    names = [clickhouse_type(b) for b in node.present]
    if len(set(names)) != len(names):
        raise UnsupportedSchemaError("a union whose branches decode to the same ClickHouse type")
    return names


def variant_children(node: Node) -> list[int]:
    """For each present branch of `node`, the index of its child in the Arrow dense union."""
    names = variant_types(node)
    order = sorted(names)
    return [order.index(name) for name in names]


def rebuild_union(node: Node, codes: pa.Array, branches: Sequence[pa.Array]) -> pa.UnionArray:
    """A Variant read as its discriminator (`variantType`: the child index in sorted order,
    -1 for NULL) and one nullable column per branch (`variantElement`, in branch order) as
    the dense union chdb would write: children in sorted order, NULL last."""
    codes_np = codes.to_numpy(zero_copy_only=False).astype(np.int8)
    null_child = len(branches)
    codes_np = np.where(codes_np < 0, null_child, codes_np).astype(np.int8)
    offsets = np.zeros(len(codes_np), dtype=np.int32)
    children: list[pa.Array] = [pa.nulls(0)] * (null_child + 1)
    for branch, child in zip(branches, variant_children(node), strict=True):
        rows = np.flatnonzero(codes_np == child)
        offsets[rows] = np.arange(len(rows), dtype=np.int32)
        children[child] = branch.take(pa.array(rows, pa.int64()))
    rows = np.flatnonzero(codes_np == null_child)
    offsets[rows] = np.arange(len(rows), dtype=np.int32)
    children[null_child] = pa.nulls(len(rows))
    return pa.UnionArray.from_dense(pa.array(codes_np, pa.int8()), pa.array(offsets),
                                    children)


def is_variant(node: Node) -> bool:
    """True if ClickHouse reads this union as Variant (a dense union in Arrow)."""
    return node.kind == "union" and len(node.present) > 1


# --- field access on decoded columns ------------------------------------------------------

def union_branch(node: Node, values: pa.Array, branch: str) -> pa.Array:
    """The record branch named `branch` of a Variant union, aligned with `values` (null in
    rows holding another branch)."""
    union = _dense_union(values)
    for present, child in zip(node.present, variant_children(node), strict=True):
        if present.short_name == branch:
            codes = union.type_codes.to_numpy()
            positions = np.where(codes == child, union.offsets.to_numpy(), -1)
            return pc.take(union.field(child), _indices(positions))
    raise KeyError(f"union has no branch {branch}")


def union_branch_names(node: Node, values: pa.Array) -> pa.Array:
    """Short name of the branch each row of a Variant union holds (null for a null)."""
    union = _dense_union(values)
    names: list[str | None] = [None] * (len(node.present) + 1)
    for present, child in zip(node.present, variant_children(node), strict=True):
        names[child] = present.short_name or present.kind
    return pc.take(pa.array(names, pa.string()), union.type_codes)


def enum_names(node: Node, codes: pa.Array) -> pa.Array:
    """Enum symbols of int8 indexes (nulls stay null)."""
    return pc.take(pa.array(node.symbols, pa.string()), codes)


def _dense_union(values: pa.Array) -> pa.UnionArray:
    if not isinstance(values, pa.UnionArray) or values.type.mode != "dense":
        raise UnsupportedSchemaError(f"expected a dense union, got {values.type}")
    if values.offset:
        raise UnsupportedSchemaError("a sliced union array")
    return values


def _indices(positions: np.ndarray) -> pa.Array:
    """Take indexes with -1 as null."""
    return pa.array(positions, pa.int64(), mask=positions < 0)


# --- JSON text --------------------------------------------------------------------------------

Pieces = list[Any]  # Arrow string arrays and str literals; their concatenation is the text
RowMap = np.ndarray | None  # top-level row of each element of the array at hand (None: same)


class JsonWriter:
    """Writes decoded records of one schema as `record_json` text, column-wise."""

    def __init__(self, node: Node) -> None:
        if node.kind != "record":
            raise UnsupportedSchemaError("a top-level schema that is not a record")
        clickhouse_type(node)  # raises for what ClickHouse cannot decode faithfully
        self.node = node

    def write(self, columns: pa.StructArray) -> tuple[pa.Array, np.ndarray]:
        """(record text per row, rows that need the reference path) of `columns`."""
        rows = len(columns)
        flagged = np.zeros(rows, dtype=bool)
        pieces = _Writer(flagged).record(self.node, columns, None)
        return _join(pieces, rows), flagged


class _Writer:
    """One pass over a batch; collects the rows whose text must come from Python."""

    def __init__(self, flagged: np.ndarray) -> None:
        self.flagged = flagged

    def flag(self, rows: RowMap, elements: np.ndarray) -> None:
        """Mark the top-level rows of these element positions."""
        self.flagged[elements if rows is None else rows[elements]] = True

    def value(self, node: Node, values: pa.Array, rows: RowMap) -> Pieces:
        """Pieces writing every value of `values` (all non-null here)."""
        kind = node.kind
        if kind == "record":
            return self.record(node, values, rows)
        if kind == "string":
            return self.string(values, rows)
        if kind == "double":
            return _doubles(values)
        if kind == "float":
            return _doubles(pc.cast(values, pa.float64()))
        if kind in ("int", "long"):
            return [pc.cast(values, pa.string())]
        if kind == "boolean":
            return [pc.take(pa.array(["false", "true"]), pc.cast(values, pa.int8()))]
        if kind == "enum":
            quoted = pa.array([f'"{s}"' for s in node.symbols], pa.string())
            return [pc.take(quoted, values)]
        if kind in ("bytes", "fixed"):
            return [pa.array([None if v is None else f'"{v.hex()}"'
                              for v in values.to_pylist()], pa.string())]
        if kind == "array":
            return self.array(node, values, rows)
        if kind == "map":
            return self.map(node, values, rows)
        if kind == "union":
            return self.union(node, values, rows)
        if kind == "null":
            return ["null"]
        raise UnsupportedSchemaError(f"no JSON for Avro {kind}")

    def record(self, node: Node, values: pa.Array, rows: RowMap, tag: str = "") -> Pieces:
        pieces: Pieces = ["{"]
        if tag:
            pieces.append(f'"_type":"{tag}"' + ("," if node.fields else ""))
        for i, (name, field) in enumerate(node.fields):
            pieces.append(("," if i else "") + f'"{name}":')
            pieces += self.value(field, pc.struct_field(values, [i]), rows)
        pieces.append("}")
        return pieces

    def string(self, values: pa.Array, rows: RowMap) -> Pieces:
        text = self._utf8(values, rows)
        escape = pc.fill_null(pc.match_substring_regex(text, _NEEDS_ESCAPE), False)
        if pc.any(escape).as_py():
            escaped = [json.dumps(s, ensure_ascii=False)[1:-1]
                       for s in pc.filter(text, escape).to_pylist()]
            text = pc.replace_with_mask(text, escape, pa.array(escaped, pa.string()))
        return ['"', text, '"']

    def _utf8(self, values: pa.Array, rows: RowMap) -> pa.Array:
        """`values` as UTF-8 text; elements that are not UTF-8 are flagged (and blanked)."""
        binary = values if pa.types.is_binary(values.type) else values.cast(pa.binary())
        try:
            return binary.cast(pa.string())
        except pa.ArrowInvalid:
            pass
        items = binary.to_pylist()
        bad = np.zeros(len(items), dtype=bool)
        for i, item in enumerate(items):
            if item is not None:
                try:
                    item.decode("utf-8")
                except UnicodeDecodeError:
                    bad[i] = True
        self.flag(rows, np.flatnonzero(bad))
        cleaned = pc.if_else(pa.array(bad), pa.scalar(b"", pa.binary()), binary)
        return cleaned.cast(pa.string())

    def array(self, node: Node, values: pa.Array, rows: RowMap) -> Pieces:
        assert node.items is not None
        elements = pc.list_flatten(values)
        inner = self.value(node.items, elements, _child_rows(values, rows))
        joined = pc.binary_join(regroup(values, _join(inner, len(elements))), ",")
        return ["[", joined, "]"]

    def map(self, node: Node, values: pa.Array, rows: RowMap) -> Pieces:
        assert node.items is not None
        values = _entry_lists(values)
        entries = pc.list_flatten(values)
        child_rows = _child_rows(values, rows)
        keys = pc.struct_field(entries, [0])
        self._flag_repeated_keys(values, keys, rows)
        pieces = [*self.string(keys, child_rows), ":",
                  *self.value(node.items, pc.struct_field(entries, [1]), child_rows)]
        joined = pc.binary_join(regroup(values, _join(pieces, len(entries))), ",")
        return ["{", joined, "}"]

    def _flag_repeated_keys(self, maps: pa.Array, keys: pa.Array, rows: RowMap) -> None:
        # fastavro reads a map into a dict: a repeated key keeps one entry
        if len(keys) < 2:
            return
        parents = pc.list_parent_indices(maps)
        counted = pa.table({"p": parents, "k": keys}).group_by(["p", "k"]).aggregate(
            [("k", "count")])
        repeated = pc.greater(counted["k_count"], 1)
        if pc.any(repeated).as_py():
            self.flag(rows, pc.filter(counted["p"], repeated).to_numpy())

    def union(self, node: Node, values: pa.Array, rows: RowMap) -> Pieces:
        present = node.present
        if len(present) == 1:
            pieces = self.value(present[0], values, rows)
            if len(node.branches) == 1 or values.null_count == 0:
                return pieces
            return [pc.fill_null(_join(pieces, len(values)), "null")]
        union = _dense_union(values)
        codes = union.type_codes.to_numpy()
        offsets = union.offsets.to_numpy()
        tagged = sum(1 for b in present if b.kind == "record") > 1
        # children that are no branch of `present` hold ClickHouse's NULL
        texts = [pa.array(["null"] * len(union.field(k)), pa.string())
                 for k in range(union.type.num_fields)]
        for branch, child in zip(present, variant_children(node), strict=True):
            child_values = union.field(child)
            child_rows = _union_child_rows(codes, offsets, child, len(child_values), rows)
            if branch.kind == "record" and tagged:
                pieces = self.record(branch, child_values, child_rows, tag=branch.short_name)
            else:
                pieces = self.value(branch, child_values, child_rows)
            texts[child] = _join(pieces, len(child_values))
        starts = np.cumsum([0] + [len(t) for t in texts[:-1]])
        return [pc.take(pa.concat_arrays(texts), pa.array(starts[codes] + offsets))]


def _entry_lists(maps: pa.Array) -> pa.Array:
    """A map array as a list array of (key, value) structs (maps are never null here)."""
    entries = pa.StructArray.from_arrays([maps.keys, maps.items], ["key", "value"])
    return pa.ListArray.from_arrays(maps.offsets, entries)


def _doubles(values: pa.Array) -> Pieces:
    """Pieces writing doubles as Python's json.dumps does (see _FIXED_LOW)."""
    text = pc.cast(values, pa.string())
    magnitude = pc.abs(values)
    plain = pc.or_(pc.and_(pc.greater_equal(magnitude, _FIXED_LOW),
                           pc.less(magnitude, _FIXED_HIGH)),
                   pc.equal(values, 0.0))
    whole = pc.and_(plain, pc.equal(values, pc.floor(values)))
    suffix = pc.take(pa.array(["", ".0"]), pc.cast(whole, pa.int8()))
    odd = pc.invert(plain)  # null where the value is null
    if pc.any(odd).as_py():
        odd = pc.fill_null(odd, False)
        written = [_python_double(v) for v in pc.filter(values, odd).to_pylist()]
        text = pc.replace_with_mask(text, odd, pa.array(written, pa.string()))
    return [text, suffix]


def _python_double(value: float) -> str:
    """One double as record_json writes it."""
    if math.isfinite(value):
        return repr(value)
    return '"NaN"' if math.isnan(value) else ('"Infinity"' if value > 0 else '"-Infinity"')


def _join(pieces: Pieces, length: int) -> pa.Array:
    """Concatenate pieces row-wise (a null piece makes the row null)."""
    merged: Pieces = []
    for piece in pieces:  # adjacent literals as one
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    arrays = [p for p in merged if not isinstance(p, str)]
    if not arrays:
        return pa.array(["".join(merged)] * length, pa.string())
    if len(merged) == 1:
        return arrays[0]
    return pc.binary_join_element_wise(*merged, "")


def regroup(lists: pa.Array, elements: pa.Array) -> pa.Array:
    """`elements`, one per flattened item of `lists`, as lists shaped like `lists`."""
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy()
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), elements)


def _child_rows(lists: pa.Array, rows: RowMap) -> np.ndarray:
    """Top-level row of each flattened element of `lists`."""
    parents = pc.list_parent_indices(lists).to_numpy()
    return parents if rows is None else rows[parents]


def _union_child_rows(codes: np.ndarray, offsets: np.ndarray, child: int, size: int,
                      rows: RowMap) -> np.ndarray:
    """Top-level row of each element of one child of a dense union."""
    positions = np.flatnonzero(codes == child)
    out = np.zeros(size, dtype=np.int64)
    out[offsets[positions]] = positions if rows is None else rows[positions]
    return out


def utf8_or_escaped(values: pa.Array) -> pa.Array:
    """Binary values as text, bytes that are not UTF-8 as \\x escapes, null as ''.

    What `streams.archive.rows._text` does to one Kafka key, for a whole column.
    """
    binary = values if pa.types.is_binary(values.type) else values.cast(pa.binary())
    try:
        text = binary.cast(pa.string())
    except pa.ArrowInvalid:
        text = pa.array([b.decode("utf-8", "backslashreplace") if b else ""
                         for b in binary.to_pylist()], pa.string())
    return pc.fill_null(text, "")


# --- a decoded batch of one schema -------------------------------------------------------

class Decoded:
    """Arrow columns of a batch of one schema, read by field path (``provenance.asset``).

    `flagged` marks rows the columnar mapping cannot reproduce exactly; they take the
    per-row reference path.
    """

    def __init__(self, node: Node, table: pa.Table) -> None:
        self.node = node
        self.columns = {name: table.column(name).combine_chunks() for name, _ in node.fields}
        self.rows = table.num_rows
        self.flagged = np.zeros(self.rows, dtype=bool)

    def record(self) -> pa.StructArray:
        """All fields as one struct array (the top-level record)."""
        names = [name for name, _ in self.node.fields]
        return pa.StructArray.from_arrays([self.columns[n] for n in names], names)

    def col(self, path: str) -> pa.Array:
        """A field by dotted path through records (null where an enclosing one is null)."""
        head, *rest = path.split(".")
        values, node = self.columns[head], self.node.field(head)
        return _descend(node, values, rest)[0]

    def node_at(self, path: str) -> Node:
        """The Avro type of the field at `path`."""
        head, *rest = path.split(".")
        return _descend(self.node.field(head), self.columns[head], rest)[1]

    def enum(self, path: str) -> pa.Array:
        """An enum field as its symbols."""
        return enum_names(_unwrap_nullable(self.node_at(path)), self.col(path))

    def branch(self, path: str, name: str, field: str) -> pa.Array:
        """Field `field` (dotted) of union branch `name` at `path`; null in other rows."""
        union = self.node_at(path)
        record = union_branch(union, self.col(path), name)
        branch = next(b for b in union.present if b.short_name == name)
        return _descend(branch, record, field.split("."))[0]

    def branch_names(self, path: str) -> pa.Array:
        """Short name of the union branch each row holds at `path`."""
        return union_branch_names(self.node_at(path), self.col(path))

    def length(self, path: str) -> pa.Array:
        """Number of items of an array field."""
        return pc.list_value_length(self.col(path))


def _unwrap_nullable(node: Node) -> Node:
    if node.kind == "union" and len(node.present) == 1:
        return node.present[0]
    return node


def _descend(node: Node, values: pa.Array, path: Sequence[str]) -> tuple[pa.Array, Node]:
    for name in path:
        record = _unwrap_nullable(node)
        if record.kind != "record":
            raise KeyError(f"{name}: not a record field")
        index = [n for n, _ in record.fields].index(name)
        values, node = pc.struct_field(values, [index]), record.fields[index][1]
    return values, node

