"""Checkpoints of a risk partition's persisted state: which input it reflects, and proof
that the stored entries are exactly the ones written up to that input.

The risk agent persists a partition's state as many entries in two Faust tables (account
states in ``risk-accounts``, market entries in ``risk-market``). Neither what a restarted
worker finds in its RocksDB files nor what Faust rebuilds from the changelogs is
guaranteed to be one consistent moment of that state:

- a SIGKILL in the middle of a persist step leaves some entries of the step written and
  others not;
- the two tables have their own changelog topics, so a fresh data directory rebuilt from
  them can hold the accounts of one step and the market entries of an earlier one;
- Faust replays the changelog from the offset it last saw acknowledged
  (faust/tables/base.py, ``_on_changelog_sent``) over RocksDB files that already hold
  newer writes, so keys written twice since then go back to an older value;
- on Tansu, Faust stops reading a changelog at the under-reported high watermark
  (faust/tables/recovery.py, ``_build_highwaters``) and misses the end of it.

So every persist step ends with a `Checkpoint` entry: the offset of the last risk.inputs
record of the partition the state reflects (``through``), and a digest of every stored
entry of the partition (an order-independent XOR of 128-bit BLAKE2b hashes of table, key
and value, kept up to date entry by entry); the step also begins with one that names the
state it is about to write. A restarted worker recomputes the digest of what it finds; if
it matches either state, the state is exactly that one and the worker re-applies
risk.inputs from its ``through + 1``; if not (a kill in the middle of the step's writes),
the state is discarded and the partition's log is re-applied from its first record.
Either way the engine ends up where a replay of the log puts it.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

MAGIC = b"APSCP2"
_LAYOUT = struct.Struct(">q16sq16s")


def checkpoint_key(partition: int) -> bytes:
    """Key of a partition's checkpoint in the risk-market table."""
    return f"checkpoint-{partition}".encode()


def entry_hash(table: str, key: bytes, value: bytes) -> int:
    """128-bit hash of one stored entry (table name, key and value)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(table.encode())
    digest.update(b"\x00")
    digest.update(len(key).to_bytes(4, "big"))
    digest.update(key)
    digest.update(value)
    return int.from_bytes(digest.digest(), "big")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """`through`: offset of the last risk.inputs record reflected (-1: none);
    `digest`: `StateDigest.value` of the partition's entries at that point.

    While a persist step is under way the checkpoint also names the state the step is
    writing (`next_through`, `next_digest`): written before the step's entries, so a
    worker killed after its last local write but before the changelog acknowledged the
    step finds exactly that state and continues from it (re-sending the entries to the
    changelog) instead of discarding it."""

    through: int
    digest: int
    next_through: int | None = None
    next_digest: int = 0

    def encode(self) -> bytes:
        """The stored bytes."""
        next_through = -2 if self.next_through is None else self.next_through
        return MAGIC + _LAYOUT.pack(self.through, self.digest.to_bytes(16, "big"),
                                    next_through, self.next_digest.to_bytes(16, "big"))

    @classmethod
    def decode(cls, raw: bytes | None) -> Checkpoint | None:
        """The checkpoint stored as `raw` (None when absent or not a checkpoint)."""
        if raw is None or not raw.startswith(MAGIC) or len(raw) != len(MAGIC) + _LAYOUT.size:
            return None
        through, digest, next_through, next_digest = _LAYOUT.unpack(raw[len(MAGIC):])
        return cls(through, int.from_bytes(digest, "big"),
                   None if next_through == -2 else next_through,
                   int.from_bytes(next_digest, "big"))

    def reflected(self, digest: int) -> tuple[int, bool] | None:
        """(offset reflected, whether the step under way must be re-sent) for stored
        entries whose digest is `digest`; None if they are neither state."""
        if digest == self.digest:
            return self.through, False
        if self.next_through is not None and digest == self.next_digest:
            return self.next_through, True
        return None


class StateDigest:
    """The order-independent digest of a set of stored entries, updated as they change."""

    def __init__(self) -> None:
        self._hashes: dict[tuple[str, bytes], int] = {}
        self.value = 0

    def set(self, table: str, key: bytes, value: bytes) -> None:
        """Entry `key` of `table` now holds `value`."""
        new = entry_hash(table, key, value)
        old = self._hashes.get((table, key), 0)
        self._hashes[(table, key)] = new
        self.value ^= old ^ new

    def delete(self, table: str, key: bytes) -> None:
        """Entry `key` of `table` no longer exists."""
        self.value ^= self._hashes.pop((table, key), 0)

    def entries(self) -> list[tuple[str, bytes]]:
        """(table, key) of every entry counted."""
        return list(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)
