"""Consensus agent: oracle.ticks (one ordered log) -> oracle.prices and risk.inputs.

The pure `ConsensusEngine` (streams.oracle.consensus) decides; this adapter decodes, sends
each consensus price to oracle.prices (its history, for the archive and other readers) and
straight into every partition of risk.inputs (one hop from a tick to the risk engine: the
entry's origin is the observation that produced the price), sends refusals to
aps.deadletter, and persists the engine's snapshot in the RocksDB table
``consensus-state`` after every batch so a restarted worker continues exactly (a price
sent again after a crash carries the same sequence and is dropped by the risk engine).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence

import faust
from faust.types import EventT, TopicT

from streams.app.context import event_context
from streams.app.deadletters import DeadLetterSink
from streams.app.factory import batch_agent
from streams.app.latency import observe_hop, record_ms, tick_ts_header
from streams.app.metrics import CONFLATED, DROPPED, MESSAGES
from streams.app.pricegate import PriceGate
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


class ConsensusStage:
    """Runs observations through the engine restored from the state table."""

    def __init__(self, settings: Settings, state: faust.Table, prices: TopicT,
                 risk_inputs: TopicT, dead_letters: DeadLetterSink,
                 gate: PriceGate | None = None) -> None:
        self.feeds = load_feeds(settings.feeds_file)
        self.state = state
        self.prices = prices
        self.risk_inputs = risk_inputs
        self.partitions = settings.partitions
        self.dead_letters = dead_letters
        self.gate = gate
        self._engine: ConsensusEngine | None = None

    def engine(self) -> ConsensusEngine:
        """The engine, restored from the recovered table on first use."""
        if self._engine is None:
            raw = self.state.get(STATE_KEY)
            snapshot = decode(raw, ConsensusState) if raw else None
            self._engine = ConsensusEngine(self.feeds, snapshot=snapshot)
            log.info("consensus engine %s", "restored" if snapshot else "started empty")
        return self._engine

    def forget(self) -> None:
        """Drop the in-memory engine (partition revoked); it is restored on next use."""
        self._engine = None

    def process(self, events: Sequence[EventT]) -> None:
        """Run one batch in order, publish each asset's latest price, persist the state.

        A batch holds whatever observations queued while the previous one was processed:
        one when the stage keeps up. When it does not, only the last consensus price of
        each asset in the batch is published (the others are superseded before anyone
        could act on them; counted in aps_conflated_prices_total): the risk stage then
        revalues once per asset per batch and catches up instead of falling further
        behind. What is published is what risk.inputs records, so a replay of risk.inputs
        is exact either way.
        """
        engine = self.engine()
        latest: dict[str, tuple[ConsensusPrice, EventT]] = {}
        computed = 0
        for event in events:
            try:
                observation = decode(event.message.value, OracleObservation)
            except CodecError as exc:
                engine.refuse_input(exc.reason, str(exc))  # keeps the engine's counters whole
                self.dead_letters.send(event, exc.reason, str(exc))
                continue
            outcome = engine.observe(observation)
            if outcome.rejection is not None:
                self.dead_letters.send(event, outcome.rejection.reason, outcome.rejection.detail,
                                       observation.received_at)
            elif outcome.dropped is not None:
                DROPPED.labels(STAGE, outcome.dropped.reason).inc()
            for price in outcome.prices:
                latest.pop(price.asset, None)  # keep the order of each asset's last price
                latest[price.asset] = (price, event)
                computed += 1
        for price, cause in latest.values():
            if self.gate is None:
                self._publish(price, cause)
            else:
                self.gate.offer(price.asset, price.sequence,
                                functools.partial(self._publish, price, cause))
        if computed > len(latest):
            CONFLATED.inc(computed - len(latest))
        with event_context(events[-1]):
            self.state[STATE_KEY] = encode(engine.snapshot())
        MESSAGES.labels(STAGE).inc(len(events))

    def _publish(self, price: ConsensusPrice, cause: EventT) -> None:
        key = price.asset.encode()
        value = encode(price)
        self.prices.send_soon(key=key, value=value)
        sent_ms = time.time() * 1000
        message = cause.message
        entry = encode_risk_input(message.topic, message.partition, message.offset, value)
        tick_ms = record_ms(cause)
        headers = tick_ts_header(tick_ms)
        for partition in range(self.partitions):
            self.risk_inputs.send_soon(key=key, value=entry, partition=partition,
                                       headers=headers)
        observe_hop("tick_to_price", tick_ms, now_ms=sent_ms)
        # the entries are written in the same step as the price (no hop left between them)
        observe_hop("price_to_risk_input", round(sent_ms))


def install_consensus(app: faust.App, settings: Settings, *, ticks: TopicT, prices: TopicT,
                      risk_inputs: TopicT, dead_letters: TopicT,
                      gate: PriceGate | None = None) -> ConsensusStage:
    """Add the consensus table and agent to `app` (publishing through `gate`, if given)."""
    state = app.Table(STATE_TABLE, partitions=1, key_type=bytes, value_type=bytes)
    stage = ConsensusStage(settings, state, prices, risk_inputs,
                           DeadLetterSink(dead_letters, STAGE), gate)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: faust.App, revoked: set[faust.types.TP], **_: object) -> None:
        if any(tp.topic == ticks.get_topic_name() for tp in revoked):
            stage.forget()

    batch_agent(app, ticks, name="consensus", stage=STAGE, size=BATCH, process=stage.process)

    return stage
