"""Recorded commands against replayed ones: which match, which are missing, extra, changed.

Pure: no I/O. A command is compared field by field on its Avro datum (nested fields as
dotted paths, e.g. ``provenance.price``, ``trigger.delta``); doubles are equal when they are
the same number (NaN equals NaN), so a difference is a difference of the bytes the engine
would have encoded. The signature (the worker's HMAC over the command's bytes, made with
APS_COMMAND_KEY: streams/codecs/signing.py) is compared when the replay signs with that key,
and left out otherwise; what it signs is compared field by field either way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from streams.codecs.avro import to_datum
from streams.domain import ScalingCommand

Kind = Literal["missing", "extra", "changed"]


@dataclass(frozen=True, slots=True)
class Emission:
    """Where a command was decided: its risk partition, the input's offset and event time."""

    partition: int
    input_offset: int
    event_time: int


@dataclass(frozen=True, slots=True)
class FieldDifference:
    """One field of a command that differs, with both values (None: absent on that side)."""

    field: str
    recorded: Any
    replayed: Any


@dataclass(frozen=True, slots=True)
class CommandDifference:
    """A command that is not the same in the record and in the replay.

    missing: the replay decided it and the record does not have it; extra: the record has it
    and the replay did not decide it; changed: both have it, `fields` differ. `at` is where
    the replay decided it (missing, changed) or where it would have had to (extra: the
    first input of the account's partition at the command's `created_at`, if any)."""

    kind: Kind
    command_id: str
    account_id: str
    at: Emission | None
    fields: tuple[FieldDifference, ...] = ()


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of comparing the commands of one period."""

    recorded: int
    replayed: int
    matched: int
    differences: tuple[CommandDifference, ...]

    def count(self, kind: Kind) -> int:
        """How many differences of `kind`."""
        return sum(1 for d in self.differences if d.kind == kind)

    @property
    def identical(self) -> bool:
        """True when every recorded command was replayed exactly and nothing else was."""
        return not self.differences

    @property
    def first_divergence(self) -> CommandDifference | None:
        """The difference decided first (by event time, then partition and input offset;
        the differences are kept in that order, unlocated ones last)."""
        return self.differences[0] if self.differences else None


def flatten(command: ScalingCommand, *, signature: bool = True) -> dict[str, Any]:
    """A command's fields as {dotted path: value} (its Avro datum, flattened); without the
    signature unless `signature`."""
    out: dict[str, Any] = {}
    _flatten(to_datum(command), "", out)
    if not signature:
        out.pop("signature", None)
    return out


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, tuple):  # (record name, fields) of a union branch
        value = value[1]
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def same_value(a: Any, b: Any) -> bool:
    """Equal as the engine would encode them: NaN equals NaN, int 1 is not float 1.0."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def field_differences(recorded: ScalingCommand, replayed: ScalingCommand, *,
                      signature: bool = True) -> tuple[FieldDifference, ...]:
    """The fields in which two commands differ, in schema order."""
    left = flatten(recorded, signature=signature)
    right = flatten(replayed, signature=signature)
    names = list(left) + [name for name in right if name not in left]
    return tuple(FieldDifference(name, left.get(name), right.get(name)) for name in names
                 if name not in left or name not in right
                 or not same_value(left[name], right[name]))


def compare(recorded: Iterable[ScalingCommand],
            replayed: Mapping[str, tuple[ScalingCommand, Emission]],
            locate: Callable[[ScalingCommand], Emission | None] = lambda _c: None, *,
            signatures: bool = True) -> Comparison:
    """Compare the recorded commands of a period with the replayed ones (by command id).

    `locate` says where the replay would have decided a recorded command it did not decide
    (an extra one); `signatures`: compare the signatures too."""
    by_id = {c.command_id: c for c in recorded}
    differences: list[CommandDifference] = []
    matched = 0
    for command_id, (command, at) in replayed.items():
        original = by_id.get(command_id)
        if original is None:
            differences.append(CommandDifference("missing", command_id, command.account_id, at))
            continue
        if _equal(original, command, signatures):
            matched += 1
            continue
        fields = field_differences(original, command, signature=signatures)
        if fields:
            differences.append(CommandDifference("changed", command_id, command.account_id,
                                                 at, fields))
        else:
            matched += 1
    for command_id, original in by_id.items():
        if command_id not in replayed:
            differences.append(CommandDifference("extra", command_id, original.account_id,
                                                 locate(original)))
    differences.sort(key=_order)
    return Comparison(len(by_id), len(replayed), matched, tuple(differences))


def _equal(a: ScalingCommand, b: ScalingCommand, signatures: bool) -> bool:
    """The fast path of a match: equal as dataclasses (a NaN anywhere makes this False and
    leaves the verdict to `field_differences`)."""
    return a == (b if signatures else dataclasses.replace(b, signature=a.signature))


def _order(d: CommandDifference) -> tuple[int, int, int, str]:
    if d.at is None:
        return (2**63, 0, 0, d.command_id)
    return (d.at.event_time, d.at.partition, d.at.input_offset, d.command_id)
