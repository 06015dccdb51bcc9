"""Reading a range of one partition of a topic, outside Faust's consumer group.

The risk agent re-applies inputs its persisted state does not reflect yet but that its
consumer group has already committed (see streams.app.checkpoint): it reads them here, by
offset, with a manually assigned librdkafka consumer, so Faust's own consumer, its
position and its commit bookkeeping are left alone. The calls block: run them in a thread.
Only record offsets are used, never high watermarks (Tansu under-reports those; see
`end_offsets_from_records` for the end offsets Faust's table recovery reads up to).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from streams.errors import InfraError
from streams.infra.broker import client_config


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record read back: its coordinates, key and value."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class RangeReader:
    """Reads records ``[start, end)`` of one topic partition, in offset order."""

    def __init__(self, bootstrap: str, topic: str, partition: int, start: int, end: int,
                 *, stall_timeout: float = 60.0) -> None:
        self.topic = topic
        self.partition = partition
        self.next_offset = start
        self.end = end
        self.stall_timeout = stall_timeout
        self._consumer = Consumer(client_config(bootstrap, **{
            "group.id": "aps-risk-catch-up", "enable.auto.commit": False,
            "enable.auto.offset.store": False, "fetch.wait.max.ms": 20,
        }))
        self._consumer.assign([TopicPartition(topic, partition, start)])

    @property
    def done(self) -> bool:
        """True once every record before `end` has been returned."""
        return self.next_offset >= self.end

    def read(self, max_records: int) -> list[LogRecord]:
        """The next up to `max_records` records of the range (blocking); empty when done.

        Raises InfraError if the broker hands out nothing for `stall_timeout` seconds
        while records of the range are still missing."""
        out: list[LogRecord] = []
        deadline = time.monotonic() + self.stall_timeout
        while not self.done and len(out) < max_records:
            messages = self._consumer.consume(max_records - len(out), 0.2)
            if not messages:
                if time.monotonic() > deadline:
                    raise InfraError(f"{self.topic}[{self.partition}]: no record at or after "
                                     f"offset {self.next_offset} within "
                                     f"{self.stall_timeout}s (reading up to {self.end})")
                continue
            deadline = time.monotonic() + self.stall_timeout
            for message in messages:
                if message.error() is not None:
                    raise InfraError(f"{self.topic}[{self.partition}]: {message.error()}")
                offset = message.offset()
                if offset < self.next_offset:
                    continue
                self.next_offset = offset + 1
                if offset >= self.end:
                    self.next_offset = self.end
                    break
                value = message.value()
                out.append(LogRecord(self.topic, self.partition, offset, message.key(),
                                     value if value is not None else b""))
        return out

    def close(self) -> None:
        """Release the consumer."""
        self._consumer.close()


def end_offsets_from_records(bootstrap: str, reported: Mapping[tuple[str, int], int], *,
                             timeout: float = 10.0, quiet: float = 0.3
                             ) -> dict[tuple[str, int], int]:
    """The true end offset (last record's offset + 1) of each (topic, partition), given
    the end offsets the broker `reported` (blocking).

    Tansu 0.6 reports the base offset of a partition's last record batch + 1, so a last
    batch of n records looks n - 1 records short. Reading from `reported - 1` returns that
    whole last batch (a broker can only serve whole batches); its last offset + 1 is the
    end. On a broker that reports the true end the record read back is the last one and
    nothing changes. A partition that yields nothing within `timeout` keeps its reported
    value."""
    ends = dict(reported)
    wanted = {tp: end for tp, end in reported.items() if end > 0}
    if not wanted:
        return ends
    consumer = Consumer(client_config(bootstrap, **{
        "group.id": "aps-end-offsets", "enable.auto.commit": False,
        "enable.auto.offset.store": False, "fetch.wait.max.ms": 20,
    }))
    try:
        consumer.assign([TopicPartition(topic, partition, end - 1)
                         for (topic, partition), end in wanted.items()])
        seen: set[tuple[str, int]] = set()
        deadline = time.monotonic() + timeout
        last_news = time.monotonic()
        while time.monotonic() < deadline:
            messages = consumer.consume(10_000, 0.05)
            for message in messages:
                if message.error() is not None:
                    continue
                tp = (message.topic(), message.partition())
                if tp in wanted:
                    seen.add(tp)
                    ends[tp] = max(ends[tp], message.offset() + 1)
                    last_news = time.monotonic()
            if len(seen) == len(wanted) and time.monotonic() - last_news >= quiet:
                break
    finally:
        consumer.close()
    return ends
