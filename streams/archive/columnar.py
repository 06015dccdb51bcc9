"""The archiver's mapping, column-wise: a batch of Kafka messages -> one Arrow table per table.

1. Each message is sorted by its topic's value schema. A value framed with exactly that
   schema's fingerprint joins its schema's group; anything else (not Avro, another or an
   unknown schema, no value, a changelog tombstone, an unknown topic) goes to the per-row
   reference `rows.archive_row`, which says why.
2. Each group becomes one Avro object container file of one block: fastavro writes the
   header, whose schema is an envelope record (the row number, the 10 framing bytes as a
   fixed, then the schema's fields), and every message is its row number followed by the
   message itself, unchanged; a sentinel row (the first message again) ends the block.
   chdb decodes the file column-wise (ClickHouse's Avro input format) into Arrow. A
   malformed message cannot pass unnoticed: it either fails the decoding, or is read to
   more or fewer bytes than its own and shifts the row after it, and then the row numbers
   and framing bytes read back no longer match. (ClickHouse reads a nullable union whose
   branch index is neither 0 nor 1 as null where fastavro refuses it: such a value is read
   short, and caught this way.)
3. The table's `columnar` builder computes the typed columns and `JsonWriter` the
   ``record`` text, both with Arrow kernels; the Kafka coordinates are columns of the batch.
   Rows they cannot reproduce exactly are flagged and mapped per row instead.
4. A group chdb refuses (a malformed value) is split until its parts decode; the few
   messages left over are mapped per row (`ColumnarMapper._decode_all`).

The result is the same rows `archive_row` gives for every message (a test proves it for
every table), at a fraction of the cost: see `streams.archive.bench`.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fastavro import parse_schema, schemaless_writer, writer

from streams.archive.avroarrow import (
    Decoded,
    JsonWriter,
    Node,
    UnsupportedSchemaError,
    clickhouse_type,
    is_variant,
    rebuild_union,
    schema_tree,
    utf8_or_escaped,
    variant_types,
)
from streams.archive.backends import (
    ArchiveBackend,
    ArchiveError,
    arrow_schema,
    arrow_table,
    chdb_query,
    local_session,
    quote_identifier,
)
from streams.archive.rows import (
    DATETIME_MAX,
    TABLES_BY_SCHEMA,
    KafkaMessage,
    TableSpec,
    archive_row,
    expected_schema,
)
from streams.codecs.avro import HEADER_LEN, MAGIC, registry

log = logging.getLogger(__name__)

SYNC = b"aps-archive-sync"  # 16 bytes; any constant works, each file is read once
ROW_FIELD, FRAMING_FIELD = "_aps_row", "_aps_framing"
MAX_WORKERS = 2  # groups mapped at a time by default (cores permitting)
PER_ROW_PART = 32  # a refused part this small is mapped per row rather than split again
# a refused part is halved: each chdb query costs 3-15 ms before its first row, so fewer,
# larger queries beat re-decoding fewer rows (measured: 16 ways cost twice as much)
SPLIT_WAYS = 2
DECODE_SETTINGS = ("output_format_arrow_string_as_string = 0, "  # bytes; UTF-8 checked here
                   "schema_inference_use_cache_for_file = 0, print_pretty_type_names = 0")


@dataclass(slots=True)
class MessageBatch:
    """Consumed messages as parallel lists (one entry per message)."""

    topics: list[str] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)  # epoch ms, -1 if none

    @classmethod
    def from_kafka(cls, messages: Iterable[Any]) -> MessageBatch:
        """From confluent-kafka messages (without errors)."""
        batch = cls()
        for m in messages:
            ts_type, ts = m.timestamp()
            batch.topics.append(m.topic())
            batch.partitions.append(m.partition())
            batch.offsets.append(m.offset())
            batch.keys.append(m.key())
            batch.values.append(m.value())
            batch.timestamps.append(ts if ts_type != 0 else -1)
        return batch

    @classmethod
    def of(cls, messages: Iterable[KafkaMessage]) -> MessageBatch:
        """From `KafkaMessage`s (tests, benchmarks)."""
        batch = cls()
        for m in messages:
            batch.topics.append(m.topic)
            batch.partitions.append(m.partition)
            batch.offsets.append(m.offset)
            batch.keys.append(m.key)
            batch.values.append(m.value)
            batch.timestamps.append(m.timestamp)
        return batch

    def __len__(self) -> int:
        return len(self.values)

    def message(self, i: int) -> KafkaMessage:
        """Message `i` as a `KafkaMessage`."""
        return KafkaMessage(self.topics[i], self.partitions[i], self.offsets[i], self.keys[i],
                            self.values[i], self.timestamps[i])


MappedTables = dict[str, tuple[TableSpec, pa.Table]]
_T = TypeVar("_T")
_LATER = object()  # a topic whose mapping is not known yet


@dataclass(frozen=True, slots=True)
class _Schema:
    """What decoding one value schema column-wise needs (built once per process)."""

    name: str
    spec: TableSpec
    node: Node
    json: JsonWriter
    header: bytes  # the container file header
    framing: bytes  # the 10 bytes every value of this schema starts with
    select: str  # the columns the decoding query selects


def _select_list(node: Node) -> str:
    """The decoding query's columns: every field, a union read as Variant split in its
    discriminator and one column per branch.

    chdb 26.9 cannot write a Variant nested in a Variant as Arrow when the outer branch
    holding it is empty in the batch (a RiskInput batch without AccountEvents fails); the
    split columns convert, and `rebuild_union` makes the dense union again.
    """
    columns = [ROW_FIELD, FRAMING_FIELD]
    for name, type_node in node.fields:
        column = quote_identifier(name)
        if not is_variant(type_node):
            columns.append(column)
            continue
        columns.append(f"variantType({column}) AS {quote_identifier(_part(name, 'type'))}")
        columns += [f"variantElement({column}, {_literal(type_)}) AS "
                    f"{quote_identifier(_part(name, str(i)))}"
                    for i, type_ in enumerate(variant_types(type_node))]
    return ", ".join(columns)


def _part(field: str, part: str) -> str:
    return f"_aps_{part}_{field}"


def _rebuild_unions(node: Node, table: pa.Table) -> pa.Table:
    """The split Variant columns of a decoded table as dense unions again."""
    for name, type_node in node.fields:
        if is_variant(type_node):
            branches = [table.column(_part(name, str(i))).combine_chunks()
                        for i in range(len(type_node.present))]
            union = rebuild_union(type_node,
                                  table.column(_part(name, "type")).combine_chunks(), branches)
            table = table.append_column(name, union)
    return table


class ColumnarMapper:
    """Maps message batches to Arrow tables; decodes with chdb sessions (see module doc).

    The groups of a batch are mapped concurrently, one chdb session per worker thread
    (chdb and Arrow kernels release the GIL). Open it with `open_mapper(backend)`;
    `close()` releases the sessions and scratch files.
    """

    def __init__(self, *sessions: Any, owns_sessions: bool = False) -> None:
        if not sessions:
            raise ValueError("a mapper needs at least one chdb session")
        self._sessions = list(sessions)
        self._owns_sessions = owns_sessions
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for session in self._sessions:
            self._free.put(session)
        self._local = threading.local()
        self._pool = (ThreadPoolExecutor(len(sessions), thread_name_prefix="aps-archive-map")
                      if len(sessions) > 1 else None)
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="aps-archive-"))
        self._schemas: dict[str, _Schema | None] = {}
        self._topics: dict[str, tuple[str, bytes] | None] = {}
        self.fallbacks = 0  # groups chdb refused (malformed messages)

    # --- the batch ----------------------------------------------------------------------

    def map(self, batch: MessageBatch, archived_at: int) -> MappedTables:
        """Rows of every message of `batch`, as one Arrow table per archive table."""
        groups, reference = self._sort(batch)
        parts: dict[str, tuple[TableSpec, list[pa.Table]]] = {}
        common = _Common.of(batch, archived_at) if groups else None
        largest_first = sorted(groups.items(), key=lambda item: -len(item[1]))
        tasks = [(self._schemas[name], indices) for name, indices in largest_first]

        def run(task: tuple[_Schema | None, list[int]]) -> tuple[list[pa.Table], list[int]]:
            schema, indices = task
            assert schema is not None and common is not None
            return self._with_session(self._map_group, schema, batch, indices, common)

        results = self._pool.map(run, tasks) if self._pool else map(run, tasks)
        for (schema, _), (tables, rest) in zip(tasks, results, strict=True):
            assert schema is not None
            reference += rest
            parts.setdefault(schema.spec.name, (schema.spec, []))[1].extend(tables)
        by_table: dict[str, tuple[TableSpec, list[tuple[Any, ...]]]] = {}
        for i in sorted(reference):
            spec, row = archive_row(batch.message(i), archived_at)
            by_table.setdefault(spec.name, (spec, []))[1].append(row)
        for name, (spec, rows) in by_table.items():
            parts.setdefault(name, (spec, []))[1].append(arrow_table(spec.columns, rows))
        return {name: (spec, pa.concat_tables(tables) if len(tables) > 1 else tables[0])
                for name, (spec, tables) in parts.items() if tables}

    def _sort(self, batch: MessageBatch) -> tuple[dict[str, list[int]], list[int]]:
        """(message indexes per value schema decoded column-wise, the others)."""
        groups: dict[str, list[int]] = {}
        reference: list[int] = []
        topics = self._topics
        for topic in set(batch.topics) - topics.keys():
            target = self._target(topic)
            if target is not _LATER:
                topics[topic] = target
        for i, (topic, value) in enumerate(zip(batch.topics, batch.values, strict=True)):
            target = topics.get(topic)
            if target is not None and value is not None and value.startswith(target[1]):
                groups.setdefault(target[0], []).append(i)
            else:
                reference.append(i)
        return groups, reference

    def _target(self, topic: str) -> tuple[str, bytes] | object | None:
        """(value schema, framing bytes) of a topic whose values can be decoded column-wise;
        None if they cannot; `_LATER` if that is not known yet (chdb failed: ask again)."""
        name = expected_schema(topic)
        if name is None:
            return None
        if name not in self._schemas:
            try:
                self._schemas[name] = self._compile(name)
            except ArchiveError as exc:
                log.warning("archiver: %s mapped per row in this batch (%s)", name, exc)
                return _LATER
        schema = self._schemas[name]
        return None if schema is None else (name, schema.framing)

    # --- one schema ----------------------------------------------------------------------

    def _compile(self, name: str) -> _Schema | None:
        """Prepare a schema for column-wise decoding; None (per row) if it cannot be."""
        spec = TABLES_BY_SCHEMA[name]
        if spec.columnar is None:
            return None
        entry = registry().get(name)
        try:
            node = schema_tree(entry.parsed)
            header = _container_header(entry.parsed)
            schema = _Schema(name, spec, node, JsonWriter(node), header,
                             MAGIC + entry.fingerprint, _select_list(node))
            self._check_inferred_types(schema)
        except UnsupportedSchemaError as exc:
            log.warning("archiver: %s is archived per row (%s)", name, exc)
            return None
        return schema

    def _check_inferred_types(self, schema: _Schema) -> None:
        """ClickHouse must infer the types the Arrow readers expect (union child order)."""
        path = self._dir / "types.avro"
        path.write_bytes(schema.header)
        described = self._raw(f"DESCRIBE file({_literal(str(path))}, 'Avro') "
                              f"SETTINGS {DECODE_SETTINGS}", "TSVRaw")
        inferred = dict(line.split("\t")[:2] for line in described.decode().splitlines())
        for field_name, node in schema.node.fields:
            expected, got = clickhouse_type(node), inferred.get(field_name)
            if got != expected:
                raise UnsupportedSchemaError(
                    f"field {field_name}: ClickHouse infers {got}, expected {expected}")

    def _map_group(self, schema: _Schema, batch: MessageBatch, indices: list[int],
                   common: _Common) -> tuple[list[pa.Table], list[int]]:
        """(the group's rows, messages left to the reference path)."""
        parts, rest = self._decode_all(schema, batch, indices)
        if not parts:
            return [], rest
        decoded = Decoded(schema.node, pa.concat_tables([table for _, table in parts]))
        table, flagged = self._rows(schema, decoded, [i for part, _ in parts for i in part],
                                    common)
        return [table] if table.num_rows else [], rest + flagged

    def _decode_all(self, schema: _Schema, batch: MessageBatch, indices: list[int],
                    ) -> tuple[list[tuple[list[int], pa.Table]], list[int]]:
        """Decoded parts of a group, and the messages left to the per-row path.

        When chdb refuses the group (a malformed value), it is split (in `SPLIT_WAYS`) until
        each part either decodes or is small enough to be mapped per row. The per-row path
        then gives every message fastavro's reading of it: undecodable, or, for a value
        fastavro reads and chdb does not (fastavro accepts one truncated inside its last
        string), that reading.
        """
        parts: list[tuple[list[int], pa.Table]] = []
        rest: list[int] = []
        stack = [indices]
        first_error = ""
        while stack:
            part = stack.pop()
            try:
                parts.append((part, self._decode(schema, batch, part)))
            except ArchiveError as exc:
                first_error = first_error or str(exc).splitlines()[0][:200]
                if len(part) <= PER_ROW_PART:
                    rest += part
                else:
                    size = max(PER_ROW_PART, -(-len(part) // SPLIT_WAYS))
                    stack += [part[i:i + size] for i in range(0, len(part), size)][::-1]
        if rest:
            with self._lock:
                self.fallbacks += 1
            log.info("archiver: %d of %d %s messages mapped per row (%s)", len(rest),
                     len(indices), schema.name, first_error)
        return parts, rest

    def _decode(self, schema: _Schema, batch: MessageBatch, indices: Sequence[int]) -> pa.Table:
        """chdb's column-wise decoding of the group's values (in `indices` order)."""
        path = self._dir / f"{schema.name}.avro"
        path.write_bytes(_container(schema.header, batch.values, indices))
        table = self._query(f"SELECT {schema.select} FROM file({_literal(str(path))}, 'Avro') "
                            f"SETTINGS {DECODE_SETTINGS}")
        count = len(indices)
        if table.num_rows != count + 1:  # + the sentinel
            raise ArchiveError(f"chdb decoded {table.num_rows} rows of {count + 1}")
        numbers = table.column(ROW_FIELD).to_numpy()
        expected = np.arange(count + 1)
        if not np.array_equal(numbers, expected):
            table = table.take(pa.array(np.argsort(numbers, kind="stable")))  # read reordered
            numbers = table.column(ROW_FIELD).to_numpy()
        framing = pa.scalar(schema.framing, pa.binary(HEADER_LEN))
        if (not np.array_equal(numbers, expected)
                or not pc.all(pc.equal(table.column(FRAMING_FIELD), framing)).as_py()):
            raise ArchiveError("a message's bytes do not decode as one record")
        return _rebuild_unions(schema.node, table.slice(0, count))

    def _rows(self, schema: _Schema, decoded: Decoded, indices: list[int],
              common: _Common) -> tuple[pa.Table, list[int]]:
        """(the archive table's rows of a decoded group, the messages of flagged rows)."""
        spec = schema.spec
        assert spec.columnar is not None
        event_time, typed = spec.columnar(decoded)
        record, json_flagged = schema.json.write(decoded.record())
        flagged = decoded.flagged | json_flagged
        own = [pc.cast(event_time, pa.int64()), *typed, record]
        positions = np.asarray(indices, dtype=np.int64)
        if flagged.any():  # before casting: a flagged row may hold bytes that are no text
            keep = pa.array(~flagged)
            own = [pc.filter(values, keep) for values in own]
            positions = positions[~flagged]
        take = pa.array(positions)
        timestamps = pc.take(common.timestamps, take)
        event_time = own[0]
        if spec.unknown_time_is_kafka:
            event_time = pc.if_else(pc.less(event_time, 0), timestamps, event_time)
        seconds = np.clip(event_time.to_numpy() // 1000, 0, DATETIME_MAX).astype(np.uint32)
        columns = [pc.take(common.topics, take), pc.take(common.partitions, take),
                   pc.take(common.offsets, take), pc.take(common.keys, take), timestamps,
                   event_time, pa.array(seconds),
                   pa.array(np.full(len(positions), common.archived_at, np.uint32)), *own[1:]]
        out = arrow_schema(spec.columns)
        table = pa.Table.from_arrays(
            [pc.cast(values, field.type) for values, field in zip(columns, out, strict=True)],
            schema=out)
        return table, [indices[i] for i in np.flatnonzero(flagged)]

    def _query(self, sql: str) -> pa.Table:
        """A query's result as an Arrow table that owns its memory."""
        # chdb's own "ArrowTable" reads the result in place, from memory chdb may reuse
        data = self._raw(sql, "Arrow")
        try:
            return pa.ipc.open_file(pa.py_buffer(data)).read_all()
        except pa.ArrowInvalid as exc:  # chdb ended the query early (no rows, or an error)
            raise ArchiveError(f"chdb returned no complete result ({exc})") from exc

    def _raw(self, sql: str, fmt: str) -> bytes:
        session = getattr(self._local, "session", None) or self._sessions[0]
        return bytes(chdb_query(session, sql, fmt).bytes())

    def _with_session(self, work: Callable[..., _T], *args: Any) -> _T:
        """Run `work` with a chdb session of its own (one query at a time per session)."""
        session = self._free.get()
        self._local.session = session
        try:
            return work(*args)
        finally:
            self._local.session = None
            self._free.put(session)

    def close(self) -> None:
        """Remove the scratch files; close the sessions if this mapper opened them."""
        if self._pool is not None:
            self._pool.shutdown()
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._owns_sessions:
            for session in self._sessions:
                session.close()
        self._sessions = []


@dataclass(frozen=True, slots=True)
class _Common:
    """The Kafka columns of a whole batch, as Arrow arrays (taken per group)."""

    topics: pa.Array
    partitions: pa.Array
    offsets: pa.Array
    keys: pa.Array
    timestamps: pa.Array
    archived_at: int

    @classmethod
    def of(cls, batch: MessageBatch, archived_at: int) -> _Common:
        """The columns of `batch` (keys as text like `rows._text` makes them)."""
        return cls(pa.array(batch.topics, pa.string()), pa.array(batch.partitions, pa.int32()),
                   pa.array(batch.offsets, pa.int64()),
                   utf8_or_escaped(pa.array(batch.keys, pa.binary())),
                   pa.array(batch.timestamps, pa.int64()), archived_at)


def open_mapper(backend: ArchiveBackend, workers: int | None = None) -> ColumnarMapper:
    """A mapper decoding with chdb: on the embedded archive's own directory (chdb allows one
    directory per process), or in memory next to a ClickHouse server archive.

    `workers` (default: one per core, at most `MAX_WORKERS`) groups are mapped at a time.
    """
    count = workers or max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    path = backend.location if backend.kind == "chdb" else None
    sessions = [local_session(path) for _ in range(count)]
    return ColumnarMapper(*sessions, owns_sessions=True)


# --- the container file ----------------------------------------------------------------------

def _container_header(parsed: Any) -> bytes:
    """Header of an Avro object container file of envelopes around `parsed` records."""
    fields = parsed["fields"]
    if any(f["name"] in (ROW_FIELD, FRAMING_FIELD) for f in fields):
        raise UnsupportedSchemaError(f"a field named {ROW_FIELD} or {FRAMING_FIELD}")
    envelope = {
        "type": "record", "name": "aps_archive.Envelope",
        "fields": [{"name": ROW_FIELD, "type": "long"},
                   {"name": FRAMING_FIELD,
                    "type": {"type": "fixed", "name": "aps_archive.Framing",
                             "size": HEADER_LEN}},
                   *fields],
    }
    buf = io.BytesIO()
    writer(buf, parse_schema(envelope), [], codec="null", sync_marker=SYNC)
    return buf.getvalue()


def _container(header: bytes, values: list[bytes | None], indices: Sequence[int]) -> bytes:
    """The container file: one block (count, byte size, envelopes, sync), the messages
    followed by a sentinel (the first message again, numbered len(indices)): a message
    that does not decode to exactly its own bytes shifts the row after it, and the last
    message has a row after it too."""
    count = len(indices)
    longs = _avro_longs(count + 1)
    rows = b"".join([part for n, i in enumerate(indices)
                     for part in (longs[n], values[i])]  # type: ignore[misc]
                    + [longs[count], values[indices[0]]])  # type: ignore[list-item]
    return b"".join((header, avro_long(count + 1), avro_long(len(rows)), rows, SYNC))


_LONGS: list[bytes] = []


def _avro_longs(at_least: int) -> list[bytes]:
    """Avro encodings of 0, 1, 2 ... (cached; at least 64 KiB of them)."""
    wanted = max(at_least, 1 << 16)
    if len(_LONGS) < wanted:
        _LONGS.extend(avro_long(n) for n in range(len(_LONGS), wanted))
    return _LONGS


def avro_long(value: int) -> bytes:
    """The Avro binary encoding of a long (fastavro's)."""
    buf = io.BytesIO()
    schemaless_writer(buf, "long", value)
    return buf.getvalue()


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


__all__ = ["ColumnarMapper", "MappedTables", "MessageBatch", "open_mapper"]
