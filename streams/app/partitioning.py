"""Which risk partition owns an account.

The sequencer writes each account's inputs to an explicit partition of risk.inputs, and a
restarted worker regroups its table by the same function, so the mapping is written down
once here: Kafka's default (Java-compatible) murmur2 partitioner on the UTF-8 account id.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def account_partition(account_id: str, partitions: int) -> int:
    """Partition of `account_id` among `partitions` (same as Kafka's default partitioner)."""
    return key_partition(account_id.encode(), partitions)


def key_partition(key: bytes, partitions: int) -> int:
    """Partition Kafka's default partitioner gives a record with `key` among `partitions`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
