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
such as one Faust skips during a rebalance. An agent whose batch is done only once the
broker has acknowledged what it sent can hand that last step to `defer_ack`: the agent
takes the next batch at once, the step runs after the previous batch's step, and the batch
is acked when it completes (at most `SETTLE_DEPTH` batches wait so).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable

import faust
from faust.types import EventT

log = logging.getLogger(__name__)

# batches whose deferred step may be under way at once (streams.app.batching.defer_ack)
SETTLE_DEPTH = 2

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


def _discard(step: Awaitable[None]) -> None:
    """Close a step that will never run (a coroutine left unawaited would warn)."""
    close = getattr(step, "close", None)
    if close is not None:
        close()


class ReadyBatchStream(faust.Stream):
    """A Faust stream that can also be read in ready batches (`take_ready`)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._deferral: Awaitable[None] | None = None
        self._settling: deque[asyncio.Task] = deque()
        self._crashing: asyncio.Future | None = None

    def defer_ack(self, step: Awaitable[None]) -> None:
        """Ack the batch `take_ready` yielded last only once `step` completed, and start
        `step` only once the step of the batch before completed. Call it before asking for
        the next batch."""
        self._deferral = step

    async def _ack_batch(self, batch: list[EventT]) -> None:
        mark_processed = getattr(self.app.consumer, "mark_processed", None)
        if mark_processed is not None:  # APS's transport (streams.app.transport)
            mark_processed(event.message for event in batch)
        for event in batch:
            await self.ack(event)

    async def _after_step(self, previous: asyncio.Task | None, step: Awaitable[None],
                          batch: list[EventT]) -> None:
        if previous is not None:
            try:
                await previous  # its failure fails this one too: nothing after it is acked
            except BaseException:
                _discard(step)
                raise
        await step
        await self._ack_batch(batch)

    async def _defer(self, batch: list[EventT], step: Awaitable[None]) -> None:
        """Chain `step` and the batch's ack after the steps under way; wait while
        SETTLE_DEPTH of them are (a failed one raises here, in the agent)."""
        try:
            while self._settling and (len(self._settling) >= SETTLE_DEPTH
                                      or self._settling[0].done()):
                await self._settling.popleft()
        except BaseException:
            _discard(step)
            raise
        previous = self._settling[-1] if self._settling else None
        task = asyncio.ensure_future(self._after_step(previous, step, batch))
        task.add_done_callback(self._step_done)
        self._settling.append(task)

    def _step_done(self, task: asyncio.Task) -> None:
        """A failed step stops the worker even if no batch follows to raise it."""
        if task.cancelled() or task.exception() is None:
            return
        log.critical("%s: a batch's deferred step failed: %r; stopping the worker",
                     self, task.exception())
        crash = getattr(self.app, "crash", None)
        if crash is not None:
            self._crashing = asyncio.ensure_future(crash(task.exception()))

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
                deferral, self._deferral = self._deferral, None
                if deferral is None:
                    await self._ack_batch(batch)
                else:
                    await self._defer(batch, deferral)
                ready.clear()
                room.set()
        finally:
            self.enable_acks = enable_acks
            self._processors.remove(collect)
