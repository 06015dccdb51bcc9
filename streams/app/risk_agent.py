"""Risk agent: applies each partition's ordered log to its accounts and emits signed commands.

All decisions are made by the pure `PartitionEngine` (streams.risk.engine); this adapter
decodes, groups a batch by partition, refuses execution reports whose signature does not
verify with APS_REPORT_KEY (``forged_report``: never applied), persists what changed
(account states in the RocksDB table ``risk-accounts``, market state in ``risk-market``;
both changelogged), signs the commands and sends each to its chain's execution topic, on
the partition of its account (`account_partition`, the partition the executor requires).
A price update revalues every account of the partition exposed to that asset in one
vectorized pass inside the engine.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace

import faust
from faust.types import TP, EventT, TopicT

from streams.app.authenticity import SignatureCheck
from streams.app.context import event_context
from streams.app.deadletters import DeadLetterSink
from streams.app.factory import batch_agent
from streams.app.latency import header_tick_ms, observe_hop, record_ms
from streams.app.metrics import COMMANDS, MESSAGES, REVALUATIONS, RISK_STEP_SECONDS
from streams.app.partitioning import account_partition
from streams.app.pricegate import PriceGate
from streams.codecs import decode, encode
from streams.codecs.signing import sign
from streams.config import Settings
from streams.domain import (
    AccountState,
    AssetMarket,
    ConsensusPrice,
    ExecutionReport,
    MarketState,
    RiskInput,
    ScalingCommand,
)
from streams.errors import CodecError, DomainError
from streams.risk.engine import EngineConfig, PartitionEngine
from streams.risk.valuations import SharedValuations

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


class RiskProcessor:
    """Owns one PartitionEngine per assigned partition of risk.inputs."""

    def __init__(self, settings: Settings, accounts: faust.Table, market: faust.Table,
                 commands: dict[str, TopicT], dead_letters: DeadLetterSink,
                 config: EngineConfig | None = None, gate: PriceGate | None = None) -> None:
        self.settings = settings
        self.accounts = accounts
        self.market = market
        self.commands = commands
        self.dead_letters = dead_letters
        self.config = config or EngineConfig()
        self.gate = gate
        self.engines: dict[int, PartitionEngine] = {}
        # every partition receives the same prices: value each distinct option once
        self.valuations = SharedValuations()
        self._asset_cache: dict[str, tuple[AssetMarket, bytes]] = {}
        self.reports = SignatureCheck(STAGE, settings.report_key, "APS_REPORT_KEY", "executor")

    def forget(self, partitions: set[TP]) -> None:
        """Drop engines of revoked partitions; they are rebuilt from the table if reassigned."""
        for tp in partitions:
            self.engines.pop(tp.partition, None)

    def engine(self, partition: int) -> PartitionEngine:
        """The engine of `partition`, rebuilt from the recovered tables on first use."""
        engine = self.engines.get(partition)
        if engine is None:
            states = sorted(
                (decode(raw, AccountState) for key, raw in self.accounts.items()
                 if account_partition(key.decode(), self.settings.partitions) == partition),
                key=lambda state: state.account_id,
            )
            market = restore_market(self.market, partition)
            engine = self.engines[partition] = PartitionEngine(self.config, states, market,
                                                               valuations=self.valuations)
            # the restored book is long-lived: keep it out of the cyclic collector's
            # full collections (seconds of pause at 100,000 accounts)
            gc.freeze()
            log.info("risk partition %d: %d accounts restored", partition, len(states))
        return engine

    async def process(self, events: Sequence[EventT]) -> None:
        """Apply one batch, partition by partition, in log order.

        Control goes back to the event loop between partitions so the other agents of the
        worker (the sequencer feeding execution reports back) are not starved by a backlog.
        """
        by_partition: dict[int, list[EventT]] = defaultdict(list)
        for event in events:
            by_partition[event.message.partition].append(event)
        # a price is on every partition with the same bytes: decode it once per batch
        decoded: dict[bytes, RiskInput | CodecError] = {}
        for partition, partition_events in sorted(by_partition.items()):
            self._process_partition(partition, partition_events, decoded)
            await asyncio.sleep(0)
        MESSAGES.labels(STAGE).inc(len(events))

    def _process_partition(self, partition: int, events: list[EventT],
                           decoded: dict[bytes, RiskInput | CodecError]) -> None:
        engine = self.engine(partition)
        revalued_before = engine.counters.revaluations
        applying = sending = 0.0
        for event in events:
            item = _decode_once(event.message.value, decoded)
            if isinstance(item, CodecError):
                self.dead_letters.send(event, item.reason, str(item))
                continue
            if not self._authentic(item, event):
                continue
            started = time.perf_counter()
            try:
                emitted = engine.apply(item)
            except DomainError as exc:
                self.dead_letters.send(event, exc.reason, exc.detail, _event_time(item))
                continue
            finally:
                applied = time.perf_counter()
                applying += applied - started
                if self.gate is not None and isinstance(item.body, ConsensusPrice):
                    self.gate.applied(item.body.asset, item.body.sequence, partition)
            if emitted:
                input_ms, tick_ms = record_ms(event), header_tick_ms(event)
                for command in emitted:
                    self._send(command, event)
                    observe_hop("risk_input_to_command", input_ms)
                    observe_hop("tick_to_command", tick_ms)
                sending += time.perf_counter() - applied
        RISK_STEP_SECONDS.labels("apply").inc(applying)
        RISK_STEP_SECONDS.labels("send").inc(sending)
        started = time.perf_counter()
        with event_context(events[-1]):
            for state in engine.take_dirty():
                self.accounts[state.account_id.encode()] = encode(state)
            market = engine.take_market_state()
            if market is not None:
                for entry in market.assets:
                    self.market[market_key(partition, entry.asset)] = self._asset_bytes(entry)
                self.market[market_key(partition)] = encode(replace(market, assets=[]))
        RISK_STEP_SECONDS.labels("persist").inc(time.perf_counter() - started)
        REVALUATIONS.inc(engine.counters.revaluations - revalued_before)

    def _authentic(self, item: RiskInput, event: EventT) -> bool:
        """False (and the input dead-lettered) for a report an executor did not sign."""
        report = item.body
        if not isinstance(report, ExecutionReport) or self.reports.authentic(report):
            return True
        self.dead_letters.send(event, "forged_report",
                               f"signature of report {report.report_id} (command "
                               f"{report.command_id}) does not verify", report.executed_at)
        return False

    def _asset_bytes(self, entry: AssetMarket) -> bytes:
        """One asset's persisted quote and window; every partition applies the same prices,
        so the bytes encoded for one partition are reused when the next has the same entry."""
        cached = self._asset_cache.get(entry.asset)
        if cached is not None and cached[0] == entry:
            return cached[1]
        raw = encode(MarketState(0, [entry]))
        self._asset_cache[entry.asset] = (entry, raw)
        return raw

    def _send(self, command: ScalingCommand, cause: EventT) -> None:
        topic = self.commands.get(command.chain)
        if topic is None:
            self.dead_letters.send(cause, "unknown_chain",
                                   f"command {command.command_id} for chain {command.chain!r},"
                                   f" configured chains: {', '.join(self.commands)}")
            return
        signed = sign(command, self.settings.command_key)
        # the executor refuses a command on any other partition than its account's
        partition = account_partition(command.account_id,
                                      topic.partitions or self.settings.partitions)
        topic.send_soon(key=command.account_id.encode(), value=encode(signed),
                        partition=partition)
        COMMANDS.labels(command.reason.value, command.chain).inc()


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
                 commands: dict[str, TopicT], dead_letters: TopicT,
                 gate: PriceGate | None = None) -> RiskProcessor:
    """Add the risk tables and agent to `app` (telling `gate` what it applied, if given)."""
    partitions = settings.partitions
    accounts = app.Table(ACCOUNTS_TABLE, partitions=partitions, key_type=bytes, value_type=bytes)
    market = app.Table(MARKET_TABLE, partitions=partitions, key_type=bytes, value_type=bytes)
    processor = RiskProcessor(settings, accounts, market, commands,
                              DeadLetterSink(dead_letters, STAGE), gate=gate)

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
