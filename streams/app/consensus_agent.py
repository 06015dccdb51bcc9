"""Consensus agent: oracle.ticks (one ordered log) -> oracle.prices and risk.inputs.

The pure `ConsensusEngine` (streams.oracle.consensus) decides; this adapter decodes, sends
each consensus price to oracle.prices (its history, for the archive and other readers) and
straight into every partition of risk.inputs (one hop from a tick to the risk engine: the
entry's origin is the observation that produced the price), and sends refusals to
aps.deadletter.

Restart exactness. After every batch the stage stores one entry in the changelogged table
``consensus-state`` (`StoredConsensus`): the engine's snapshot, the offset of the last
observation it reflects, and the prices the worker's price gate still holds back. The
order within a batch is: send its prices and dead letters, wait until the broker has them,
store the entry, wait until the changelog has it, and only then return (Faust commits the
batch's offsets after that). So:

- killed before the entry is stored: the observations are read again from the last commit
  and produce the same prices with the same sequences (the ones already in risk.inputs are
  duplicates the risk engine drops);
- killed after: the restored entry may be newer than the committed offset (Faust commits
  every few seconds); the observations it already reflects are skipped, so the engine,
  its counters included, ends where a run over oracle.ticks without the crash ends;
- a price the gate held back is in the entry and is offered to the gate again on restart:
  a crash loses none (one published since is sent again, and dropped downstream as a
  duplicate).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT, TopicT

from streams.app.batchsend import OutputTopic
from streams.app.context import event_context
from streams.app.deadletters import DeadLetterSink
from streams.app.delivery import changelog_delivered, delivered
from streams.app.factory import batch_agent
from streams.app.latency import observe_hop, record_ms, tick_ts_header
from streams.app.metrics import CONFLATED, DROPPED, DUPLICATES, MESSAGES
from streams.app.pricegate import PriceGate
from streams.app.tables import tracked_table
from streams.codecs import decode, encode, encode_risk_input
from streams.config import Settings
from streams.domain import ConsensusPrice, ConsensusState, OracleObservation
from streams.errors import CodecError
from streams.oracle.consensus import ConsensusEngine
from streams.oracle.feeds import load_feeds

log = logging.getLogger(__name__)

STAGE = "consensus"
BATCH = 5000
STATE_TABLE = "consensus-state"
STATE_KEY = b"engine"


@dataclass(frozen=True, slots=True)
class OutgoingPrice:
    """A consensus price as the stage sends it: its oracle.prices record, its risk.inputs
    entry (origin: the observation behind it) and that observation's Kafka timestamp."""

    asset: str
    sequence: int
    value: bytes
    entry: bytes
    tick_ms: int | None

    @classmethod
    def of(cls, price: ConsensusPrice, cause: EventT) -> OutgoingPrice:
        """The price `price` caused by the observation `cause`."""
        value = encode(price)
        message = cause.message
        return cls(price.asset, price.sequence, value,
                   encode_risk_input(message.topic, message.partition, message.offset, value),
                   record_ms(cause))


_MAGIC = b"APSCS1"
_HEAD = struct.Struct(">qI")  # through, number of held prices
_HELD = struct.Struct(">qqIII")  # sequence, tick ms (-1: none), lengths of asset, value, entry


@dataclass(frozen=True, slots=True)
class StoredConsensus:
    """The ``consensus-state`` entry: the engine's encoded snapshot, the offset of the last
    observation it reflects (-1: unknown) and the prices held back by the gate."""

    snapshot: bytes
    through: int = -1
    held: tuple[OutgoingPrice, ...] = ()

    def encode(self) -> bytes:
        """The stored bytes."""
        parts = [_MAGIC, _HEAD.pack(self.through, len(self.held))]
        for price in self.held:
            asset = price.asset.encode()
            tick = -1 if price.tick_ms is None else price.tick_ms
            parts += [_HELD.pack(price.sequence, tick, len(asset), len(price.value),
                                 len(price.entry)), asset, price.value, price.entry]
        parts.append(self.snapshot)
        return b"".join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> StoredConsensus:
        """The entry stored as `raw` (a bare snapshot, as earlier builds stored, reflects
        an unknown offset and holds nothing)."""
        if not raw.startswith(_MAGIC):
            return cls(raw)
        at = len(_MAGIC)
        through, count = _HEAD.unpack_from(raw, at)
        at += _HEAD.size
        held = []
        for _ in range(count):
            sequence, tick, asset_len, value_len, entry_len = _HELD.unpack_from(raw, at)
            at += _HELD.size
            asset = raw[at:at + asset_len].decode()
            at += asset_len
            value = raw[at:at + value_len]
            at += value_len
            entry = raw[at:at + entry_len]
            at += entry_len
            held.append(OutgoingPrice(asset, sequence, value, entry,
                                      None if tick < 0 else tick))
        return cls(raw[at:], through, tuple(held))


class ConsensusStage:
    """Runs observations through the engine restored from the state table."""

    def __init__(self, settings: Settings, state: faust.Table, prices: OutputTopic,
                 risk_inputs: OutputTopic, dead_letters: DeadLetterSink,
                 gate: PriceGate | None = None) -> None:
        self.feeds = load_feeds(settings.feeds_file)
        self.state = state
        self.prices = prices
        self.risk_inputs = risk_inputs
        self.partitions = settings.partitions
        self.dead_letters = dead_letters
        self.gate = gate
        self._engine: ConsensusEngine | None = None
        self._through = -1
        self._held: dict[str, OutgoingPrice] = {}
        # sends not yet known to be acknowledged, including a held price the gate
        # published between two batches
        self._sent: list[Awaitable[Any] | None] = []

    def engine(self) -> ConsensusEngine:
        """The engine, restored from the recovered table on first use (the prices held
        back when it was stored are offered to the gate again)."""
        if self._engine is None:
            raw = self.state.get(STATE_KEY)
            stored = StoredConsensus.decode(raw) if raw else None
            snapshot = decode(stored.snapshot, ConsensusState) if stored else None
            self._engine = ConsensusEngine(self.feeds, snapshot=snapshot)
            self._through = stored.through if stored else -1
            self._held = {}
            for price in stored.held if stored else ():
                self._offer(price)
            log.info("consensus engine %s", "started empty" if stored is None else
                     f"restored (observations up to offset {self._through}, "
                     f"{len(stored.held)} held prices offered again)")
        return self._engine

    def forget(self) -> None:
        """Drop the in-memory engine (partition revoked); it is restored on next use."""
        self._engine = None

    async def process(self, events: Sequence[EventT]) -> None:
        """Run one batch in order, publish each asset's latest price, persist the state;
        return once the broker and the changelog have all of it (see the module docstring).

        A batch holds whatever observations queued while the previous one was processed:
        one when the stage keeps up. When it does not, only the last consensus price of
        each asset in the batch is published (the others are superseded before anyone
        could act on them; counted in aps_conflated_prices_total): the risk stage then
        revalues once per asset per batch and catches up instead of falling further
        behind. What is published is what risk.inputs records, so a replay of risk.inputs
        is exact either way.
        """
        engine = self.engine()
        fresh = [event for event in events if event.message.offset > self._through]
        if len(fresh) < len(events):
            DUPLICATES.labels(STAGE).inc(len(events) - len(fresh))
        elif self._through >= 0 and events[0].message.offset > self._through + 1:
            # cannot happen while the entry is stored before the batch is committed
            log.warning("consensus: the restored state reflects observations up to offset "
                        "%d, the consumer resumes at %d", self._through,
                        events[0].message.offset)
        latest: dict[str, tuple[ConsensusPrice, EventT]] = {}
        computed = 0
        for event in fresh:
            computed += self._observe(engine, event, latest)
        for price, cause in latest.values():
            self._offer(OutgoingPrice.of(price, cause))
        if computed > len(latest):
            CONFLATED.inc(computed - len(latest))
        while self._sent:  # the gate may publish a held price while this waits
            await delivered(self._sent)
        if fresh:
            self._through = fresh[-1].message.offset
            stored = StoredConsensus(encode(engine.snapshot()), self._through,
                                     tuple(self._held.values()))
            with event_context(fresh[-1]):
                self.state[STATE_KEY] = stored.encode()
            await changelog_delivered((self.state,))
        MESSAGES.labels(STAGE).inc(len(events))

    def _observe(self, engine: ConsensusEngine, event: EventT,
                 latest: dict[str, tuple[ConsensusPrice, EventT]]) -> int:
        """Apply one observation (or dead-letter it); its prices replace their asset's in
        `latest`. The number of prices it produced."""
        try:
            observation = decode(event.message.value, OracleObservation)
        except CodecError as exc:
            engine.refuse_input(exc.reason, str(exc))  # keeps the engine's counters whole
            self._sent.append(self.dead_letters.send(event, exc.reason, str(exc)))
            return 0
        outcome = engine.observe(observation)
        if outcome.rejection is not None:
            self._sent.append(self.dead_letters.send(
                event, outcome.rejection.reason, outcome.rejection.detail,
                observation.received_at))
        elif outcome.dropped is not None:
            DROPPED.labels(STAGE, outcome.dropped.reason).inc()
        for price in outcome.prices:
            latest.pop(price.asset, None)  # keep the order of each asset's last price
            latest[price.asset] = (price, event)
        return len(outcome.prices)

    def _offer(self, price: OutgoingPrice) -> None:
        """Publish `price` now or, if the gate holds it back, when the gate says so."""
        if self.gate is None:
            self._publish(price)
        elif not self.gate.offer(price.asset, price.sequence, lambda: self._publish(price)):
            self._held[price.asset] = price

    def _publish(self, price: OutgoingPrice) -> None:
        if self._held.get(price.asset) is price:
            del self._held[price.asset]
        key = price.asset.encode()
        self._sent.append(self.prices.send_soon(key=key, value=price.value))
        sent_ms = time.time() * 1000
        headers = tick_ts_header(price.tick_ms)
        for partition in range(self.partitions):
            self._sent.append(self.risk_inputs.send_soon(key=key, value=price.entry,
                                                         partition=partition,
                                                         headers=headers))
        observe_hop("tick_to_price", price.tick_ms, now_ms=sent_ms)
        # the entries are written in the same step as the price (no hop left between them)
        observe_hop("price_to_risk_input", round(sent_ms))


def install_consensus(app: faust.App, settings: Settings, *, ticks: TopicT, prices: OutputTopic,
                      risk_inputs: OutputTopic, dead_letters: OutputTopic,
                      gate: PriceGate | None = None) -> ConsensusStage:
    """Add the consensus table and agent to `app` (publishing through `gate`, if given)."""
    state = tracked_table(app, STATE_TABLE, 1)
    stage = ConsensusStage(settings, state, prices, risk_inputs,
                           DeadLetterSink(dead_letters, STAGE), gate)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: faust.App, revoked: set[faust.types.TP], **_: object) -> None:
        if any(tp.topic == ticks.get_topic_name() for tp in revoked):
            stage.forget()

    batch_agent(app, ticks, name="consensus", stage=STAGE, size=BATCH, process=stage.process)

    return stage
