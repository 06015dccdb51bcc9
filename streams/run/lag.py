"""How far consumer groups are behind, measured against offsets actually seen.

High watermarks are not used: Tansu 0.6 reports a partition's high watermark as the base
offset of its last record batch plus one. The end of a partition is taken from the
monitor, which has read every message (last offset seen + 1), and compared with the
group's committed offsets, read without joining the group (so it never disturbs a
rebalance).
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import Consumer, TopicPartition

from streams.infra.broker import client_config

PartitionKey = tuple[str, int]


def group_behind(bootstrap: str, group: str, ends: Mapping[PartitionKey, int]) -> int:
    """Messages before `ends` that `group` has not committed (all of a partition it never
    committed on)."""
    if not ends:
        return 0
    consumer = Consumer(client_config(bootstrap, **{"group.id": group,
                                                    "enable.auto.commit": False}))
    try:
        wanted = [TopicPartition(topic, partition) for topic, partition in sorted(ends)]
        behind = 0
        for tp in consumer.committed(wanted, timeout=10):
            end = ends[(tp.topic, tp.partition)]
            behind += end - tp.offset if 0 <= tp.offset < end else (end if tp.offset < 0 else 0)
        return behind
    finally:
        consumer.close()
