"""BatchSender: a step's records go out as one record batch per topic partition, in order,
each record resolved with its own offset, and a failed batch fails its records."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata, TopicPartition

from streams.app.batchsend import BatchedTopic, BatchSender
from streams.app.partitioning import key_partition


class FakeProducer:
    """aiokafka's batch interface: real BatchBuilders, acknowledgements held until told."""

    def __init__(self, batch_size: int = 16 * 1024) -> None:
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, int, asyncio.Future]] = []
        self.ends: dict[tuple[str, int], int] = {}
        self.refuse: Exception | None = None

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)  # no compression

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int
                         ) -> asyncio.Future:
        if self.refuse is not None:
            raise self.refuse
        count = batch._relative_offset
        future = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, count, future))
        return future

    def acknowledge(self) -> None:
        for topic, partition, count, future in self.sent:
            if not future.done():
                base = self.ends.get((topic, partition), 0)
                self.ends[(topic, partition)] = base + count
                future.set_result(RecordMetadata(topic, partition,
                                                 TopicPartition(topic, partition), base, -1,
                                                 0, 0))


def _sender(producer: FakeProducer) -> BatchSender:
    app: Any = SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer))
    return BatchSender(app)


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_one_step_is_one_batch_per_partition_and_each_record_gets_its_offset() -> None:
    async def run() -> None:
        producer = FakeProducer()
        sender = _sender(producer)
        a = [sender.send("t", 0, b"k", f"a{n}".encode()) for n in range(3)]
        b = sender.send("t", 1, b"k", b"b0", [("h", b"1")])
        await _turns()
        assert sorted((t, p, c) for t, p, c, _ in producer.sent) == [("t", 0, 3), ("t", 1, 1)]
        assert not any(f.done() for f in [*a, b])  # nothing resolves before the broker acks
        producer.acknowledge()
        await _turns()
        assert [f.result().offset for f in a] == [0, 1, 2]
        assert b.result().offset == 0 and b.result().partition == 1
    asyncio.run(run())


def test_a_partition_overflowing_one_batch_goes_out_in_order_in_several() -> None:
    async def run() -> None:
        producer = FakeProducer(batch_size=1024)
        sender = _sender(producer)
        futures = [sender.send("t", 0, b"k", bytes(300)) for _ in range(10)]
        await _turns(20)
        producer.acknowledge()
        await _turns(20)
        counts = [c for _, _, c, _ in producer.sent]
        assert len(counts) > 1 and sum(counts) == 10
        assert [f.result().offset for f in futures] == list(range(10))
    asyncio.run(run())


def test_a_record_larger_than_the_batch_size_goes_in_a_batch_of_its_own() -> None:
    async def run() -> None:
        producer = FakeProducer(batch_size=256)
        sender = _sender(producer)
        futures = [sender.send("t", 0, b"k", value) for value in (b"x", bytes(4096), b"y")]
        await _turns(20)
        producer.acknowledge()
        await _turns(20)
        assert [c for _, _, c, _ in producer.sent] == [1, 1, 1]
        assert [f.result().offset for f in futures] == [0, 1, 2]
    asyncio.run(run())


def test_a_batch_the_producer_refuses_fails_its_records() -> None:
    async def run() -> None:
        producer = FakeProducer()
        producer.refuse = RuntimeError("broker gone")
        sender = _sender(producer)
        futures = [sender.send("t", 0, b"k", b"v") for _ in range(2)]
        await _turns()
        for future in futures:
            with pytest.raises(RuntimeError, match="broker gone"):
                future.result()
    asyncio.run(run())


def test_a_batched_topic_without_a_partition_uses_kafkas_default_partitioner() -> None:
    async def run() -> None:
        producer = FakeProducer()
        sender = _sender(producer)
        topic: Any = SimpleNamespace(get_topic_name=lambda: "reports", partitions=8)
        batched = BatchedTopic(topic, sender)
        batched.send_soon(key=b"acct-42", value=b"v")
        await _turns()
        assert producer.sent[0][:2] == ("reports", key_partition(b"acct-42", 8))
    asyncio.run(run())
