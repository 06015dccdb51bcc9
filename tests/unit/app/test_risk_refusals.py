"""The risk stage turns the engine's refusals into ActionRefused events on risk.refusals, in
the step of the input that caused them, counted by rule family and reason, and persists no
state before the broker has them."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from streams.app.deadletters import DeadLetterSink
from streams.app.metrics import REFUSALS
from streams.app.partitioning import account_partition
from streams.app.risk_agent import RiskProcessor
from streams.codecs import decode, encode
from streams.codecs.signing import sign
from streams.config import DEV_REPORT_KEY, Settings
from streams.domain import (
    ActionRefused,
    ConsensusPrice,
    DeltaBandRule,
    ExecutionReport,
    RiskInput,
    RulesChanged,
)
from streams.risk.policy import Refusal
from streams.topics import RISK_INPUTS
from tests.unit.app.fakes import FakeEvent, FakeMessage, FakeTopic
from tests.unit.risk.engine_helpers import Feeder, rules
from tests.unit.risk.test_policy_scenarios import hedged_straddle

PARTITIONS = 3


def _log() -> tuple[Feeder, list[Refusal]]:
    """A reference engine fed a hedged straddle whose second drift is refused by the
    cooldown (recorded once: the account's state does not change until the next), then
    cut by the maximum notional, and every refusal it recorded."""
    feed = Feeder()
    hedged_straddle(feed, cooldown_ms=60_000)
    feed.price("BTC", 60_000.0, 0)
    first = feed.price("BTC", 63_000.0, 1_000)
    feed.report(first[0], price=63_000.0, time_ms=1_100)
    feed.price("BTC", 66_000.0, 20_000)
    feed.price("BTC", 66_100.0, 21_000)
    feed.event("mm", RulesChanged(rules(delta=DeltaBandRule(band=0.1, hard_limit=0.35),
                                        margin=None, cooldown_ms=0, max_notional=1_000.0)),
               22_000)
    feed.price("BTC", 66_200.0, 23_000)
    return feed, feed.engine.take_refusals()


def _events(feed: Feeder, partition: int) -> list[FakeEvent]:
    """The reference engine's log as risk.inputs events of `partition`."""
    return [FakeEvent(FakeMessage(RISK_INPUTS, partition, offset, b"mm", encode(_signed(item))))
            for offset, item in enumerate(feed.log)]


def _signed(item: RiskInput) -> RiskInput:
    """`item` with its execution report signed by the executors' key (the stage refuses
    unsigned reports; the reference engine does not check)."""
    if isinstance(item.body, ExecutionReport):
        return replace(item, body=sign(item.body, DEV_REPORT_KEY))
    return item


def _processor(refusals: FakeTopic) -> RiskProcessor:
    settings = Settings(partitions=PARTITIONS, risk_persist_ms=0)
    commands = {chain: FakeTopic() for chain in settings.chains}
    return RiskProcessor(settings, {}, {}, commands,  # type: ignore[arg-type]
                         DeadLetterSink(FakeTopic(), "risk"), refusals=refusals)


def test_every_refusal_of_the_engine_becomes_an_action_refused_event() -> None:
    feed, expected = _log()
    assert [r.code for r in expected] == ["cooldown", "max_notional"]
    partition = account_partition("mm", PARTITIONS)
    refusals = FakeTopic()
    before = REFUSALS.labels("delta_band", "cooldown")._value.get()
    asyncio.run(_processor(refusals).process(_events(feed, partition)))
    sent = [decode(record["value"], ActionRefused) for record in refusals.sent]
    # the offsets of the two prices that were refused, in the log the events carry
    offsets = [offset for offset, item in enumerate(feed.log)
               if isinstance(item.body, ConsensusPrice)
               and item.body.event_time in (20_000, 23_000)]
    assert sent == [ActionRefused("mm", r.rule, r.code, r.detail, r.values, r.event_time,
                                  partition, offset)
                    for r, offset in zip(expected, offsets, strict=True)]
    assert sent[0].rule == "delta_band:BTC" and sent[0].event_time == 20_000
    assert sent[0].values == {"fired_at": 1_000.0, "cooldown_ms": 60_000.0}
    assert all(record["key"] == b"mm" and record["partition"] == partition
               for record in refusals.sent)
    assert sent[1].values["max_command_notional"] == 1_000.0
    assert sent[1].values["notional"] > 1_000.0 and sent[1].values["commands"] == 1.0
    assert REFUSALS.labels("delta_band", "cooldown")._value.get() == before + 1


def test_the_state_is_not_persisted_before_the_broker_has_the_refusals() -> None:
    async def run() -> None:
        feed, _ = _log()
        refusals = FakeTopic(held_acks=True)
        processor = _processor(refusals)
        accounts: dict[bytes, bytes] = {}
        processor.accounts = accounts  # type: ignore[assignment]
        step = asyncio.ensure_future(processor.process(_events(feed, 0)))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not step.done() and not accounts, "persisted before the refusals were acked"
        assert refusals.acknowledge() == 2
        await step
        assert b"mm" in accounts
    asyncio.run(run())
