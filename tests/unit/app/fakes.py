"""What the stages read and write of Faust, for unit tests of the adapters: events are
plain objects with a message, topics collect what would be sent (and may hold the sends'
acknowledgements back), tables are dicts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeMessage:
    """The fields of a Faust message a stage reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: object
    timestamp: float = 1_768_478_400.0
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(eq=False)
class FakeEvent:
    """What a stage reads of a Faust event (weak-referenceable, as Faust's events are)."""

    message: FakeMessage


class FakeTopic:
    """Collects what a stage sends. With `held_acks`, each send returns a future the broker
    has not acknowledged yet (`acknowledge` resolves them); otherwise it returns None.
    `partitions`: the partition count a stage reads (None: unknown, the stage uses
    APS_PARTITIONS)."""

    def __init__(self, *, held_acks: bool = False, partitions: int | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.held_acks = held_acks
        self.partitions = partitions
        self.pending: list[asyncio.Future[None]] = []

    def send_soon(self, **kwargs: Any) -> asyncio.Future[None] | None:
        """Record one send."""
        self.sent.append(kwargs)
        if not self.held_acks:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future

    def acknowledge(self) -> int:
        """Acknowledge every send so far; how many were waiting."""
        waiting = [future for future in self.pending if not future.done()]
        for future in waiting:
            future.set_result(None)
        return len(waiting)


def fake_events(topic: str, values: Sequence[object], partition: int = 0,
                first_offset: int = 0) -> list[FakeEvent]:
    """Events of `topic` carrying `values`, at consecutive offsets."""
    return [FakeEvent(FakeMessage(topic, partition, first_offset + n, b"key", value))
            for n, value in enumerate(values)]
