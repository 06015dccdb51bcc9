"""The simulated venue: deterministic fills, slippage bound, expiry, top-ups."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streams.domain import CommandAction, ExecutionStatus, Side
from streams.executors import executor_for, load_chain_profiles
from streams.executors.venue import SimulatedVenue, VenueParams
from streams.paths import INFRA_DIR
from tests.unit.factories import command

VENUE = SimulatedVenue("arbitrum", VenueParams("sim", fee_bps=4.0, base_slippage_bps=4.0,
                                                impact_bps_per_million=10.0))


def test_sell_fills_below_the_trusted_price_by_the_slippage() -> None:
    report = VENUE.execute(command(quantity=2.0, price=3000.0, side=Side.SELL), now_ms=2_000)
    assert report.status is ExecutionStatus.FILLED
    expected_slip = 4.0 + 10.0 * 6000.0 / 1e6
    assert report.fill_price == pytest.approx(3000.0 * (1 - expected_slip / 1e4))
    assert report.filled_quantity == -2.0
    assert report.fee == pytest.approx(2.0 * report.fill_price * 4.0 / 1e4)


def test_buy_fills_above() -> None:
    report = VENUE.execute(command(side=Side.BUY), now_ms=2_000)
    assert report.fill_price > 3000.0 and report.filled_quantity == 2.0


def test_fill_beyond_the_slippage_bound_is_refused() -> None:
    big = command(quantity=10_000.0, slippage_bps=30.0)  # 30M notional -> 304 bps impact
    report = VENUE.execute(big, now_ms=2_000)
    assert report.status is ExecutionStatus.REJECTED
    assert "exceeds bound" in report.reason
    assert report.filled_quantity == 0.0


def test_command_past_its_deadline_expires() -> None:
    report = VENUE.execute(command(deadline=61_000), now_ms=61_001)
    assert report.status is ExecutionStatus.EXPIRED


def test_top_up_moves_the_amount() -> None:
    top_up = command(action=CommandAction.TOP_UP, amount=2500.0, quantity=0.0)
    report = VENUE.execute(top_up, now_ms=1_000)
    assert report.status is ExecutionStatus.FILLED and report.top_up_amount == 2500.0


def test_same_command_same_report() -> None:
    assert VENUE.execute(command(), 5_000) == VENUE.execute(command(), 5_000)


def test_report_time_never_precedes_the_command() -> None:
    assert VENUE.execute(command(created_at=9_000, deadline=70_000), now_ms=0).executed_at == 9_000


def test_a_command_settles_its_chains_latency_after_it_was_created() -> None:
    slow = SimulatedVenue("ethereum", VenueParams("sim", 5.0, 3.0, 8.0, settlement_ms=12_000))
    report = slow.execute(command(created_at=9_000, deadline=70_000), now_ms=50_000)
    assert report.status is ExecutionStatus.FILLED
    assert report.executed_at == 21_000  # created_at + settlement, whatever the clock says


def test_a_command_that_would_settle_after_its_deadline_expires() -> None:
    slow = SimulatedVenue("ethereum", VenueParams("sim", 5.0, 3.0, 8.0, settlement_ms=12_000))
    report = slow.execute(command(created_at=50_000, deadline=61_000), now_ms=50_000)
    assert report.status is ExecutionStatus.EXPIRED and report.executed_at == 62_000


def test_every_configured_chain_has_an_executor() -> None:
    profiles = load_chain_profiles(INFRA_DIR / "chains.toml")
    for chain in ("ethereum", "arbitrum", "solana", "base"):
        assert executor_for(chain, profiles).chain == chain
    assert profiles.profile("base") == replace(profiles.default, chain="base")


def test_option_trades_fill_at_the_option_mark_not_the_underlying() -> None:
    import dataclasses

    option_trade = dataclasses.replace(command(side=Side.SELL),
                                       trigger={"reference_price": 120.0})
    report = VENUE.execute(option_trade, now_ms=2_000)
    assert report.fill_price == pytest.approx(120.0, rel=1e-3)
