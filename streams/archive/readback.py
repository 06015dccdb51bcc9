"""Domain records back from the archive's `record` JSON (the inverse of `rows.record_json`).

The archive keeps every message's whole record as JSON text: field order = schema order, a
union branch that is one of several records carries its short name in ``"_type"``, bytes
are hex, NaN and the infinities are the strings "NaN", "Infinity", "-Infinity", and doubles
are written with Python's shortest round-trip digits (the column-wise writer reproduces
them byte for byte; tests/integration/archive/test_columnar.py). So parsing the text and
undoing those three conventions gives back exactly the values that were encoded: this is
what `aps replay` feeds the engine when it replays from the archive.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from enum import Enum
from functools import cache
from typing import Any, TypeVar

from streams.codecs.avro import NAMESPACE, from_datum

T = TypeVar("T")
Converter = Callable[[Any], Any]

_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def record_from_json(cls: type[T], text: str) -> T:
    """The domain record `cls` whose archived `record` JSON is `text`.

    Raises ValueError (or KeyError / TypeError) when the text is not such a record."""
    return from_datum(cls, _datum_converter(cls)(json.loads(text)))


def _identity(value: Any) -> Any:
    return value


def _double(value: Any) -> float:
    if isinstance(value, str):
        return _NON_FINITE[value]
    return float(value)


def _short(cls: type) -> str:
    return cls.__name__


@cache
def _datum_converter(tp: Any) -> Converter:
    """JSON value -> fastavro-style datum (tuples for unions of several records)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        present = [m for m in typing.get_args(tp) if m is not type(None)]
        if len(present) == 1:
            inner = _datum_converter(present[0])
            return inner if inner is _identity else (
                lambda v: None if v is None else inner(v))
        return _tagged_union(present)
    origin = typing.get_origin(tp)
    if origin is list:
        item = _datum_converter(typing.get_args(tp)[0])
        return _identity if item is _identity else (lambda v: [item(x) for x in v])
    if origin is dict:
        value_conv = _datum_converter(typing.get_args(tp)[1])
        return _identity if value_conv is _identity else (
            lambda v: {k: value_conv(x) for k, x in v.items()})
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _record(tp)
    if tp is float:
        return _double
    if tp is bytes:
        return bytes.fromhex
    if isinstance(tp, type) and issubclass(tp, Enum):
        return _identity  # the symbol; from_datum maps it to the member
    return _identity


def _tagged_union(members: list[Any]) -> Converter:
    branches = {_short(m): (f"{NAMESPACE}.{m.__name__}", _datum_converter(m)) for m in members}

    def union(value: Any) -> Any:
        if value is None:
            return None
        fields = dict(value)
        name, convert = branches[fields.pop("_type")]
        return (name, convert(fields))
    return union


def _record(cls: type) -> Converter:
    hints = typing.get_type_hints(cls)
    converted = tuple((f.name, conv) for f in dataclasses.fields(cls)
                      if (conv := _datum_converter(hints[f.name])) is not _identity)

    def record(value: dict[str, Any]) -> dict[str, Any]:
        for name, convert in converted:
            value[name] = convert(value[name])
        return value
    return record
