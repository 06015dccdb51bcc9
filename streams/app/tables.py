"""A Faust table whose writer can wait until its changelog has every write so far.

Faust sends a table write to the changelog topic in the background and only remembers the
offset it was acknowledged at (faust/tables/base.py, ``_on_changelog_sent``). The risk
agent must know that every entry a checkpoint vouches for is in the changelog before it
writes the checkpoint (streams.app.checkpoint): `TrackedTable.changelog_delivered` waits
for exactly that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import faust


class TrackedTable(faust.Table):
    """A Faust table that keeps the futures of its changelog sends until they are awaited.

    In an app with a `BatchSender` (``app.batches``, streams.app.factory) a write of bytes
    goes to the changelog in the step's record batch rather than through Faust's producer
    buffer, and the offset it was acknowledged at is stored as Faust's own callback would
    (``_on_changelog_sent``: the RocksDB store's persisted offset, where recovery resumes).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unacked: list[Awaitable[Any]] = []

    def send_changelog(self, partition: int | None, key: Any, value: Any,
                       key_serializer: Any = None, value_serializer: Any = None
                       ) -> Awaitable[Any]:
        """Send a write to the changelog, remembered until `changelog_delivered`."""
        sender = getattr(self.app, "batches", None)
        if (sender is None or partition is None or self.app.in_transaction
                or not isinstance(key, bytes)
                or not (value is None or isinstance(value, bytes))):
            future = super().send_changelog(partition, key, value, key_serializer,
                                            value_serializer)
            self._unacked.append(future)
            return future
        sent = sender.send(self.changelog_topic.get_topic_name(), partition, key, value)
        sent.add_done_callback(self._on_batch_changelog_sent)
        self._unacked.append(sent)
        # Faust's table reads the partition of what this returns (``.message.partition``)
        return _BatchedWrite(_Written(partition), sent)  # type: ignore[return-value]

    def _on_batch_changelog_sent(self, sent: asyncio.Future) -> None:
        if sent.cancelled() or sent.exception() is not None:
            return  # changelog_delivered raises it
        meta = sent.result()
        self.data.set_persisted_offset(meta.topic_partition, meta.offset)

    async def changelog_delivered(self) -> None:
        """Wait until the broker has acknowledged every changelog write sent so far (a
        failed send raises)."""
        pending, self._unacked = self._unacked, []
        if pending:
            await asyncio.gather(*pending)


@dataclass(frozen=True, slots=True)
class _Written:
    partition: int


@dataclass(frozen=True, slots=True)
class _BatchedWrite:
    """A changelog write sent in a record batch, as Faust's table looks at it."""

    message: _Written
    future: asyncio.Future


def tracked_table(app: faust.App, name: str, partitions: int) -> TrackedTable:
    """Add a bytes -> bytes `TrackedTable` called `name` to `app`."""
    table = TrackedTable(app, name=name, beacon=app.tables.beacon, partitions=partitions,
                         key_type=bytes, value_type=bytes)
    added = app.tables.add(table)
    assert isinstance(added, TrackedTable)
    return added
