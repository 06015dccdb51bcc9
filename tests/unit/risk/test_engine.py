"""PartitionEngine: vectorized valuation, dedupe, validation, persistence and replay."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.bench.risk import naive_revalue
from streams.codecs import decode, encode
from streams.domain import (
    AccountEvent,
    AccountState,
    CollateralChanged,
    ConsensusPrice,
    ExecutionStatus,
    LadderAction,
    MarketState,
    OptionType,
    Position,
    PositionChanged,
    PriceStatus,
    RiskInput,
)
from streams.errors import DomainError
from streams.risk.bookgen import account_states, generate_accounts
from streams.risk.engine import EngineConfig, PartitionEngine
from streams.risk.margin import RATIO_CAP
from tests.unit.risk.engine_helpers import (
    Feeder,
    crash_path,
    ladder,
    option,
    perp,
    rules,
)


def price_input(asset: str, price: float, seq: int, time_ms: int, conf: float = 0.0,
                status: PriceStatus = PriceStatus.OK) -> RiskInput:
    return RiskInput("oracle.prices", 0, seq, ConsensusPrice(
        asset, time_ms, price, conf, status, 0.0, ["a/b"], [], [], seq))


def test_vectorized_valuation_matches_a_per_position_loop() -> None:
    book = generate_accounts({"BTC": 60_000.0}, 300, seed=5)
    engine = PartitionEngine(EngineConfig(), account_states(book))
    engine.apply(price_input("BTC", 58_000.0, 1, 3_600_000, conf=25.0))
    config = EngineConfig()
    expected = naive_revalue(book, 58_000.0, 25.0, 3_600_000, config.grid, config.margin)
    for account, ratio in zip(book, expected, strict=True):
        figures = engine.figures(account.account_id)
        assert figures is not None
        assert figures.margin_ratio == pytest.approx(ratio, rel=1e-9)


def test_valuation_of_a_known_account() -> None:
    feed = Feeder()
    feed.account("a", [Position("p", perp(), 2.0, 50_000.0)], collateral=10_000.0)
    feed.price("BTC", 49_000.0, 1_000, confidence=10.0)
    state = feed.engine.state("a")
    assert state is not None and state.valuation is not None
    v = state.valuation
    # equity at the adverse edge: 10,000 + 2 * (49,000 - 50,000) - 2 * (2 * 10)
    assert v.equity == pytest.approx(10_000 - 2_000 - 40.0)
    assert v.maintenance_margin == pytest.approx(0.01 * 2 * 49_020.0)
    assert v.margin_ratio == pytest.approx(v.equity / v.maintenance_margin)
    assert v.exposures[0].underlying == "BTC" and v.exposures[0].delta == pytest.approx(2.0)
    assert v.event_time == 1_000


def test_an_account_without_positions_has_no_requirement() -> None:
    feed = Feeder()
    feed.account("a", [], collateral=100.0)
    feed.account("b", [Position("p", perp(), 1.0, 100.0)], collateral=100.0)
    feed.price("BTC", 100.0, 1)
    assert feed.engine.figures("a").margin_ratio == RATIO_CAP  # type: ignore[union-attr]


def test_duplicates_are_dropped() -> None:
    feed = Feeder()
    event = feed.entry("account.events", AccountEvent(
        "e1", "a", 5, CollateralChanged("arbitrum", 100.0, 0.0)))
    feed.apply(event)
    feed.apply(event)  # same origin and offset: a redelivery
    state = feed.engine.state("a")
    assert state is not None and state.version == 1 and state.collateral[0].balance == 100.0
    feed.apply(price_input("BTC", 100.0, 7, 10))
    assert feed.apply(price_input("BTC", 50.0, 7, 11)) == []
    assert feed.apply(price_input("BTC", 50.0, 6, 12)) == []
    assert feed.engine.market_state().assets[0].price == 100.0
    assert feed.engine.counters.duplicates == 3


def test_reports_for_unknown_accounts_or_commands_change_nothing() -> None:
    feed = Feeder()
    feed.account("a", [Position("p", perp(), 1.0, 100.0)], collateral=100.0)
    before = feed.engine.state("a")
    from streams.domain import CommandAction, ExecutionReport
    for account in ("a", "ghost"):
        feed.apply(feed.entry("execution.reports", ExecutionReport(
            "r", "no-such-command", account, "arbitrum", ExecutionStatus.FILLED, "",
            CommandAction.TRADE, perp(), 1.0, 100.0, 0.0, 0.0, 5, "v")))
    assert feed.engine.state("a") == before
    assert feed.engine.state("ghost") is None


@pytest.mark.parametrize("body, reason", [
    (PositionChanged(Position("p", perp(), float("nan"), 1.0)), "invalid_position"),
    (PositionChanged(Position("p", dataclasses.replace(option(100.0), strike=None), 1.0, 1.0)),
     "invalid_position"),
    (CollateralChanged("arbitrum", float("inf"), 0.0), "invalid_collateral"),
])
def test_invalid_account_events_are_refused_without_a_trace(body: object, reason: str) -> None:
    feed = Feeder()
    with pytest.raises(DomainError) as info:
        feed.event("a", body)
    assert info.value.reason == reason
    assert feed.engine.state("a") is None


def test_invalid_prices_are_refused() -> None:
    engine = PartitionEngine()
    for bad in (float("nan"), 0.0, -1.0):
        with pytest.raises(DomainError) as info:
            engine.apply(price_input("BTC", bad, 1, 1))
        assert info.value.reason == "invalid_price"
    with pytest.raises(DomainError):
        engine.apply(price_input("BTC", 1.0, 1, 1, conf=-1.0))
    assert engine.market_state().assets == []


def test_halted_price_keeps_the_mark_and_widens_the_band() -> None:
    feed = Feeder()
    feed.account("a", [Position("p", perp(), 1.0, 100.0)], collateral=50.0)
    feed.price("BTC", 100.0, 1, confidence=0.5)
    feed.price("BTC", 90.0, 2, confidence=1.0, status=PriceStatus.HALTED)
    entry = feed.engine.market_state().assets[0]
    assert entry.price == 100.0 and entry.status is PriceStatus.HALTED
    assert entry.confidence == pytest.approx(11.0)
    assert entry.returns == []  # a halted price is not a return
    figures = feed.engine.figures("a")
    assert figures is not None and figures.equity_adverse == pytest.approx(50.0 - 2 * 11.0)


def test_take_dirty_returns_changed_accounts_once_sorted() -> None:
    feed = Feeder()
    feed.account("b", [Position("p", perp(), 1.0, 100.0)], collateral=50.0)
    feed.account("a", [Position("p", perp(), 1.0, 100.0)], collateral=50.0)
    assert [s.account_id for s in feed.engine.take_dirty()] == ["a", "b"]
    assert feed.engine.take_dirty() == []
    feed.price("BTC", 100.0, 1)  # first valuation
    assert [s.account_id for s in feed.engine.take_dirty()] == ["a", "b"]
    feed.price("BTC", 100.1, 2)  # a small move changes no decision-relevant state
    assert feed.engine.take_dirty() == []
    feed.price("BTC", 90.0, 3)  # both lowest ratios fall by far more than 5%
    dirty = feed.engine.take_dirty()
    assert [s.account_id for s in dirty] == ["a", "b"]
    assert dirty[0].min_margin_ratio == pytest.approx(dirty[0].valuation.margin_ratio)


def scenario_log(feed: Feeder) -> list[RiskInput]:
    """Accounts, a crash path and fills of every command two ticks later."""
    account_rules = rules(margin=ladder((8.0, LadderAction.TOP_UP, 0.5),
                                        (6.0, LadderAction.REDUCE, 0.5),
                                        (4.0, LadderAction.REDUCE, 1.0), target=10.0),
                          cooldown_ms=5_000)
    feed.account("a", [Position("p", perp(), 1.0, 60_000.0)], 12_000.0, 3_000.0, account_rules)
    feed.account("b", [Position("o1", option(55_000.0), -2.0, 1_500.0, 0.7),
                       Position("h", perp(), 0.6, 60_000.0)], 20_000.0, 5_000.0,
                 rules(margin=ladder((2.0, LadderAction.TOP_UP, 0.5),
                                     (1.6, LadderAction.REDUCE, 0.5), target=2.5)))
    inflight: list[tuple[int, object]] = []
    for tick, (t, p) in enumerate(crash_path(60_000.0, 300, jump_at=100, jump_steps=40)):
        for _due, command in [x for x in inflight if x[0] == tick]:
            feed.report(command, price=None, time_ms=t)  # type: ignore[arg-type]
        inflight = [x for x in inflight if x[0] != tick]
        for command in feed.price("BTC", p, t, confidence=p * 2e-4):
            inflight.append((tick + 2, command))
    return list(feed.log)


def test_same_log_same_decisions() -> None:
    first, second = Feeder(), Feeder()
    log = scenario_log(first)
    outputs = [second.engine.apply(item) for item in log]
    replayed = [c for out in outputs for c in out]
    assert replayed, "the scenario must produce commands"
    again = PartitionEngine()
    assert [c for item in log for c in again.apply(item)] == replayed
    assert list(again.accounts()) == list(second.engine.accounts())


def test_a_restored_engine_decides_like_one_that_never_stopped() -> None:
    log = scenario_log(Feeder())
    cut = len(log) // 2
    original = PartitionEngine()
    persisted: dict[str, bytes] = {}
    for item in log[:cut]:
        original.apply(item)
        for state in original.take_dirty():
            persisted[state.account_id] = encode(state)
    market = encode(original.market_state())
    restored = PartitionEngine(EngineConfig(),
                               [decode(raw, AccountState) for raw in persisted.values()],
                               decode(market, MarketState))
    for item in log[cut:]:
        assert restored.apply(item) == original.apply(item)
    assert list(restored.accounts()) == list(original.accounts())


def test_account_state_and_market_state_round_trip_through_avro() -> None:
    feed = Feeder()
    scenario_log(feed)
    for state in feed.engine.accounts():
        assert decode(encode(state), AccountState) == state
    market = feed.engine.market_state()
    assert decode(encode(market), MarketState) == market
    assert len(market.assets[0].returns) == len(market.assets[0].return_intervals_ms) > 0


def test_pending_commands_expire_after_their_deadline_and_the_grace() -> None:
    feed = Feeder(PartitionEngine(EngineConfig(report_grace_ms=1_000)))
    feed.account("a", [Position("p", perp(), 100.0, 100.0)], collateral=160.0,
                 reserve=1_000.0, account_rules=rules(deadline_ms=5_000))
    commands = feed.price("BTC", 100.0, 0)
    assert commands and all(c.deadline == 5_000 for c in commands)
    assert feed.price("BTC", 100.0, 6_000) == []  # still in flight: the breach is covered
    assert [p.command_id for p in feed.engine.state("a").pending] == [  # type: ignore[union-attr]
        c.command_id for c in commands]
    # past deadline + grace the command is dropped, its rule freed, and the breach (still
    # there) is handled again at once
    again = feed.price("BTC", 100.0, 6_001)
    state = feed.engine.state("a")
    assert state is not None
    assert [p.command_id for p in state.pending] == [c.command_id for c in again]
    assert again and again[0].created_at == 6_001 and again[0].command_id != commands[0].command_id
    assert feed.engine.counters.expired == 1


def test_option_positions_use_their_model_and_mark_vol() -> None:
    feed = Feeder()
    call = option(100.0, OptionType.CALL, days=365)
    feed.account("a", [Position("c", call, 1.0, 0.0, 0.5)], collateral=0.0)
    feed.price("BTC", 100.0, 0)
    state = feed.engine.state("a")
    assert state is not None and state.valuation is not None
    exposure = state.valuation.exposures[0]
    # at the money, one year, 50% vol, r = 0: N(0.25) and the textbook value
    assert exposure.delta == pytest.approx(0.598706, abs=1e-6)
    assert state.valuation.equity == pytest.approx(19.741265, abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["perp", "call", "put"]),
                          st.floats(-5.0, 5.0).filter(lambda q: abs(q) > 1e-3),
                          st.floats(40_000.0, 80_000.0), st.integers(1, 120),
                          st.floats(0.2, 1.5)), min_size=1, max_size=5),
       st.floats(55_000.0, 65_000.0), st.floats(0.0, 100.0), st.floats(0.0, 3.0))
def test_the_policy_projection_agrees_with_the_book(
        legs: list[tuple[str, float, float, int, float]], spot: float, conf: float,
        k: float) -> None:
    from streams.risk.policy import Holding, Projection, QuoteView

    positions = []
    for n, (kind, q, strike, days, vol) in enumerate(legs):
        if kind == "perp":
            positions.append(Position(f"p{n}", perp(), q, strike))
        else:
            opt = option(strike, OptionType.CALL if kind == "call" else OptionType.PUT,
                         days=days)
            positions.append(Position(f"p{n}", opt, q, 1_000.0, vol))
    feed = Feeder()
    feed.account("a", positions, collateral=50_000.0,
                 account_rules=rules(margin=ladder((0.5, LadderAction.TOP_UP, 0.1), k=k)))
    feed.price("BTC", spot, 3_600_000, confidence=conf)
    figures = feed.engine.figures("a")
    assert figures is not None
    book = feed.engine.book
    holdings = [Holding(book.row_ids[row], book.row_instruments[row],
                        float(book.rows["q"][row]), 0.0, 0.0, book.unit_row(row))
                for row in book.active_rows(0)]
    quote = QuoteView("BTC", spot, conf, PriceStatus.OK, 3_600_000, 1)
    projection = Projection(holdings, {"BTC": quote}, k, EngineConfig().margin_for,
                            EngineConfig().grid)
    risk = projection.risk(np.array([h.quantity for h in holdings]), figures.equity)
    assert risk.maintenance == pytest.approx(figures.maintenance, rel=1e-9, abs=1e-6)
    assert risk.equity_adverse == pytest.approx(figures.equity_adverse, rel=1e-9, abs=1e-6)
