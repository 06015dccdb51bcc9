"""Sending a processing step's records as one Kafka record batch per topic partition.

Faust's ``send_soon`` puts every record in its producer buffer, which one background task
drains a record at a time through Faust's and aiokafka's per-message path: a queue, the
sensors, metadata checks and several event-loop turns per record (0.5-1 ms each on this
machine under load). Records queued behind a burst of table writes wait for all of them,
so a command decided at once could reach the broker only after the hundreds of account
states the same worker persisted just before it.

`BatchSender` takes the records of one step synchronously, and at the end of the step
(the next event-loop turn) appends them to aiokafka ``BatchBuilder``s, one per topic
partition and as many as the batch size needs, which the producer Faust already runs sends
as they are: no per-record buffer, no per-record task switch. Each record's future
resolves with its own metadata once the broker has acknowledged its batch. Records of one
topic partition go out in the order they were sent; partitions do not wait for each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import faust
from aiokafka.structs import RecordMetadata
from faust.types import TopicT

from streams.app.partitioning import key_partition

Headers = Sequence[tuple[str, bytes]]


class OutputTopic(Protocol):
    """What a stage needs of a topic it sends to: a Faust topic or a `BatchedTopic`."""

    @property
    def partitions(self) -> int | None:
        """The topic's partition count, if known."""

    def get_topic_name(self) -> str:
        """The topic's name."""

    def send_soon(self, *, key: bytes, value: bytes | None, partition: int | None = None,
                  headers: Headers | None = None) -> Awaitable[Any] | None:
        """Send one record; the awaitable completes once the broker has it."""


@dataclass(slots=True)
class _Pending:
    key: bytes | None
    value: bytes | None
    headers: Headers
    future: asyncio.Future


class BatchSender:
    """Sends records in record batches through `app`'s producer (see the module)."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._open: dict[tuple[str, int], list[_Pending]] = {}
        self._queues: dict[tuple[str, int], asyncio.Queue] = {}
        # one sender task per topic partition, kept referenced (the loop holds tasks weakly)
        self._tasks: dict[tuple[str, int], asyncio.Task] = {}
        self._flush_scheduled = False

    def send(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
             headers: Headers = ()) -> asyncio.Future:
        """Queue one record for `topic`'s `partition` (value None: a tombstone); the future
        resolves with its RecordMetadata once the broker acknowledged it, or raises what the
        producer raised."""
        future = asyncio.get_running_loop().create_future()
        self._open.setdefault((topic, partition), []).append(
            _Pending(key, value, headers, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return future

    def _flush(self) -> None:
        """Build the batches of everything sent since the last flush and queue them."""
        self._flush_scheduled = False
        opened, self._open = self._open, {}
        try:
            producer = self._producer()
        except Exception as exc:  # not started, or stopped: every record fails
            for records in opened.values():
                _fail(records, exc)
            return
        for tp, records in opened.items():
            for batch, members in _batches(producer.create_batch, records):
                self._queue(tp).put_nowait((batch, members))

    def _producer(self) -> Any:
        """The aiokafka producer under Faust's (raises if it is not running)."""
        return self.app.producer._ensure_producer()  # type: ignore[attr-defined]

    def _queue(self, tp: tuple[str, int]) -> asyncio.Queue:
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = asyncio.Queue()
            self._tasks[tp] = asyncio.ensure_future(self._sender(tp, queue))
        return queue

    async def _sender(self, tp: tuple[str, int], queue: asyncio.Queue) -> None:
        """Hand `tp`'s batches to the producer one after the other (aiokafka keeps one
        batch per partition in its accumulator and waits for it to be drained)."""
        topic, partition = tp
        while True:
            batch, members = await queue.get()
            try:
                acked = await self._producer().send_batch(batch, topic, partition=partition)
            except Exception as exc:
                _fail(members, exc)
                continue
            acked.add_done_callback(_resolver(members))


class BatchedTopic:
    """The sending side of a Faust topic, through a `BatchSender`: `send_soon` takes what a
    Faust topic's does (a record without a partition goes where Kafka's default partitioner
    puts its key), so the stages do not know which one they were given."""

    def __init__(self, topic: TopicT, sender: BatchSender) -> None:
        self.topic = topic
        self.sender = sender
        self.name = topic.get_topic_name()
        self.partitions = topic.partitions

    def get_topic_name(self) -> str:
        """The topic's name."""
        return self.name

    def send_soon(self, *, key: bytes, value: bytes | None, partition: int | None = None,
                  headers: Headers | None = None) -> asyncio.Future:
        """Send one record (see `BatchSender.send`)."""
        if partition is None:
            if not self.partitions:
                raise ValueError(f"topic {self.name}: partition count unknown, give a partition")
            partition = key_partition(key, self.partitions)
        return self.sender.send(self.name, partition, key, value, headers or ())


def _batches(create_batch: Callable[[], Any], records: list[_Pending]
             ) -> list[tuple[Any, list[_Pending]]]:
    """`records` appended to as many closed batches as their size needs, in order (a record
    too large for an empty batch fails alone)."""
    out: list[tuple[Any, list[_Pending]]] = []
    batch, members = create_batch(), []
    for record in records:
        if not _append(batch, record):
            if members:
                out.append((batch, members))
                members = []
            batch = create_batch()  # a builder refusing a record closes itself
            if not _append(batch, record):
                _fail([record], ValueError(f"a record of {len(record.value or b'')} bytes "
                                           "does not fit in a producer batch"))
                batch = create_batch()
                continue
        members.append(record)
    if members:
        out.append((batch, members))
    for built, _ in out:
        built.close()  # nothing else (a producer.send) may append to it
    return out


def _append(batch: Any, record: _Pending) -> bool:
    """Append `record` to an aiokafka BatchBuilder (timestamp: now); False if it is full."""
    return batch.append(timestamp=None, key=record.key, value=record.value,
                        headers=list(record.headers)) is not None


def _resolver(members: list[_Pending]) -> Callable[[asyncio.Future], None]:
    """Callback resolving each record of an acknowledged batch with its own offset."""

    def resolve(acked: asyncio.Future) -> None:
        if acked.cancelled():
            _fail(members, asyncio.CancelledError("batch send cancelled"))
            return
        exc = acked.exception()
        if exc is not None:
            _fail(members, exc)
            return
        meta: RecordMetadata = acked.result()
        for index, record in enumerate(members):
            if not record.future.done():
                record.future.set_result(meta._replace(offset=meta.offset + index))

    return resolve


def _fail(records: list[_Pending], exc: BaseException) -> None:
    for record in records:
        if not record.future.done():
            record.future.set_exception(exc)
