"""The risk stage persists what changed once per APS_RISK_PERSIST_MS, never before the
broker has every send of the inputs the persisted state reflects, and writes an account
changed by several batches in that interval once."""

from __future__ import annotations

import asyncio
import functools

import pytest

from streams.app import risk_agent
from streams.app.checkpoint import Checkpoint, checkpoint_key
from streams.app.deadletters import DeadLetterSink
from streams.app.risk_agent import RiskProcessor
from streams.codecs import decode, encode, encode_risk_input
from streams.config import Settings
from streams.domain import AccountState, RiskInput
from streams.scenario.bundled import bundled_scenario
from streams.topics import ACCOUNT_EVENTS, RISK_INPUTS
from tests.unit.app.fakes import FakeTopic, fake_events

BOOK = 4


class CountingTable(dict):
    """A table that counts the writes of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: dict[bytes, int] = {}

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes[key] = self.writes.get(key, 0) + 1
        super().__setitem__(key, value)


@functools.cache
def _book() -> list[bytes]:
    """The risk.inputs entries of a small book's account events."""
    events = bundled_scenario(accounts=BOOK, duration_s=60).account_events
    return [encode_risk_input(ACCOUNT_EVENTS, 0, offset, encode(event))
            for offset, event in enumerate(events)]


@functools.cache
def _accounts() -> int:
    return len({event.account_id for event in bundled_scenario(accounts=BOOK,
                                                                duration_s=60).account_events})


def _processor(persist_ms: int) -> tuple[RiskProcessor, CountingTable, dict, FakeTopic]:
    settings = Settings(partitions=1, risk_persist_ms=persist_ms)
    accounts, market = CountingTable(), {}
    dead = FakeTopic(held_acks=True)
    commands = {chain: FakeTopic(held_acks=True) for chain in settings.chains}
    processor = RiskProcessor(settings, accounts, market, commands,  # type: ignore[arg-type]
                              DeadLetterSink(dead, "risk"), refusals=FakeTopic())
    return processor, accounts, market, dead


def test_the_state_is_persisted_after_the_interval_once_the_sends_are_acknowledged() -> None:
    async def run() -> None:
        processor, accounts, market, dead = _processor(persist_ms=30)
        values = [*_book(), b"not a risk input"]  # the last one is dead-lettered
        await processor.process(fake_events(RISK_INPUTS, values))
        assert not accounts and checkpoint_key(0) not in market  # not persisted yet
        await asyncio.sleep(0.1)
        assert not accounts, "persisted before the broker acknowledged the dead letter"
        assert dead.acknowledge() == 1
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(accounts) == _accounts()
        checkpoint = Checkpoint.decode(market[checkpoint_key(0)])
        assert checkpoint is not None and checkpoint.through == len(values) - 1
    asyncio.run(run())


def test_an_account_changed_by_several_batches_in_the_interval_is_written_once() -> None:
    async def run() -> None:
        processor, accounts, _, _ = _processor(persist_ms=50)
        book = _book()
        for offset in range(len(book)):  # one input per batch
            await processor.process(fake_events(RISK_INPUTS, book[offset:offset + 1],
                                                first_offset=offset))
        await asyncio.sleep(0.15)
        assert len(accounts) == _accounts()
        assert set(accounts.writes.values()) == {1}
        assert len(book) > _accounts()  # some account had several events
    asyncio.run(run())


def test_with_no_interval_every_batch_is_persisted_before_it_returns() -> None:
    async def run() -> None:
        processor, accounts, market, _ = _processor(persist_ms=0)
        book = _book()
        await processor.process(fake_events(RISK_INPUTS, book[:1]))
        assert len(accounts) == 1
        checkpoint = Checkpoint.decode(market[checkpoint_key(0)])
        assert checkpoint is not None and checkpoint.through == 0
    asyncio.run(run())



def test_a_persist_stores_its_snapshot_even_if_batches_are_applied_while_it_encodes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(risk_agent, "ENCODE_CHUNK", 1)  # one account per event-loop turn

    async def run() -> None:
        processor, accounts, market, _ = _processor(persist_ms=10_000)
        book = _book()
        await processor.process(fake_events(RISK_INPUTS, book))
        entries = [decode(raw, RiskInput) for raw in book]
        ids = {entry.body.account_id for entry in entries}
        account = max(ids)  # encoded last: after the batch below is applied
        last = [entry for entry in entries if entry.body.account_id == account][-1]
        engine = processor.partitions[0].engine
        before = {i: state.version for i in ids if (state := engine.state(i)) is not None}

        flushing = asyncio.ensure_future(processor.flush())
        await asyncio.sleep(0)  # the snapshot is taken, its encoding under way
        again = encode_risk_input(ACCOUNT_EVENTS, 0, 10_000, encode(last.body))
        await processor.process(fake_events(RISK_INPUTS, [again], first_offset=len(book)))
        await flushing

        stored = {key.decode(): decode(raw, AccountState).version
                  for key, raw in accounts.items()}
        assert stored == before  # the snapshot's states, not the later one
        checkpoint = Checkpoint.decode(market[checkpoint_key(0)])
        assert checkpoint is not None and checkpoint.through == len(book) - 1

        await processor.flush()
        assert decode(accounts[account.encode()], AccountState).version == before[account] + 1
    asyncio.run(run())
