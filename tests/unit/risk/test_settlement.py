"""Settlement in event time: a report takes effect when the partition's clock reaches its
execution time, never earlier, and held reports survive a restart."""

from __future__ import annotations

from dataclasses import replace

from streams.codecs import decode, encode
from streams.domain import AccountState, ExecutionStatus, MarketState, Position
from streams.risk.engine import EngineConfig, PartitionEngine
from tests.unit.risk.engine_helpers import Feeder, perp, rules


def _breached_account(feed: Feeder) -> None:
    feed.account("a", [Position("p", perp(), 100.0, 100.0)], collateral=160.0,
                 reserve=1_000.0, account_rules=rules())


def test_a_report_from_the_future_waits_for_its_settlement_time() -> None:
    feed = Feeder()
    _breached_account(feed)
    commands = feed.price("BTC", 100.0, 1_000)
    top_up = next(c for c in commands if c.amount > 0)
    feed.report(top_up, time_ms=5_000)
    engine = feed.engine
    assert engine.held_reports() == 1
    assert engine.pending_command("a", top_up.command_id) is not None
    before = engine.state("a")
    assert before is not None
    feed.price("BTC", 100.0, 4_999)  # still before the settlement instant
    assert engine.held_reports() == 1
    feed.price("BTC", 100.0, 5_000)
    assert engine.held_reports() == 0
    assert engine.pending_command("a", top_up.command_id) is None
    after = engine.state("a")
    assert after is not None
    assert sum(c.balance for c in after.collateral) == \
        sum(c.balance for c in before.collateral) + top_up.amount


def test_a_late_report_is_applied_at_once() -> None:
    feed = Feeder()
    _breached_account(feed)
    top_up = next(c for c in feed.price("BTC", 100.0, 1_000) if c.amount > 0)
    feed.price("BTC", 100.0, 9_000)
    feed.report(top_up, time_ms=5_000)
    assert feed.engine.held_reports() == 0
    assert feed.engine.pending_command("a", top_up.command_id) is None


def test_held_reports_are_applied_in_settlement_order_whatever_their_arrival() -> None:
    def run(reverse: bool) -> list[AccountState]:
        feed = Feeder()
        _breached_account(feed)
        feed.account("b", [Position("q", perp(), 100.0, 100.0)], collateral=160.0,
                     reserve=1_000.0, account_rules=rules())
        commands = feed.price("BTC", 100.0, 1_000)
        times = {c.command_id: 3_000 + 500 * i for i, c in enumerate(commands)}
        for command in (reversed(commands) if reverse else commands):
            feed.report(command, time_ms=times[command.command_id])
        feed.price("BTC", 99.0, 10_000)
        # the origin offsets differ with the arrival order (that is the log); nothing else
        return [replace(s, origin_offsets={}) for s in feed.engine.accounts()]

    assert run(reverse=False) == run(reverse=True)


def test_held_reports_survive_a_restart() -> None:
    feed = Feeder()
    _breached_account(feed)
    commands = feed.price("BTC", 100.0, 1_000)
    for command in commands:
        feed.report(command, ExecutionStatus.FILLED, time_ms=6_000)
    market = feed.engine.take_market_state()
    assert market is not None and len(market.held_reports) == len(commands)
    restored = PartitionEngine(EngineConfig(), list(feed.engine.accounts()),
                               decode(encode(market), MarketState))
    assert restored.held_reports() == len(commands)
    later = feed.entry("oracle.prices", replace(feed.log[-len(commands) - 1].body,
                                                event_time=7_000, sequence=99))
    assert restored.apply(later) == feed.engine.apply(later)
    assert list(restored.accounts()) == list(feed.engine.accounts())
    assert restored.held_reports() == 0


def test_market_state_is_offered_only_when_it_changed_with_only_the_assets_that_did() -> None:
    feed = Feeder()
    _breached_account(feed)
    feed.price("BTC", 100.0, 1_000)
    feed.price("ETH", 10.0, 1_000)
    first = feed.engine.take_market_state()
    assert first is not None and [a.asset for a in first.assets] == ["BTC", "ETH"]
    assert feed.engine.take_market_state() is None
    feed.price("BTC", 101.0, 2_000)
    delta = feed.engine.take_market_state()
    assert delta is not None and [a.asset for a in delta.assets] == ["BTC"]
    assert delta.watermark == 2_000
