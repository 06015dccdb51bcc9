"""Avro on the wire: schemas/*.avsc <-> domain dataclasses, framed as Avro single-object encoding.

Single-object encoding (Avro 1.12 spec, "Single object encoding"): the two marker bytes
``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's
Parsing Canonical Form, then the Avro binary body. A reader finds the writer schema by
its fingerprint, so schemas can evolve (a newer reader resolves an older writer).
This module is the only place that knows Avro.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import types
import typing
from collections.abc import Callable
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

from streams.errors import CodecError, FramingError, UnknownSchemaError
from streams.paths import SCHEMA_DIR

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
NAMESPACE = "aps"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class SchemaEntry:
    """A parsed schema with its name and fingerprint."""

    name: str
    parsed: Any
    fingerprint: bytes


class SchemaRegistry:
    """All schemas of schemas/, by full name and by single-object fingerprint."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        self._by_name: dict[str, SchemaEntry] = {}
        self._by_fingerprint: dict[bytes, SchemaEntry] = {}
        for path in sorted(schema_dir.glob("*.avsc")):
            parsed = load_schema(str(path))
            name = path.name.removesuffix(".avsc")
            entry = SchemaEntry(name, parsed, schema_fingerprint(parsed))
            self._by_name[name] = entry
            self._by_fingerprint[entry.fingerprint] = entry

    def get(self, name: str) -> SchemaEntry:
        """Schema by full name, e.g. ``aps.ScalingCommand``."""
        return self._by_name[name]

    def by_fingerprint(self, digest: bytes) -> SchemaEntry:
        """Writer schema of a single-object encoded message."""
        try:
            return self._by_fingerprint[digest]
        except KeyError:
            raise UnknownSchemaError(f"no schema with fingerprint {digest.hex()}") from None

    def names(self) -> list[str]:
        """Full names of every known schema."""
        return sorted(self._by_name)


@cache
def registry() -> SchemaRegistry:
    """The process-wide schema registry (schemas are read once)."""
    return SchemaRegistry()


# --- dataclass <-> Avro datum ------------------------------------------------------------

Converter = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _record_name(cls: type) -> str:
    return f"{NAMESPACE}.{cls.__name__}"


# Converters are compiled once per type: a field that needs no conversion (str, int, float,
# bool, bytes) is passed through untouched, so a record costs one dict build, not a walk of
# its type hints.

@cache
def _encoder(tp: Any) -> Converter:
    members = _union_members(tp)
    if members is not None:
        present = [m for m in members if m is not type(None)]
        if len(present) == 1:
            inner = _encoder(present[0])
            return inner if inner is _identity else (
                lambda v: None if v is None else inner(v))
        branches = {m: (_record_name(m), _encoder(m)) for m in present}

        def tagged(value: Any) -> Any:
            if value is None:
                return None
            name, encode_branch = branches[type(value)]
            return (name, encode_branch(value))  # fastavro tuple notation: no guessing
        return tagged
    origin = typing.get_origin(tp)
    if origin is list:
        item = _encoder(typing.get_args(tp)[0])
        return _identity if item is _identity else (lambda v: [item(x) for x in v])
    if origin is dict:
        value_enc = _encoder(typing.get_args(tp)[1])
        return _identity if value_enc is _identity else (
            lambda v: {k: value_enc(x) for k, x in v.items()})
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        fields = [(name, _encoder(hint)) for name, hint in _hints(tp).items()]
        plain = tuple(name for name, enc in fields if enc is _identity)
        converted = tuple((name, enc) for name, enc in fields if enc is not _identity)

        def record(obj: Any) -> dict[str, Any]:
            out = {name: getattr(obj, name) for name in plain}
            for name, enc in converted:
                out[name] = enc(getattr(obj, name))
            return out
        return record
    if isinstance(tp, type) and issubclass(tp, Enum):
        return lambda v: v.value
    return _identity


@cache
def _decoder(tp: Any) -> Converter:
    members = _union_members(tp)
    if members is not None:
        present = [m for m in members if m is not type(None)]
        if len(present) == 1:
            inner = _decoder(present[0])
            return inner if inner is _identity else (
                lambda v: None if v is None else inner(v))
        branches = {_record_name(m): _decoder(m) for m in present}

        def union(value: Any) -> Any:
            if value is None:
                return None
            name, inner_value = value
            return branches[name](inner_value)
        return union
    origin = typing.get_origin(tp)
    if origin is list:
        item = _decoder(typing.get_args(tp)[0])
        return _identity if item is _identity else (lambda v: [item(x) for x in v])
    if origin is dict:
        value_dec = _decoder(typing.get_args(tp)[1])
        return _identity if value_dec is _identity else (
            lambda v: {k: value_dec(x) for k, x in v.items()})
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        fields = tuple((name, _decoder(hint)) for name, hint in _hints(tp).items())

        def record(datum: dict[str, Any]) -> Any:
            return tp(*[datum[name] if dec is _identity else dec(datum[name])
                        for name, dec in fields])
        return record
    if isinstance(tp, type) and issubclass(tp, Enum):
        members_by_value = tp._value2member_map_
        return lambda v: members_by_value[v]
    return _identity


@cache
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def to_datum(obj: Any) -> Any:
    """A domain value as an Avro datum for fastavro (unions of records in tuple notation)."""
    return _encoder(type(obj))(obj)


def from_datum(cls: type[T], datum: Any) -> T:
    """A domain dataclass from a datum read with ``return_record_name=True``."""
    return _decoder(cls)(datum)  # type: ignore[no-any-return]


# --- framing ----------------------------------------------------------------------------------

def schema_fingerprint(parsed: Any) -> bytes:
    """CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, in wire byte order."""
    # fastavro's hex digest is already in the spec's little-endian byte order
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def single_object_encode(parsed: Any, datum: Any, digest: bytes | None = None) -> bytes:
    """Avro single-object encoding of `datum` written with schema `parsed`."""
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(digest if digest is not None else schema_fingerprint(parsed))
    schemaless_writer(buf, parsed, datum)
    return buf.getvalue()


def encode(obj: Any, schema_name: str | None = None) -> bytes:
    """Single-object encode a domain record (schema defaults to ``aps.<ClassName>``)."""
    entry = registry().get(schema_name or f"{NAMESPACE}.{type(obj).__name__}")
    return single_object_encode(entry.parsed, to_datum(obj), entry.fingerprint)


def encode_datum(datum: Any, schema_name: str) -> bytes:
    """Single-object encode a raw Avro datum (dicts), for tests and tools."""
    entry = registry().get(schema_name)
    return single_object_encode(entry.parsed, datum, entry.fingerprint)


def decode_datum(payload: bytes, expected: str | None = None) -> tuple[str, Any]:
    """Decode framed bytes to (writer schema name, datum); resolves to `expected` if given."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise FramingError(f"payload is {type(payload).__name__}, not bytes (a null record?)")
    if len(payload) < HEADER_LEN or payload[:2] != MAGIC:
        raise FramingError("payload is not Avro single-object encoded (missing C3 01 marker)")
    writer = registry().by_fingerprint(payload[2:HEADER_LEN])
    reader = registry().get(expected).parsed if expected and expected != writer.name else None
    body = io.BytesIO(payload[HEADER_LEN:])
    try:
        datum = schemaless_reader(
            body,
            writer.parsed,
            reader,
            return_record_name=True,
            return_record_name_override=True,
        )
    except (EOFError, ValueError, TypeError, KeyError, IndexError, struct.error,
            UnicodeDecodeError) as exc:
        raise CodecError(f"{writer.name}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # fastavro raises its own types on schema resolution failure
        raise CodecError(f"{writer.name}: {type(exc).__name__}: {exc}") from exc
    extra = len(payload) - HEADER_LEN - body.tell()
    if extra:
        raise CodecError(f"{writer.name}: {extra} byte(s) after the end of the record")
    return (expected or writer.name), datum


def decode(payload: bytes, cls: type[T]) -> T:
    """Decode framed bytes into the domain class `cls` (schema ``aps.<ClassName>``)."""
    _, datum = decode_datum(payload, f"{NAMESPACE}.{cls.__name__}")
    try:
        return from_datum(cls, datum)
    except (TypeError, ValueError, KeyError) as exc:
        raise CodecError(f"{cls.__name__}: {exc}") from exc


# --- envelopes built from encoded bodies ------------------------------------------------------

def zigzag_long(value: int) -> bytes:
    """Avro's zig-zag varint encoding of an int or long."""
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@cache
def _risk_input_layout() -> tuple[bytes, dict[bytes, int]]:
    """Header of aps.RiskInput and, per single-object fingerprint of a body schema, the index
    of that schema in the `body` union; checks the field layout `encode_risk_input` writes."""
    entry = registry().get("aps.RiskInput")
    fields = entry.parsed["fields"]
    layout = [(f["name"], f["type"] if isinstance(f["type"], str) else "union") for f in fields]
    expected = [("origin_topic", "string"), ("origin_partition", "int"),
                ("origin_offset", "long"), ("body", "union")]
    if layout != expected:  # pragma: no cover - guards a schema edit
        raise TypeError(f"aps.RiskInput fields changed: {layout}")
    members = fields[3]["type"]
    index = {}
    for position, member in enumerate(members):
        name = member if isinstance(member, str) else member["name"]
        index[registry().get(name).fingerprint] = position
    return MAGIC + entry.fingerprint, index


def encode_risk_input(origin_topic: str, origin_partition: int, origin_offset: int,
                      body: bytes) -> bytes:
    """``encode(RiskInput(origin..., decode(body)))`` without decoding `body`.

    `body` is a single-object encoded AccountEvent, ConsensusPrice or ExecutionReport
    written with the schemas of this build; the envelope embeds its Avro body after the
    union index, which is byte for byte what encoding the decoded record would write.
    Raises CodecError for any other body.
    """
    head, union_index = _risk_input_layout()
    if len(body) < HEADER_LEN or body[:2] != MAGIC:
        raise FramingError("body is not Avro single-object encoded (missing C3 01 marker)")
    position = union_index.get(body[2:HEADER_LEN])
    if position is None:
        writer = registry().by_fingerprint(body[2:HEADER_LEN])
        raise CodecError(f"{writer.name} cannot be the body of a risk input")
    topic = origin_topic.encode()
    return b"".join((head, zigzag_long(len(topic)), topic, zigzag_long(origin_partition),
                     zigzag_long(origin_offset), zigzag_long(position), body[HEADER_LEN:]))
