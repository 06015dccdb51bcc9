"""Risk agent: applies each partition's ordered log to its accounts and emits signed commands.

All decisions are made by the pure `PartitionEngine` (streams.risk.engine); this adapter
decodes, groups a batch by partition, refuses execution reports whose signature does not
verify with APS_REPORT_KEY (``forged_report``: never applied), persists what changed
(account states in the RocksDB table ``risk-accounts``, market state in ``risk-market``;
both changelogged), signs the commands and sends each to its chain's execution topic, on
the partition of its account (`account_partition`, the partition the executor requires).
The refusals an input caused (a rule held back by its cooldown, the rate limit, a degraded
price ...: `PartitionEngine.take_refusals`) go to risk.refusals as `ActionRefused` events in
the same step, keyed and partitioned by account, and are counted in
``aps_risk_refusals_total{rule_kind, reason}``; like commands, they are re-sent when a
restarted worker re-applies inputs. A price update revalues every account of the partition
exposed to that asset in one vectorized pass inside the engine; the worker's price gate
(streams.app.pricegate) is told each price applied.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import faust
from faust.types import TP, EventT, TopicT

from streams.app.authenticity import SignatureCheck
from streams.app.batchsend import OutputTopic
from streams.app.checkpoint import Checkpoint, StateDigest, checkpoint_key
from streams.app.context import event_context
from streams.app.deadletters import DeadLetterSink
from streams.app.delivery import changelog_delivered, delivered
from streams.app.factory import batch_agent
from streams.app.latency import header_tick_ms, input_header, observe_hop, record_ms
from streams.app.logreader import LogRecord, RangeReader
from streams.app.metrics import (
    COMMANDS,
    DUPLICATES,
    MESSAGES,
    REFUSALS,
    REFUSALS_DROPPED,
    REVALUATIONS,
    RISK_STEP_SECONDS,
)
from streams.app.partitioning import account_partition
from streams.app.pricegate import PriceGate
from streams.app.tables import TrackedTable, tracked_table
from streams.codecs import decode, encode
from streams.codecs.signing import sign_encoded
from streams.config import Settings
from streams.domain import (
    AccountState,
    ActionRefused,
    AssetMarket,
    ConsensusPrice,
    ExecutionReport,
    MarketState,
    RiskInput,
    ScalingCommand,
)
from streams.errors import CodecError, DomainError, InfraError
from streams.risk.engine import EngineConfig, PartitionEngine
from streams.risk.policy import Refusal, rule_kind
from streams.risk.settings import engine_config_for
from streams.risk.valuations import SharedValuations
from streams.topics import RISK_INPUTS

log = logging.getLogger(__name__)

STAGE = "risk"
BATCH = 1000
ACCOUNTS_TABLE = "risk-accounts"
MARKET_TABLE = "risk-market"


def market_key(partition: int, asset: str | None = None) -> bytes:
    """Key of a partition's market state in the risk-market table: the watermark and held
    reports under ``partition-<p>``, each asset's quote and return window under
    ``partition-<p>/<asset>`` (so a price rewrites one asset, not all of them)."""
    return (f"partition-{partition}" if asset is None
            else f"partition-{partition}/{asset}").encode()


def restore_market(table: Mapping[bytes, bytes], partition: int) -> MarketState | None:
    """A partition's whole market state from its keys in the risk-market table."""
    raw = table.get(market_key(partition))
    if raw is None:
        return None
    head = decode(raw, MarketState)
    prefix = market_key(partition, "")
    assets = [entry for key, value in table.items() if key.startswith(prefix)
              for entry in decode(value, MarketState).assets]
    return replace(head, assets=sorted(assets, key=lambda entry: entry.asset))


# records re-applied from risk.inputs per step when the state is behind the committed input
CATCH_UP_CHUNK = 2000


@dataclass
class _Partition:
    """A partition's engine, the last risk.inputs offset it reflects, and the digest of the
    partition's stored entries (streams.app.checkpoint)."""

    engine: PartitionEngine
    through: int
    digest: StateDigest
    # what the last checkpoint written says: offset reflected and digest
    checkpointed: tuple[int, int] = (-1, 0)


# account states encoded per event-loop turn when a persist step encodes its snapshot
ENCODE_CHUNK = 64


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One partition's persist step: what its inputs up to offset `through` changed, taken
    between two batches (`context`: an event of the partition, current for the writes).
    `states` are the changed accounts (immutable records), encoded into `writes` by
    `RiskProcessor._encode` after the snapshot is taken; `writes` starts with the market
    entries."""

    partition: int
    part: _Partition
    context: EventT
    through: int
    states: list[AccountState]
    writes: list[tuple[TrackedTable, str, bytes, bytes]]


class RiskProcessor:
    """Owns one PartitionEngine per assigned partition of risk.inputs.

    Restart safety (streams.app.checkpoint): each persist step ends with the partition's
    checkpoint, the offset of the last input its state reflects and the digest of its stored
    entries; it is written only after every command and dead letter caused by those inputs
    has been acknowledged by the broker. On first use of a partition the stored state is
    verified against its checkpoint (discarded if it does not match), inputs at or below the
    checkpoint are skipped (already reflected), and inputs between the checkpoint and the
    consumer's position (committed, but their effect on the state lost) are read back from
    risk.inputs and re-applied before anything else. Re-applied inputs emit the same
    commands with the same ids again; executors de-duplicate them.
    """

    def __init__(self, settings: Settings, accounts: TrackedTable, market: TrackedTable,
                 commands: Mapping[str, OutputTopic], dead_letters: DeadLetterSink,
                 config: EngineConfig | None = None, *, refusals: OutputTopic,
                 bootstrap: str | None = None,
                 topic: str = RISK_INPUTS, gate: PriceGate | None = None,
                 on_failure: Callable[[BaseException], object] | None = None) -> None:
        self.settings = settings
        self.accounts = accounts
        self.market = market
        self.commands = commands
        self.dead_letters = dead_letters
        self.refusals = refusals
        self.config = config or EngineConfig()
        self.bootstrap = bootstrap
        self.topic = topic
        self.gate = gate
        self.reports = SignatureCheck(STAGE, settings.report_key, "APS_REPORT_KEY", "executor")
        self.partitions: dict[int, _Partition] = {}
        # every partition receives the same prices: value each distinct option once
        self.valuations = SharedValuations()
        self._asset_cache: dict[str, tuple[AssetMarket, bytes]] = {}
        self._applying = self._sending = 0.0
        self.persist_interval_s = settings.risk_persist_ms / 1000
        self.on_failure = on_failure
        # a persist takes its snapshot between two batches (`_lock`, held while a batch is
        # applied) and persist steps store one at a time, in order (`_store_lock`)
        self._lock = asyncio.Lock()
        self._store_lock = asyncio.Lock()
        # sends of applied inputs not known to be acknowledged yet, and per partition an
        # event of its last applied batch not persisted yet (current for the writes)
        self._sent: list[asyncio.Future] = []
        self._unpersisted: dict[int, EventT] = {}
        self._persist_timer: asyncio.Task | None = None
        self._failure: BaseException | None = None

    def forget(self, partitions: set[TP]) -> None:
        """Drop engines of revoked partitions; they are rebuilt from the table if reassigned."""
        for tp in partitions:
            self.partitions.pop(tp.partition, None)

    def _open(self, partition: int, context: EventT) -> _Partition:
        """The partition, rebuilt from the recovered tables on first use (`context`: an
        event of the partition, current for the writes that discard an unusable state)."""
        part = self.partitions.get(partition)
        if part is not None:
            return part
        digest = StateDigest()
        accounts = {key: raw for key, raw in self.accounts.items()
                    if account_partition(key.decode(), self.settings.partitions) == partition}
        for key, raw in accounts.items():
            digest.set(ACCOUNTS_TABLE, key, raw)
        head_key, prefix = market_key(partition), market_key(partition, "")
        entries = {key: raw for key, raw in self.market.items()
                   if key == head_key or key.startswith(prefix)}
        for key, raw in entries.items():
            digest.set(MARKET_TABLE, key, raw)
        checkpoint = Checkpoint.decode(self.market.get(checkpoint_key(partition)))
        reflected = None if checkpoint is None else checkpoint.reflected(digest.value)
        if reflected is not None:
            through, under_way = reflected
            states = sorted((decode(raw, AccountState) for raw in accounts.values()),
                            key=lambda state: state.account_id)
            engine = PartitionEngine(self.config, states, restore_market(entries, partition),
                                     valuations=self.valuations)
            part = _Partition(engine, through, digest)
            if under_way:
                # killed before the changelog acknowledged the step: the local files have
                # it, the changelog may not; send every entry again (same values) so it
                # does before the next checkpoint
                log.warning("risk partition %d: restored the state of a persist step the "
                            "changelog may lack (input up to offset %d); re-sending its %d "
                            "entries", partition, through, len(digest))
                with event_context(context):
                    for key, raw in accounts.items():
                        self.accounts[key] = raw
                    for key, raw in entries.items():
                        self.market[key] = raw
            part.checkpointed = (through, digest.value)
            log.info("risk partition %d: %d accounts restored, reflecting input up to "
                     "offset %d", partition, len(states), through)
        else:
            if checkpoint is not None or len(digest):
                log.warning("risk partition %d: the stored state (%d entries) is not the one "
                            "of its checkpoint (%s): discarded, the partition's log is "
                            "re-applied from its first record", partition, len(digest),
                            checkpoint)
                with event_context(context):
                    for table, key in digest.entries():
                        del (self.accounts if table == ACCOUNTS_TABLE else self.market)[key]
                    if checkpoint is not None:
                        del self.market[checkpoint_key(partition)]
            part = _Partition(PartitionEngine(self.config, valuations=self.valuations), -1,
                              StateDigest())
        self.partitions[partition] = part
        # the restored book is long-lived: keep it out of the cyclic collector's
        # full collections (seconds of pause at 100,000 accounts)
        gc.freeze()
        return part

    async def process(self, events: Sequence[EventT]) -> None:
        """Apply one batch, partition by partition, in log order; persist what changed
        within APS_RISK_PERSIST_MS (at once when it is 0).

        Control goes back to the event loop between partitions so the other agents of the
        worker (the sequencer feeding execution reports back) are not starved by a backlog.
        The state is persisted (with its checkpoint) only once the broker has every command
        and dead letter the inputs it reflects caused. Persisting once per interval rather
        than after every batch keeps the broker's acknowledgements and the encoding of
        account states off the path of the next price (in a fast market a batch is one
        price, and every price changes most accounts): an account changed by ten prices in
        the interval is encoded and written once. Inputs applied but not persisted yet may
        be committed; a restarted worker re-applies them from risk.inputs (`_catch_up`).
        """
        if self._failure is not None:
            raise self._failure
        async with self._lock:
            by_partition: dict[int, list[EventT]] = defaultdict(list)
            for event in events:
                by_partition[event.message.partition].append(event)
            # a price is on every partition with the same bytes: decode it once per batch
            decoded: dict[bytes, RiskInput | CodecError] = {}
            for partition, partition_events in sorted(by_partition.items()):
                if await self._process_partition(partition, partition_events, decoded,
                                                 self._sent):
                    self._unpersisted[partition] = partition_events[-1]
                await asyncio.sleep(0)
            MESSAGES.labels(STAGE).inc(len(events))
            RISK_STEP_SECONDS.labels("apply").inc(self._applying)
            RISK_STEP_SECONDS.labels("send").inc(self._sending)
            self._applying = self._sending = 0.0
        if self.persist_interval_s <= 0:
            await self.flush()
        elif self._sent or self._unpersisted:
            self._schedule_persist()

    async def flush(self) -> None:
        """Persist everything applied so far: take its snapshot between two batches, wait
        until the broker has every send of the inputs it reflects, then store it. Batches
        go on being applied while it waits."""
        async with self._store_lock:
            async with self._lock:
                sends = list(self._sent)
                self._sent.clear()
                snapshots = self._snapshot(list(self._unpersisted.items()))
                self._unpersisted.clear()
            await self._encode(snapshots)
            await delivered(sends)
            if snapshots:
                await self._store(snapshots)

    def _schedule_persist(self) -> None:
        """Persist in APS_RISK_PERSIST_MS unless a persist is already due."""
        if self._persist_timer is None or self._persist_timer.done():
            self._persist_timer = asyncio.ensure_future(self._persist_later())
            self._persist_timer.add_done_callback(self._persisted)

    async def _persist_later(self) -> None:
        # batches applied while a persist waits for the broker are left for the next round
        while True:
            await asyncio.sleep(self.persist_interval_s)
            await self.flush()
            if not (self._sent or self._unpersisted):
                return

    def _persisted(self, task: asyncio.Task) -> None:
        """A failed persist (a send or changelog write the broker refused) stops the
        stage: the next batch raises it, and `on_failure` stops the worker meanwhile."""
        if task.cancelled() or task.exception() is None:
            return
        self._failure = task.exception()
        log.critical("risk stage: persisting failed: %r", self._failure)
        if self.on_failure is not None:
            self.on_failure(self._failure)

    async def _process_partition(self, partition: int, events: list[EventT],
                                 decoded: dict[bytes, RiskInput | CodecError],
                                 sent: list[asyncio.Future]) -> bool:
        """Apply the events of one partition not reflected yet; True if any was."""
        part = self._open(partition, events[0])
        revalued_before = part.engine.counters.revaluations
        dropped_before = part.engine.counters.refusals_dropped
        applied = skipped = 0
        for event in events:
            offset = event.message.offset
            if offset <= part.through:
                skipped += 1
                continue
            if offset > part.through + 1:
                await self._catch_up(partition, offset, sent)
                if self.partitions.get(partition) is not part:
                    return False  # revoked meanwhile: the next owner resumes from its checkpoint
            self._apply(partition, part, event.message.value, event, None, decoded, sent)
            part.through = offset
            applied += 1
        if skipped:
            log.info("risk partition %d: %d inputs already reflected by the restored state "
                     "skipped", partition, skipped)
            DUPLICATES.labels(STAGE).inc(skipped)
        REVALUATIONS.inc(part.engine.counters.revaluations - revalued_before)
        REFUSALS_DROPPED.inc(part.engine.counters.refusals_dropped - dropped_before)
        return applied > 0

    async def _catch_up(self, partition: int, until: int,
                        sent: list[asyncio.Future]) -> None:
        """Re-apply the records of `partition` after its checkpoint and before offset
        `until` (committed by the consumer group, not reflected by the state); persisted
        with the input at `until`, which the caller applies next."""
        part = self.partitions[partition]
        if self.bootstrap is None:
            raise InfraError(f"risk partition {partition}: state reflects input up to "
                             f"{part.through}, the consumer is at {until}, and no broker to "
                             "read the inputs in between from")
        log.warning("risk partition %d: state reflects input up to offset %d, the consumer "
                    "resumes at %d: re-applying %d inputs from %s", partition, part.through,
                    until, until - part.through - 1, self.topic)
        # librdkafka calls block (even creating and closing a consumer): never on the loop
        reader = await asyncio.to_thread(RangeReader, self.bootstrap, self.topic, partition,
                                         part.through + 1, until)
        try:
            while not reader.done and self.partitions.get(partition) is part:
                records = await asyncio.to_thread(reader.read, CATCH_UP_CHUNK)
                decoded: dict[bytes, RiskInput | CodecError] = {}
                for record in records:
                    self._apply(partition, part, record.value, None, record, decoded, sent)
                    part.through = record.offset
                part.through = max(part.through, reader.next_offset - 1)
        finally:
            await asyncio.to_thread(reader.close)

    def _apply(self, partition: int, part: _Partition, value: bytes, event: EventT | None,
               record: LogRecord | None, decoded: dict[bytes, RiskInput | CodecError],
               sent: list[asyncio.Future]) -> None:
        """Apply one input (a Faust `event`, or a `record` read back) and send what it
        causes, adding the futures of the sends to `sent`."""
        item = _decode_once(value, decoded)
        if isinstance(item, CodecError):
            sent.append(self._dead_letter(event, record, item.reason, str(item)))
            return
        report = item.body
        if isinstance(report, ExecutionReport) and not self.reports.authentic(report):
            sent.append(self._dead_letter(
                event, record, "forged_report", f"signature of report {report.report_id} "
                f"(command {report.command_id}) does not verify", report.executed_at))
            return
        started = time.perf_counter()
        try:
            emitted = part.engine.apply(item)
        except DomainError as exc:
            sent.append(self._dead_letter(event, record, exc.reason, exc.detail,
                                          _event_time(item)))
            return
        finally:
            applied = time.perf_counter()
            self._applying += applied - started
            price = item.body
            if self.gate is not None and isinstance(price, ConsensusPrice):
                self.gate.applied(price.asset, price.sequence, partition)
        refusals = part.engine.take_refusals()
        if not (emitted or refusals):
            return
        if event is not None:
            offset = event.message.offset
        else:
            assert record is not None
            offset = record.offset
        if emitted:
            input_ms = record_ms(event) if event is not None else None
            tick_ms = header_tick_ms(event) if event is not None else None
            trigger = input_header(partition, offset)
            for command in emitted:
                sent.append(self._send(command, event, record, trigger))
                if event is not None:
                    observe_hop("risk_input_to_command", input_ms)
                    observe_hop("tick_to_command", tick_ms)
        if refusals:
            self._send_refusals(refusals, partition, offset, sent)
        self._sending += time.perf_counter() - applied

    def _dead_letter(self, event: EventT | None, record: LogRecord | None, reason: str,
                     detail: str, event_time: int = -1) -> asyncio.Future:
        if event is not None:
            return self.dead_letters.send(event, reason, detail, event_time)
        assert record is not None
        return self.dead_letters.send_raw(record.topic, record.partition, record.offset,
                                          record.key, record.value, reason, detail,
                                          event_time)

    def _snapshot(self, partitions: Sequence[tuple[int, EventT]]) -> list[_Snapshot]:
        """What each of `partitions` (with an event of the partition, current for the
        writes) changed since its last persist: the changed account states (encoded later,
        `_encode`), the market entries to write and the last input they reflect. Revoked
        partitions are left out: their next owner resumes from their last checkpoint."""
        started = time.perf_counter()
        snapshots = []
        for partition, context in partitions:
            part = self.partitions.get(partition)
            if part is None:
                continue
            engine = part.engine
            states = engine.take_dirty()
            writes: list[tuple[TrackedTable, str, bytes, bytes]] = []
            market = engine.take_market_state()
            if market is not None:
                for entry in market.assets:
                    writes.append((self.market, MARKET_TABLE, market_key(partition, entry.asset),
                                   self._asset_bytes(entry)))
                writes.append((self.market, MARKET_TABLE, market_key(partition),
                               encode(replace(market, assets=[]))))
            snapshots.append(_Snapshot(partition, part, context, part.through, states, writes))
        RISK_STEP_SECONDS.labels("persist").inc(time.perf_counter() - started)
        return snapshots

    async def _encode(self, snapshots: Sequence[_Snapshot]) -> None:
        """Encode the snapshots' account states into their writes, ENCODE_CHUNK per turn of
        the event loop: batches go on being applied in between (a crash changes most
        accounts at every price, and encoding them all at once would hold the next price
        back by as long). The states are immutable records taken with the snapshot, so what
        is encoded is the state at the snapshot whatever was applied since."""
        busy = 0.0
        for snap in snapshots:
            for start in range(0, len(snap.states), ENCODE_CHUNK):
                began = time.perf_counter()
                snap.writes.extend(
                    (self.accounts, ACCOUNTS_TABLE, state.account_id.encode(), encode(state))
                    for state in snap.states[start:start + ENCODE_CHUNK])
                busy += time.perf_counter() - began
                await asyncio.sleep(0)
        RISK_STEP_SECONDS.labels("persist").inc(busy)

    async def _store(self, snapshots: Sequence[_Snapshot]) -> None:
        """Write each snapshot's entries, preceded by a checkpoint naming the state being
        written; wait until the changelogs have them, then write the partitions'
        checkpoints.

        So a checkpoint never vouches for an entry that is only in the local RocksDB files
        (a worker restarted on a fresh data directory would not find it, and one restarted
        on the same directory would keep it but never send it to the changelog again)."""
        started = time.perf_counter()
        owned = [snap for snap in snapshots if self.partitions.get(snap.partition) is snap.part]
        for snap in owned:
            digest = snap.part.digest
            for _, table_name, key, raw in snap.writes:
                digest.set(table_name, key, raw)
            with event_context(snap.context):
                # first the checkpoint naming the state being written, then its entries
                self.market[checkpoint_key(snap.partition)] = Checkpoint(
                    *snap.part.checkpointed, snap.through, digest.value).encode()
                for table, _, key, raw in snap.writes:
                    table[key] = raw
        stored = time.perf_counter()
        await changelog_delivered((self.accounts, self.market))
        resumed = time.perf_counter()
        for snap in owned:
            if self.partitions.get(snap.partition) is not snap.part:
                continue
            snap.part.checkpointed = (snap.through, snap.part.digest.value)
            with event_context(snap.context):
                self.market[checkpoint_key(snap.partition)] = Checkpoint(
                    *snap.part.checkpointed).encode()
        RISK_STEP_SECONDS.labels("persist").inc(stored - started + time.perf_counter() - resumed)

    def _asset_bytes(self, entry: AssetMarket) -> bytes:
        """One asset's persisted quote and window; every partition applies the same prices,
        so the bytes encoded for one partition are reused when the next has the same entry."""
        cached = self._asset_cache.get(entry.asset)
        if cached is not None and cached[0] == entry:
            return cached[1]
        raw = encode(MarketState(0, [entry]))
        self._asset_cache[entry.asset] = (entry, raw)
        return raw

    def _send_refusals(self, refusals: Sequence[Refusal], partition: int, offset: int,
                       sent: list[asyncio.Future]) -> None:
        """Send each refusal to risk.refusals as an ActionRefused on its account's
        partition, encoded in the step that caused it (no await per record), and count them
        by rule family and reason."""
        topic = self.refusals
        partitions = topic.partitions or self.settings.partitions
        counts: Counter[tuple[str, str]] = Counter()
        for refusal in refusals:
            sent.append(topic.send_soon(
                key=refusal.account_id.encode(),
                value=encode(action_refused(refusal, partition, offset)),
                partition=account_partition(refusal.account_id, partitions)))
            counts[rule_kind(refusal.rule), refusal.code] += 1
        for (kind, reason), n in counts.items():
            REFUSALS.labels(kind, reason).inc(n)

    def _send(self, command: ScalingCommand, event: EventT | None, record: LogRecord | None,
              trigger: tuple[str, bytes]) -> asyncio.Future:
        """Sign `command` and send it to its chain's topic, on its account's partition, with
        the header naming the input that emitted it (`trigger`)."""
        topic = self.commands.get(command.chain)
        if topic is None:
            return self._dead_letter(
                event, record, "unknown_chain",
                f"command {command.command_id} for chain {command.chain!r},"
                f" configured chains: {', '.join(self.commands)}")
        signed = sign_encoded(command, self.settings.command_key)
        # the executor refuses a command on any other partition than its account's
        partition = account_partition(command.account_id,
                                      topic.partitions or self.settings.partitions)
        future = topic.send_soon(key=command.account_id.encode(), value=signed,
                                 partition=partition, headers=[trigger])
        COMMANDS.labels(command.reason.value, command.chain).inc()
        return future


def action_refused(refusal: Refusal, partition: int, offset: int) -> ActionRefused:
    """The event of one engine refusal, for the input at `offset` of risk.inputs'
    `partition`."""
    return ActionRefused(refusal.account_id, refusal.rule, refusal.code, refusal.detail,
                         refusal.values, refusal.event_time, partition, offset)


def _decode_once(value: bytes, decoded: dict[bytes, RiskInput | CodecError]
                 ) -> RiskInput | CodecError:
    """`value` decoded as a RiskInput (or the error), remembered in `decoded` by its bytes."""
    item = decoded.get(value)
    if item is None:
        try:
            item = decode(value, RiskInput)
        except CodecError as exc:
            item = exc
        decoded[value] = item
    return item


def _event_time(item: RiskInput) -> int:
    body = item.body
    for name in ("event_time", "executed_at"):
        value = getattr(body, name, None)
        if isinstance(value, int):
            return value
    return -1


def install_risk(app: faust.App, settings: Settings, *, risk_inputs: TopicT,
                 commands: Mapping[str, OutputTopic], dead_letters: OutputTopic,
                 refusals: OutputTopic, bootstrap: str | None = None,
                 gate: PriceGate | None = None) -> RiskProcessor:
    """Add the risk tables and agent to `app` (`refusals`: where the engine's refusals go,
    risk.refusals; `bootstrap`: where the agent reads back inputs its restored state does
    not reflect, see RiskProcessor; `gate`: told what the agent applied)."""
    partitions = settings.partitions
    accounts = tracked_table(app, ACCOUNTS_TABLE, partitions)
    market = tracked_table(app, MARKET_TABLE, partitions)
    processor = RiskProcessor(settings, accounts, market, commands,
                              DeadLetterSink(dead_letters, STAGE),
                              engine_config_for(settings), refusals=refusals,
                              bootstrap=bootstrap,
                              topic=risk_inputs.get_topic_name(), gate=gate,
                              on_failure=lambda exc: asyncio.ensure_future(app.crash(exc)))

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: faust.App, revoked: set[TP], **_: object) -> None:
        processor.forget(revoked)
        if gate is not None:
            gate.assign(set())

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: faust.App, assigned: set[TP], **_: object) -> None:
        if gate is not None:
            name = risk_inputs.get_topic_name()
            gate.assign(tp.partition for tp in assigned if tp.topic == name)

    batch_agent(app, risk_inputs, name="risk", stage=STAGE, size=BATCH,
                process=processor.process)

    return processor
