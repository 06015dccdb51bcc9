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

from streams import domain
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

def _record_classes() -> dict[str, type]:
    return {
        f"{NAMESPACE}.{obj.__name__}": obj
        for obj in vars(domain).values()
        if isinstance(obj, type) and dataclasses.is_dataclass(obj)
    }


RECORD_CLASSES: dict[str, type] = _record_classes()


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def to_datum(obj: Any) -> Any:
    """A domain value as an Avro datum for fastavro (unions of records in tuple notation)."""
    if dataclasses.is_dataclass(obj):
        return {name: conv(getattr(obj, name)) for name, conv in _writers(type(obj))}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, list):
        return [to_datum(item) for item in obj]
    if isinstance(obj, dict):
        return {key: to_datum(value) for key, value in obj.items()}
    return obj


def _tagged(obj: Any) -> Any:
    """Union branch with the record named explicitly, so fastavro never guesses."""
    if dataclasses.is_dataclass(obj):
        return (f"{NAMESPACE}.{type(obj).__name__}", to_datum(obj))
    return to_datum(obj)


@cache
def _writers(cls: type) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        members = _union_members(hints[field.name])
        records = [m for m in members or () if dataclasses.is_dataclass(m)]
        out.append((field.name, _tagged if len(records) > 1 else to_datum))
    return tuple(out)


def from_datum(cls: type[T], datum: Any) -> T:
    """A domain dataclass from a datum read with ``return_record_name=True``."""
    return _build(cls, datum)


def _build(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    members = _union_members(tp)
    if members is not None:
        if isinstance(value, tuple):
            name, inner = value
            return _build(RECORD_CLASSES[name], inner)
        non_null = [m for m in members if m is not type(None)]
        return _build(non_null[0], value)
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_build(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(tp)
        return {k: _build(item, v) for k, v in value.items()}
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            return tp(**{name: _build(hints[name], value[name]) for name in hints if name in value})
        if issubclass(tp, Enum):
            return tp(value)
        if tp is float:
            return float(value)
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}


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
    if len(payload) < HEADER_LEN or payload[:2] != MAGIC:
        raise FramingError("payload is not Avro single-object encoded (missing C3 01 marker)")
    writer = registry().by_fingerprint(payload[2:HEADER_LEN])
    reader = registry().get(expected).parsed if expected and expected != writer.name else None
    try:
        datum = schemaless_reader(
            io.BytesIO(payload[HEADER_LEN:]),
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
    return (expected or writer.name), datum


def decode(payload: bytes, cls: type[T]) -> T:
    """Decode framed bytes into the domain class `cls` (schema ``aps.<ClassName>``)."""
    _, datum = decode_datum(payload, f"{NAMESPACE}.{cls.__name__}")
    try:
        return from_datum(cls, datum)
    except (TypeError, ValueError, KeyError) as exc:
        raise CodecError(f"{cls.__name__}: {exc}") from exc
