"""The Kafka transport of APS's Faust apps: Faust's aiokafka driver with a short fetch wait.

Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` hard-coded
(faust/transport/drivers/aiokafka.py, ``_create_worker_consumer``). A broker answers a
fetch on a partition with nothing new only when that wait is over, and aiokafka keeps one
fetch in flight per broker, so a record that arrives just after an empty fetch was sent
waits for it: on the embedded Tansu broker every hop cost 0-750 ms (p50 365 ms). Each hop
of the decision loop (tick -> price -> risk input -> command -> report) paid it.

`LowLatencyTransport` is the same driver with the wait set from ``APS_FETCH_WAIT_MS``
(default 20 ms). Tansu answers an empty fetch after about half the wait and does not wake a
waiting fetch when a record arrives, so a hop costs up to half the wait plus about a
millisecond. The price is broker CPU on idle topics, measured on this 2-core machine with
four idle consumers of 13 partitions each (docs/performance.md): wait 10 ms, broker 35% +
clients 19% of a core; 25 ms, 18% + 10%; 50 ms, 11% + 6%. 20 ms keeps a hop under ~12 ms
for about a quarter of a core of polling.

The consumer also corrects the end offsets Faust's table recovery reads a changelog up to:
Tansu 0.6 reports a partition's high watermark as the base offset of its last record batch
+ 1, so Faust stopped recovering a table before the end of its changelog (and a worker
restarted on a fresh data directory lost the last writes of each partition; an executor,
the record of commands it had executed), and Faust's recovery consistency check refused
every restart on the same data directory (ConsistencyError: persisted offset > high
watermark). `_Consumer.highwaters` reads the last batch back and counts its records
(streams.app.logreader.end_offsets_from_records).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Set
from typing import Any, ClassVar

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from streams.app.logreader import end_offsets_from_records

log = logging.getLogger(__name__)

# a partition read again from its expected offset is not read again for the same gap sooner
REREAD_AFTER_S = 10.0

# set on the class by `configure` before the app starts (one value per process)
_fetch_wait_ms = 20


def configure(fetch_wait_ms: int) -> None:
    """Fetch wait of every consumer this process creates from now on, milliseconds."""
    global _fetch_wait_ms
    if fetch_wait_ms < 1:
        raise ValueError("fetch wait must be >= 1 ms")
    _fetch_wait_ms = fetch_wait_ms


def fetch_wait_ms() -> int:
    """The fetch wait in force, milliseconds."""
    return _fetch_wait_ms


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its Fetcher; there is no public
        # way to pass it through Faust (pinned by the faust-streaming version)
        consumer._fetch_max_wait_ms = _fetch_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (topic partition, offset) of the agent inputs a batch processed, about to be acked
        self._processed: set[tuple[TP, int]] = set()
        # offsets of agent inputs `ack` refused per partition: no commit may pass them
        self._refused: defaultdict[TP, set[int]] = defaultdict(set)
        # per partition, the next offset to commit: where the consumer was sought to, then
        # what was last committed; nothing after it is committed before it is acked
        self._expected: dict[TP, int] = {}
        # (offset, when) of the last time a partition was read again from `_expected`
        self._read_again_at: dict[TP, tuple[int, float]] = {}
        self._seeks: set[asyncio.Future] = set()

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def mark_processed(self, messages: Iterable[Message]) -> None:
        """Let `ack` take these messages: their batch was processed (see `ack`)."""
        self._processed.update((message.tp, message.offset) for message in messages)

    def ack(self, message: Message) -> bool:
        """Faust's ack, for agent inputs only once their batch was processed.

        Faust's stream acks a message it skips without handing it to the agent: one fetched
        in an earlier consumer generation, or taken while flow control is suspended during a
        rebalance (faust/streams.py, ``skipped_value``). Its offset then counts as done and
        the next commit can pass it, so an input is committed that no stage processed (seen
        as an executor that reported 599 of 600 commands after a restart, and a risk
        partition whose consumer jumped 42 offsets ahead). Refused here, the skipped message
        stays unacked, and no commit passes it (`_new_offset`); Faust seeks to the committed
        offsets when the rebalance completes and delivers it again. Nothing will ack this
        copy, so the rebalance's wait for unacked messages (`wait_empty`) must not wait for
        it either."""
        tp, offset = message.tp, message.offset
        if (tp, offset) not in self._processed and self.app.topics.acks_enabled_for(
                message.topic):
            self._unacked_messages.discard(message)
            if offset not in self._acked_index[tp]:  # else a processed copy is acked
                self._refused[tp].add(offset)
            return False
        self._processed.discard((tp, offset))
        self._refused[tp].discard(offset)
        return super().ack(message)

    def _new_offset(self, tp: TP) -> int | None:
        """Faust's next offset to commit for `tp`, never past an input not processed.

        Faust commits the first run of consecutive acked offsets, and checks it against
        the committed offset only when one is known and not 0, with an off-by-one (a single
        unacked message at the head is passed). So a commit could pass an input `ack`
        refused, and inputs Faust dropped without delivering them to the stream at all
        (seen after an executor restarted on a fresh data directory: 56 commands never
        reached its agent, and the consumer committed past them). Here the run must start
        at the offset the consumer was sought to or last committed (`_expected`), and stop
        before the first refused input; a gap at the head is read again (`_read_again`)."""
        acked = self._acked[tp]
        expected = self._expected.get(tp)
        if acked and expected is not None:
            acked.sort()
            if acked[0] < expected:  # copies of inputs committed already
                stale = [offset for offset in acked if offset < expected]
                acked[:len(stale)] = []
                self._acked_index[tp].difference_update(stale)
            if acked and acked[0] > expected and self._missing(tp, expected, acked[0]):
                self._read_again(tp, expected, acked[0])
                return None
        refused = self._refused.get(tp)
        committed = self._committed_offset[tp]
        if refused and committed is not None:
            refused.difference_update([o for o in refused if o < committed])  # done already
        if not refused:
            new = super()._new_offset(tp)
        else:
            first = min(refused)
            held = [offset for offset in acked if offset >= first]
            acked[:] = [offset for offset in acked if offset < first]
            try:
                new = super()._new_offset(tp) if acked else None
            finally:
                acked.extend(held)
                acked.sort()
        if new is not None:
            self._expected[tp] = new
        return new

    def _missing(self, tp: TP, start: int, end: int) -> bool:
        """True if an offset in [start, end) was neither acked nor one Faust saw absent
        from the log (a gap between two fetched records: a transaction marker, a compacted
        record), which Faust counts as done."""
        at = start
        for interval in sorted(self._gap[tp].overlap(start, end), key=lambda i: i.begin):
            if interval.begin > at:
                return True
            at = max(at, interval.end)
        return at < end

    def _read_again(self, tp: TP, expected: int, first_acked: int) -> None:
        """Seek `tp` back to `expected`: the inputs before `first_acked` were never
        processed and nothing will deliver them otherwise (the stages drop the copies of
        what they processed already). At most once per offset every few seconds."""
        last = self._read_again_at.get(tp)
        now = time.monotonic()
        if last is not None and last[0] == expected and now - last[1] < REREAD_AFTER_S:
            return
        self._read_again_at[tp] = (expected, now)
        log.warning("%s[%d]: inputs %d..%d were never processed and offset %d is acked: "
                    "reading them again from %d", tp.topic, tp.partition, expected,
                    first_acked - 1, first_acked, expected)
        seeking = asyncio.ensure_future(self.seek(tp, expected))
        self._seeks.add(seeking)  # the loop keeps only a weak reference to a task
        seeking.add_done_callback(self._seeks.discard)

    async def perform_seek(self) -> None:
        """Faust's seek to the committed offsets; each is the partition's `_expected`."""
        await super().perform_seek()
        for tp, offset in list(self._read_offset.items()):
            if offset is not None and self.app.topics.acks_enabled_for(tp.topic):
                self._expected[tp] = offset

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        """Faust's revocation; refused inputs of a revoked partition are no longer ours
        (its next owner, or this consumer after it is assigned again, starts from the
        committed offset)."""
        for tp in revoked:
            self._refused.pop(tp, None)
            self._expected.pop(tp, None)
            self._read_again_at.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """End offsets counted from the records themselves (see the module docstring).

        Faust calls this only to know how far to read a table's changelog when it
        recovers the table (faust/tables/recovery.py, ``_build_highwaters``)."""
        reported = await super().highwaters(*partitions)
        bootstrap = ",".join(f"{url.host}:{url.port or 9092}" for url in self.app.conf.broker)
        ends = await asyncio.to_thread(
            end_offsets_from_records, bootstrap,
            {(tp.topic, tp.partition): end for tp, end in reported.items() if end is not None})
        return {tp: ends.get((tp.topic, tp.partition), end) for tp, end in reported.items()}


class LowLatencyTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport whose worker consumer waits at most APS_FETCH_WAIT_MS."""

    Consumer: ClassVar[type] = _Consumer
