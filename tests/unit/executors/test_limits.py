"""Executor bounds: each refusal names its limit; the defaults let the policy's commands by;
the rate is counted in event time; the bounds load from the chains file."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from streams.domain import CommandAction, ExecutionStatus, Side
from streams.domain.rules import CommandLimits
from streams.errors import ConfigError
from streams.executors import load_chain_profiles
from streams.executors.limits import (
    ExecutorLimits,
    admit_rate,
    check_command,
    load_executor_limits,
    rate_refusal,
)
from streams.executors.venue import SimulatedVenue, VenueParams
from streams.paths import INFRA_DIR
from tests.unit.executors.test_chains import GOOD_DEFAULT
from tests.unit.factories import command

LIMITS = ExecutorLimits()


def test_the_defaults_are_well_above_what_the_policy_emits() -> None:
    policy = CommandLimits()
    assert LIMITS.max_notional_usd >= 10 * policy.max_command_notional
    assert LIMITS.max_slippage_bps >= 10 * policy.slippage_bps
    assert LIMITS.max_deadline_horizon_ms >= 10 * policy.deadline_ms
    assert (LIMITS.max_commands_per_account / LIMITS.rate_window_ms
            >= 10 * policy.max_commands / policy.rate_window_ms)
    largest = command(quantity=policy.max_command_notional / 3000.0, price=3000.0,
                      slippage_bps=policy.slippage_bps, deadline=1_000 + policy.deadline_ms)
    assert check_command(largest, LIMITS) is None
    top_up = command(action=CommandAction.TOP_UP, amount=policy.max_command_notional,
                     quantity=0.0)
    assert check_command(top_up, LIMITS) is None


@pytest.mark.parametrize(("changes", "limit"), [
    ({"quantity": 4_000.0, "slippage_bps": 400.0}, "max_notional_usd"),  # 12M USD
    ({"quantity": 2e8, "price": 0.01}, "max_quantity"),
    ({"quantity": math.nan}, "quantity"),
    ({"quantity": math.inf}, "quantity"),
    ({"quantity": 0.0}, "quantity"),
    ({"slippage_bps": 501.0}, "max_slippage_bps"),
    ({"slippage_bps": math.nan}, "max_slippage_bps"),
    ({"slippage_bps": -1.0}, "max_slippage_bps"),
    ({"deadline": 1_000 + 600_001}, "max_deadline_horizon_ms"),
    ({"price": math.nan}, "reference_price"),
    ({"price": 0.0}, "reference_price"),
])
def test_each_trade_refusal_names_its_limit(changes: dict[str, float], limit: str) -> None:
    reason = check_command(command(**changes), LIMITS)  # type: ignore[arg-type]
    assert reason is not None and reason.startswith(f"limit {limit}")


@pytest.mark.parametrize(("amount", "limit"), [
    (0.0, "top_up_amount"), (-5.0, "top_up_amount"), (math.nan, "top_up_amount"),
    (math.inf, "top_up_amount"), (2e7, "max_notional_usd"),
])
def test_each_top_up_refusal_names_its_limit(amount: float, limit: str) -> None:
    top_up = command(action=CommandAction.TOP_UP, amount=amount, quantity=0.0)
    reason = check_command(top_up, LIMITS)
    assert reason is not None and reason.startswith(f"limit {limit}")


def test_option_notional_is_valued_at_the_option_mark() -> None:
    option = dataclasses.replace(command(quantity=50_000.0, side=Side.SELL),
                                 trigger={"reference_price": 120.0})  # 6M USD, not 150M
    assert check_command(option, LIMITS) is None


def test_the_rate_counts_executed_commands_in_a_rolling_event_time_window() -> None:
    limits = ExecutorLimits(max_commands_per_account=2, rate_window_ms=10_000)
    times = admit_rate((), 1_000, limits)
    assert times == (1_000,)
    times = admit_rate(times, 5_000, limits)
    assert times == (1_000, 5_000)
    assert admit_rate(times, 9_000, limits) is None  # a third within 10 s
    assert admit_rate(times, 11_000, limits) == (5_000, 11_000)  # 1 000 fell out
    assert "max_commands_per_account (2)" in rate_refusal(limits)


def test_a_refusal_is_a_rejected_report_at_the_settlement_instant() -> None:
    venue = SimulatedVenue("arbitrum", VenueParams("sim", 4.0, 4.0, 10.0, settlement_ms=250))
    report = venue.refuse(command(created_at=9_000), "limit max_quantity (1e+08): quantity")
    assert report.status is ExecutionStatus.REJECTED and report.executed_at == 9_250
    assert report.reason.startswith("limit max_quantity") and report.filled_quantity == 0.0


def test_the_bundled_file_configures_the_defaults() -> None:
    for chain in ("ethereum", "arbitrum", "solana", "base"):
        assert load_executor_limits(INFRA_DIR / "chains.toml", chain) == LIMITS
    load_chain_profiles(INFRA_DIR / "chains.toml")  # the profiles loader accepts [limits]


def test_limits_are_set_for_all_chains_and_overridden_per_chain(tmp_path: Path) -> None:
    path = tmp_path / "chains.toml"
    path.write_text(GOOD_DEFAULT + "[limits]\nmax_slippage_bps = 100.0\n"
                    "[limits.solana]\nmax_commands_per_account = 5\n")
    assert load_executor_limits(path, "arbitrum") == ExecutorLimits(max_slippage_bps=100.0)
    assert load_executor_limits(path, "solana") == ExecutorLimits(
        max_slippage_bps=100.0, max_commands_per_account=5)
    assert load_executor_limits(tmp_path / "chains.toml", "x").max_quantity == 1e8


def test_a_file_without_limits_gets_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "chains.toml"
    path.write_text(GOOD_DEFAULT)
    assert load_executor_limits(path, "arbitrum") == LIMITS


@pytest.mark.parametrize(("text", "message"), [
    ("[limits]\nmax_colour = 1\n", "unknown limit"),
    ("[limits]\nmax_slippage_bps = -1.0\n", "max_slippage_bps must be a finite number"),
    ("[limits]\nmax_notional_usd = nan\n", "max_notional_usd must be a finite number"),
    ("[limits]\nrate_window_ms = 1.5\n", "rate_window_ms must be an integer"),
    ("[limits.arbitrum]\nmax_commands_per_account = 0\n", "limits.arbitrum"),
    ("limits = 3\n", "must be a table"),
])
def test_bad_limits_are_refused_with_the_reason(tmp_path: Path, text: str,
                                                message: str) -> None:
    path = tmp_path / "chains.toml"
    path.write_text(text + GOOD_DEFAULT)
    with pytest.raises(ConfigError, match=message):
        load_executor_limits(path, "arbitrum")
