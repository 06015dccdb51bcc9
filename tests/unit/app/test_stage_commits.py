"""No stage returns from a batch (after which Faust may commit its input) before the broker
has acknowledged everything the batch sent; the consensus stage restarted from its stored
entry skips what it already reflects and loses no price its gate held back.

Faust's own flush before a commit gives up after 0.1 s (streams.app.delivery); before
these stages awaited their sends, each of these tests failed.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable

from streams.app.consensus_agent import STATE_KEY, ConsensusStage, OutgoingPrice, StoredConsensus
from streams.app.deadletters import DeadLetterSink
from streams.app.executor_app import CommandExecutor, ExecutorKeys, ExecutorState
from streams.app.partitioning import account_partition
from streams.app.pricegate import PriceGate
from streams.app.sequencer_agent import Sequencer
from streams.codecs import decode, encode
from streams.codecs.signing import sign
from streams.config import Settings
from streams.domain import ConsensusPrice, RiskInput
from streams.executors import executor_for, load_chain_profiles
from streams.scenario.bundled import bundled_scenario
from streams.topics import ACCOUNT_EVENTS, ORACLE_TICKS
from tests.unit.app.fakes import FakeTopic, fake_events
from tests.unit.factories import command

SETTINGS = Settings()


@functools.cache
def _ticks() -> list[bytes]:
    return [encode(o) for o in bundled_scenario(accounts=6, duration_s=120).observations[:300]]


async def _finishes_only_after_acks(work: Awaitable[None], *topics: FakeTopic) -> None:
    """Run `work`, acknowledging its sends a few loop turns after they are made; assert it
    never finishes while a send is unacknowledged, and does finish."""
    task = asyncio.ensure_future(work)
    for turn in range(200):
        await asyncio.sleep(0)
        unacknowledged = [f for topic in topics for f in topic.pending if not f.done()]
        if task.done():
            assert not unacknowledged, f"returned with {len(unacknowledged)} sends unacked"
            break
        if turn % 5 == 4:
            for topic in topics:
                topic.acknowledge()
    await asyncio.wait_for(task, 5)
    assert sum(len(topic.pending) for topic in topics) > 0, "nothing was sent"


def _consensus(state: dict[bytes, bytes], gate: PriceGate | None = None, *,
               held_acks: bool = False) -> tuple[ConsensusStage, FakeTopic, FakeTopic]:
    prices, inputs = FakeTopic(held_acks=held_acks), FakeTopic(held_acks=held_acks)
    stage = ConsensusStage(SETTINGS, state, prices, inputs,  # type: ignore[arg-type]
                           DeadLetterSink(FakeTopic(), "consensus"), gate)
    return stage, prices, inputs


def _sequences(topic: FakeTopic) -> list[tuple[str, int]]:
    prices = [decode(sent["value"], ConsensusPrice) for sent in topic.sent]
    return [(price.asset, price.sequence) for price in prices]


def test_consensus_returns_only_once_its_prices_are_acknowledged() -> None:
    state: dict[bytes, bytes] = {}
    stage, prices, inputs = _consensus(state, held_acks=True)
    asyncio.run(_finishes_only_after_acks(stage.process(fake_events(ORACLE_TICKS, _ticks())),
                                          prices, inputs))
    assert prices.sent and STATE_KEY in state


def test_the_stored_entry_records_the_last_offset_and_survives_a_round_trip() -> None:
    state: dict[bytes, bytes] = {}
    stage, _, _ = _consensus(state)
    asyncio.run(stage.process(fake_events(ORACLE_TICKS, _ticks()[:120])))
    stored = StoredConsensus.decode(state[STATE_KEY])
    assert stored.through == 119
    assert StoredConsensus.decode(stored.encode()) == stored
    # an entry stored by an earlier build (the bare snapshot) still restores
    assert StoredConsensus.decode(stored.snapshot) == StoredConsensus(stored.snapshot)


def test_a_restarted_stage_skips_what_its_state_reflects_and_ends_like_an_unbroken_run() -> None:
    ticks = _ticks()
    unbroken_state: dict[bytes, bytes] = {}
    unbroken, unbroken_prices, _ = _consensus(unbroken_state)
    asyncio.run(unbroken.process(fake_events(ORACLE_TICKS, ticks[:150])))
    asyncio.run(unbroken.process(fake_events(ORACLE_TICKS, ticks[150:], first_offset=150)))

    state: dict[bytes, bytes] = {}
    first, first_prices, _ = _consensus(state)
    asyncio.run(first.process(fake_events(ORACLE_TICKS, ticks[:150])))
    # the worker died before its consumer committed: the restarted stage reads 100.. again
    restarted, prices, _ = _consensus(state)
    asyncio.run(restarted.process(fake_events(ORACLE_TICKS, ticks[100:], first_offset=100)))

    assert restarted.engine().snapshot() == unbroken.engine().snapshot()
    assert _sequences(first_prices) + _sequences(prices) == _sequences(unbroken_prices)


def test_a_price_the_gate_held_when_the_worker_died_is_published_after_the_restart() -> None:
    ticks = _ticks()
    gate = PriceGate()
    gate.assign({0})  # the risk stage never applies anything: the second price is held
    state: dict[bytes, bytes] = {}
    stage, prices, _ = _consensus(state, gate)
    for offset in range(0, 200, 10):
        asyncio.run(stage.process(fake_events(ORACLE_TICKS, ticks[offset:offset + 10],
                                              first_offset=offset)))
    held = StoredConsensus.decode(state[STATE_KEY]).held
    assert held and gate.held() == len(held)
    published = set(_sequences(prices))
    assert not {(price.asset, price.sequence) for price in held} & published

    restarted, prices_after, inputs_after = _consensus(state, PriceGate())
    asyncio.run(restarted.process(fake_events(ORACLE_TICKS, ticks[200:201], first_offset=200)))
    republished = set(_sequences(prices_after))
    assert {(price.asset, price.sequence) for price in held} <= republished
    entries = [decode(sent["value"], RiskInput) for sent in inputs_after.sent]
    assert {(e.body.asset, e.body.sequence) for e in entries} >= republished


def test_an_outgoing_price_keeps_the_coordinates_of_its_observation() -> None:
    stage, prices, inputs = _consensus({})
    events = fake_events(ORACLE_TICKS, _ticks()[:60], first_offset=1000)
    asyncio.run(stage.process(events))
    entry = decode(inputs.sent[-1]["value"], RiskInput)
    assert entry.origin_topic == ORACLE_TICKS and 1000 <= entry.origin_offset < 1060
    price = decode(prices.sent[-1]["value"], ConsensusPrice)
    outgoing = OutgoingPrice.of(price, events[entry.origin_offset - 1000])
    assert outgoing.value == prices.sent[-1]["value"] and outgoing.entry == inputs.sent[-1]["value"]


def test_sequencer_returns_only_once_its_entries_are_acknowledged() -> None:
    scenario = bundled_scenario(accounts=6, duration_s=60)
    inputs = FakeTopic(held_acks=True)
    sequencer = Sequencer(SETTINGS.partitions, inputs, DeadLetterSink(FakeTopic(), "sequencer"))
    events = fake_events(ACCOUNT_EVENTS, [encode(e) for e in scenario.account_events[:20]])
    asyncio.run(_finishes_only_after_acks(sequencer.process(events), inputs))
    assert len(inputs.sent) == 20


def test_executor_returns_only_once_its_reports_are_acknowledged() -> None:
    chain = "arbitrum"
    reports, dead = FakeTopic(held_acks=True), FakeTopic(held_acks=True)
    venue = executor_for(chain, load_chain_profiles(SETTINGS.chains_file))
    executor = CommandExecutor(chain, venue, ExecutorKeys(SETTINGS.command_key,
                                                          SETTINGS.report_key),
                               ExecutorState({}, {}, {}), reports,
                               DeadLetterSink(dead, f"executor.{chain}"),
                               partitions=SETTINGS.partitions)
    valid = encode(sign(command("cmd-1", chain=chain), SETTINGS.command_key))
    home = account_partition(command().account_id, SETTINGS.partitions)
    # a genuine command (a report) and a forged one (a dead letter)
    events = fake_events(f"exec.{chain}.commands", [valid, valid[:-3] + b"xyz"], home)
    asyncio.run(_finishes_only_after_acks(executor.process(events), reports, dead))
    assert len(reports.sent) == 1 and len(dead.sent) == 1
