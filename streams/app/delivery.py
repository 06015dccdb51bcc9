"""Waiting until the broker has what a stage sent, before its input may be committed.

Faust commits an agent's input offsets once the events are acked, and acks a batch as soon
as the agent asks for the next one (streams.app.batching). Its own flush before a commit
gives up after 0.1 s without a delivery (faust/transport/producer.py, ``flush_atmost``), so
a worker killed at the wrong moment could have committed input whose output (a price, a
forwarded account event, a report, a dead letter, a table write) never reached the broker.
Every stage therefore awaits the futures of its sends (`delivered`) and of its table
writes (`changelog_delivered`) before it returns from a batch: nothing is committed that
was not processed and durably written, or dead-lettered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from streams.app.tables import TrackedTable


async def delivered(sent: list[Awaitable[Any] | None]) -> None:
    """Wait until the broker has acknowledged every send in `sent`, then empty it (a failed
    send raises: the agent fails and the worker stops before the input is committed).
    `None` entries (sends that returned no future, as in tests) are skipped."""
    if sent:
        pending = [future for future in sent if future is not None]
        sent.clear()
        await asyncio.gather(*pending)


async def changelog_delivered(tables: Iterable[Mapping[Any, Any]]) -> None:
    """Wait for the changelog writes of each of `tables` (a plain mapping, as in tests,
    has none)."""
    for table in tables:
        if isinstance(table, TrackedTable):
            await table.changelog_delivered()
