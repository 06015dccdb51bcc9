"""Reading and writing topics in integration tests (manual partition assignment: no group
join, so no rebalance wait)."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from streams.infra.broker import client_config, producer_config


def produce(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]],
            partition: int | None = None) -> None:
    """Send (key, value) pairs and wait for delivery."""
    producer = Producer(producer_config(bootstrap))
    for key, value in items:
        if partition is None:
            producer.produce(topic, key=key, value=value)
        else:
            producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


def read_topics(bootstrap: str, topics: list[str],
                until: Callable[[list[Message]], bool], timeout: float = 60.0,
                settle: float = 0.0) -> list[Message]:
    """Read every partition of `topics` from the beginning until `until(messages)` holds
    (then keep reading `settle` more seconds, to catch anything that should NOT arrive)."""
    consumer = Consumer(client_config(bootstrap, **{"group.id": "aps-tests",
                                                    "enable.auto.commit": False}))
    metadata = consumer.list_topics(timeout=10)
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
                     for p in metadata.topics[t].partitions])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                if message.error() is None:
                    messages.append(message)
            if settle_until is None and until(messages):
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                return messages
        raise AssertionError(f"condition not met within {timeout}s; read {len(messages)} "
                             f"messages from {topics}")
    finally:
        consumer.close()
