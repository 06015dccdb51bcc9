"""Consumer-group lag, read without joining the group (so it never disturbs a rebalance)."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition


def group_lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Messages of `topics` that `group` has not committed yet (all of a partition it never
    committed on)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=5)
        partitions = [TopicPartition(t, p) for t in topics if t in metadata.topics
                      for p in metadata.topics[t].partitions]
        lag = 0
        for tp in consumer.committed(partitions, timeout=10) if partitions else []:
            high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                  timeout=5, cached=False)[1]
            lag += max(0, high - tp.offset) if tp.offset >= 0 else high
        return lag
    finally:
        consumer.close()
