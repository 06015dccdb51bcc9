"""Batches of whatever has arrived, without waiting: the stream class of APS's Faust apps.

Faust's `Stream.take_events(max_, within)` yields a batch when it holds `max_` events or
when a timer of `within` seconds fires, whichever comes first. On a quiet topic that timer
is the latency: every hop waits up to `within` for a batch that will never fill (APS used
20 ms per hop). `ReadyBatchStream.take_ready(max_)` yields as soon as the agent's queue is
empty: one event alone is processed at once, and under load the batch grows to whatever
queued while the previous batch was processed (up to `max_`), which is exactly when
batching pays. There is no timer, so an idle agent costs nothing.

Acknowledgement is Faust's: the events of a batch are acked after the agent has processed
it and asks for the next one (the consumer commits acked offsets only); a batch whose
processing raised is never acked. The batch's messages are marked processed first: APS's
consumer refuses to ack any other agent input (streams.app.transport, `_Consumer.ack`),
such as one Faust skips during a rebalance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import faust
from faust.types import EventT

# Faust's consumer hands the records of one fetch to the agent's queue one at a time, with
# several turns of the event loop between two of them; a queue seen empty for this many turns
# in a row holds nothing more of that fetch.
SETTLE_TURNS = 3
MAX_SETTLE_TURNS = 64


async def _settle(queue: asyncio.Queue, pending: list[EventT], max_: int) -> None:
    """Give the consumer a few loop turns to deliver the rest of its fetch (no timer)."""
    quiet = 0
    for _ in range(MAX_SETTLE_TURNS):
        if len(pending) >= max_:
            return
        before = len(pending)
        await asyncio.sleep(0)
        quiet = quiet + 1 if queue.empty() and len(pending) == before else 0
        if quiet >= SETTLE_TURNS:
            return


class ReadyBatchStream(faust.Stream):
    """A Faust stream that can also be read in ready batches (`take_ready`)."""

    async def take_ready(self, max_: int) -> AsyncIterator[list[EventT]]:
        """Yield lists of 1..`max_` events: everything queued, as soon as the queue is empty
        (after a few event-loop turns that let the consumer deliver the rest of a fetch).

        The agent must consume each batch before asking for the next; events arriving
        meanwhile wait in the channel's queue (Faust's backpressure applies as usual).
        """
        if max_ < 1:
            raise ValueError("max_ must be >= 1")
        pending: list[EventT] = []
        ready = asyncio.Event()
        room = asyncio.Event()
        room.set()
        queue = self.channel.queue  # type: ignore[attr-defined]

        async def collect(value: object) -> object:
            # runs in Faust's passive drainer, once per event, with the event current
            await room.wait()
            event = self.current_event
            if event is None:  # pragma: no cover - Faust sets it before processors run
                raise RuntimeError("no current event in a stream processor")
            pending.append(event)
            if len(pending) >= max_:
                room.clear()
                ready.set()
            elif queue.empty():
                ready.set()
            return value

        enable_acks = self.enable_acks
        self.enable_acks = False  # acked below, after the batch is processed
        self.add_processor(collect)
        self._enable_passive(self.channel)  # type: ignore[arg-type]
        try:
            while not self.should_stop:
                await self.wait_for_stopped(ready)  # type: ignore[arg-type]
                if not pending:
                    ready.clear()
                    continue
                await _settle(queue, pending, max_)
                room.clear()
                batch = list(pending)
                # if the agent raises while processing, the generator is closed here and
                # the batch is never acked: its offsets are not committed, and the worker
                # (which goes down with the agent) reads it again when it restarts
                yield batch
                pending.clear()
                mark_processed = getattr(self.app.consumer, "mark_processed", None)
                if mark_processed is not None:  # APS's transport (streams.app.transport)
                    mark_processed(event.message for event in batch)
                for event in batch:
                    await self.ack(event)
                ready.clear()
                room.set()
        finally:
            self.enable_acks = enable_acks
            self._processors.remove(collect)
