"""A stable digest of a settings dataclass tree (the engine's `config_hash`).

Kept apart from `streams.risk.settings` so the engine can hash its own config without
importing the module that loads it from a file (which imports the engine).
"""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import fields, is_dataclass
from functools import cache
from typing import Any


def settings_hash(settings: Any) -> str:
    """Hex SHA-256 (first 32 digits, as `streams.risk.account.rules_hash`) of the canonical
    JSON of a dataclass tree: sorted keys, tuples as lists, every float field as its
    `repr` (so 1 and 1.0 in a float field hash alike, and NaN is representable)."""
    text = json.dumps(_canonical(settings, type(settings)), sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _canonical(value: Any, hint: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        hints = _hints(type(value))
        return {f.name: _canonical(getattr(value, f.name), hints[f.name])
                for f in fields(value)}
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return repr(float(value))
    if isinstance(value, tuple | list):
        items = _item_hints(hint, len(value))
        return [_canonical(item, item_hint) for item, item_hint in zip(value, items,
                                                                       strict=True)]
    return value


def _item_hints(hint: Any, n: int) -> list[Any]:
    """The hint of each of `n` items of a tuple/list typed `hint` (Any when unknown)."""
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        return [args[0]] * n
    if typing.get_origin(hint) is list and len(args) == 1:
        return [args[0]] * n
    if len(args) == n:
        return list(args)
    return [Any] * n


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)
