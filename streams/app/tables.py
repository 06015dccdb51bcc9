"""A Faust table whose writer can wait until its changelog has every write so far.

Faust sends a table write to the changelog topic in the background and only remembers the
offset it was acknowledged at (faust/tables/base.py, ``_on_changelog_sent``). The risk
agent must know that every entry a checkpoint vouches for is in the changelog before it
writes the checkpoint (streams.app.checkpoint): `TrackedTable.changelog_delivered` waits
for exactly that.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.types.tuples import FutureMessage


class TrackedTable(faust.Table):
    """A Faust table that keeps the futures of its changelog sends until they are awaited."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unacked: list[FutureMessage] = []

    def send_changelog(self, partition: int | None, key: Any, value: Any,
                       key_serializer: Any = None, value_serializer: Any = None
                       ) -> FutureMessage:
        """Faust's changelog send, remembered until `changelog_delivered`."""
        future = super().send_changelog(partition, key, value, key_serializer,
                                        value_serializer)
        self._unacked.append(future)
        return future

    async def changelog_delivered(self) -> None:
        """Wait until the broker has acknowledged every changelog write sent so far (a
        failed send raises)."""
        pending, self._unacked = self._unacked, []
        if pending:
            await asyncio.gather(*pending)


def tracked_table(app: faust.App, name: str, partitions: int) -> TrackedTable:
    """Add a bytes -> bytes `TrackedTable` called `name` to `app`."""
    table = TrackedTable(app, name=name, beacon=app.tables.beacon, partitions=partitions,
                         key_type=bytes, value_type=bytes)
    added = app.tables.add(table)
    assert isinstance(added, TrackedTable)
    return added
