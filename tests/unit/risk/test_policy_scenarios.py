"""Scaling policy on price paths: crash, oscillation, volatility spike, cooldown, priorities,
degraded mode and the commands' contents."""

from __future__ import annotations

import math

import pytest

from streams.domain import (
    CommandAction,
    CommandReason,
    DeltaBandRule,
    ExecutionStatus,
    LadderAction,
    OptionType,
    Position,
    PriceStatus,
    ScalingCommand,
    Side,
    VolScalingRule,
)
from streams.risk.bookgen import BookAccount
from streams.risk.engine import EngineConfig, PartitionEngine
from streams.risk.policy import REFUSAL_CODES, command_id, rule_kind
from streams.risk.simulate import PriceTick, SimulationConfig, simulate
from tests.unit.risk.engine_helpers import Feeder, crash_path, ladder, option, perp, rules

CUSHION_LADDER = ladder((8.0, LadderAction.TOP_UP, 0.5), (6.0, LadderAction.REDUCE, 0.5),
                        (4.0, LadderAction.REDUCE, 1.0), target=10.0)


def delta_of(feed: Feeder, account: str) -> float:
    state = feed.engine.state(account)
    assert state is not None and state.valuation is not None
    return state.valuation.exposures[0].delta


# --- crash -----------------------------------------------------------------------------------

def crash_book() -> list[BookAccount]:
    from streams.domain import Collateral
    levered = rules(margin=CUSHION_LADDER, cooldown_ms=5_000)
    straddle = rules(margin=ladder((2.0, LadderAction.TOP_UP, 0.5),
                                   (1.6, LadderAction.REDUCE, 0.5),
                                   (1.3, LadderAction.REDUCE, 1.0), target=2.5),
                     cooldown_ms=5_000)
    return [
        BookAccount("long-5x", [Collateral("arbitrum", 12_000.0, 3_000.0)],
                    [Position("p", perp(), 1.0, 60_000.0)], levered),
        BookAccount("long-4x-no-reserve", [Collateral("arbitrum", 30_000.0, 0.0)],
                    [Position("p", perp(), 2.0, 60_000.0)], levered),
        BookAccount("short-puts", [Collateral("arbitrum", 25_000.0, 8_000.0)],
                    [Position("o", option(57_000.0, days=14), -3.0, 1_300.0, 0.6),
                     Position("h", perp(), -0.9, 60_000.0)], straddle),
    ]


def test_crash_the_policy_protects_accounts_that_die_without_it() -> None:
    path = crash_path(60_000.0, 900, seed=11, jump_at=300, jump=-0.30, jump_steps=120)
    ticks = [PriceTick(t, "BTC", p) for t, p in path]
    report = simulate(ticks, crash_book(), SimulationConfig())
    assert report.policy is not None
    assert report.baseline.liquidated == ["long-4x-no-reserve", "long-5x", "short-puts"]
    assert report.policy.liquidated == []
    assert report.policy.by_reason.get("MARGIN_REDUCE", 0) > 0
    assert report.policy.by_reason.get("MARGIN_TOP_UP", 0) > 0
    assert 0 < report.policy.hedge_cost_pct < 1.0
    assert report.result_line() == (
        f"RESULT accounts=3 liquidated=0 liquidated_without_policy=3"
        f" commands={report.policy.commands} hedge_cost_pct={report.policy.hedge_cost_pct:.4f}")


def test_crash_protection_starts_before_maintenance_is_reached() -> None:
    feed = Feeder()
    feed.account("a", [Position("p", perp(), 1.0, 60_000.0)], 12_000.0, 3_000.0,
                 rules(margin=CUSHION_LADDER, cooldown_ms=5_000))
    ratios_at_first_command = []
    pending: list[ScalingCommand] = []
    for t, p in crash_path(60_000.0, 600, seed=4, jump_at=200, jump=-0.3, jump_steps=100):
        for command in pending:
            feed.report(command, price=p, time_ms=t)
        figures_before = feed.engine.figures("a")
        pending = feed.price("BTC", p, t)
        if pending and not ratios_at_first_command:
            ratios_at_first_command.append(feed.engine.figures("a").margin_ratio)  # type: ignore[union-attr]
        assert figures_before is None or figures_before.margin_ratio > 1.0
    state = feed.engine.state("a")
    assert state is not None and not state.breached_maintenance
    assert ratios_at_first_command and ratios_at_first_command[0] > 4.0
    assert state.min_margin_ratio > 1.0


# --- oscillation inside the band -----------------------------------------------------------

def hedged_straddle(feed: Feeder, **rule_args: object) -> None:
    positions = [Position("c", option(60_000.0, OptionType.CALL), -1.0, 2_800.0, 0.6),
                 Position("p", option(60_000.0, OptionType.PUT), -1.0, 2_800.0, 0.6)]
    args: dict[str, object] = {"delta": DeltaBandRule(band=0.1, hard_limit=0.35),
                               "margin": None}
    args.update(rule_args)
    feed.account("mm", positions, 50_000.0, 0.0, rules(**args))  # type: ignore[arg-type]


def test_price_oscillating_inside_the_band_sends_nothing() -> None:
    feed = Feeder()
    hedged_straddle(feed)
    for i in range(600):
        price = 60_000.0 * (1.0 + 0.004 * math.sin(i / 7.0))
        assert feed.price("BTC", price, i * 1_000) == []
        assert abs(delta_of(feed, "mm")) < 0.1 * 1.2


def test_leaving_the_band_trades_back_to_the_target_with_the_perp() -> None:
    feed = Feeder()
    hedged_straddle(feed)
    feed.price("BTC", 60_000.0, 0)
    commands = feed.price("BTC", 63_000.0, 1_000)
    assert len(commands) == 1
    command = commands[0]
    assert command.reason is CommandReason.DELTA_REBALANCE and command.rule == "delta_band:BTC"
    assert command.instrument == perp("BTC", "arbitrum")
    delta = delta_of(feed, "mm")
    assert command.side is Side.BUY and command.quantity == pytest.approx(-delta)
    assert command.trigger["delta"] == pytest.approx(delta)
    feed.report(command, price=63_000.0, time_ms=1_500)
    feed.price("BTC", 63_000.0, 2_000)
    assert abs(delta_of(feed, "mm")) < 1e-6  # one second of decay later


# --- volatility spike ------------------------------------------------------------------------

def test_a_volatility_spike_scales_option_exposure_down() -> None:
    feed = Feeder()
    vol_rule = VolScalingRule(vol_target=0.9, max_gamma=1.0, window=20, min_scale=0.2)
    hedged_straddle(feed, delta=None, vol=vol_rule)
    t = 0
    for i in range(40):  # calm: 0.04% a minute, about 0.29 annualized
        assert feed.price("BTC", 60_000.0 * (1 + 0.0002 * (-1) ** i), t) == []
        t += 60_000
    commands: list[ScalingCommand] = []
    for i in range(20):  # spike: 0.6% swings every minute, about 4.3 annualized
        commands += feed.price("BTC", 60_000.0 * (1 + 0.003 * (-1) ** i), t)
        t += 60_000
    scale = [c for c in commands if c.reason is CommandReason.VOL_SCALE]
    assert scale, "the spike must scale the options down"
    first = scale[:2]
    assert {c.instrument.instrument_id for c in first} == {  # type: ignore[union-attr]
        "BTC-30D-60000-C", "BTC-30D-60000-P"}
    assert all(c.side is Side.BUY and c.reduce_only for c in first)  # buy back the shorts
    realized = first[0].trigger["realized_vol"]
    target_scale = first[0].trigger["target_scale"]
    assert realized > 0.9 and target_scale == pytest.approx(max(0.2, 0.9 / realized))
    assert first[0].quantity == pytest.approx(1.0 - target_scale)


# --- cooldown, severity, limits ---------------------------------------------------------------

def test_cooldown_is_respected_and_severe_drift_bypasses_it() -> None:
    feed = Feeder()
    hedged_straddle(feed, cooldown_ms=60_000)
    feed.price("BTC", 60_000.0, 0)
    first = feed.price("BTC", 63_000.0, 1_000)
    assert len(first) == 1
    feed.report(first[0], price=63_000.0, time_ms=1_100)
    # drifts out of the band again within the cooldown: refused
    assert feed.price("BTC", 66_000.0, 20_000) == []
    refusals = feed.engine.take_refusals()
    assert [r.code for r in refusals] == ["cooldown"] and refusals[0].rule == "delta_band:BTC"
    # beyond the hard limit: protection does not wait
    severe = feed.price("BTC", 70_000.0, 30_000)
    assert len(severe) == 1 and abs(severe[0].trigger["delta"]) > 0.35
    feed.report(severe[0], price=70_000.0, time_ms=30_100)
    # after the cooldown an ordinary drift fires again
    assert feed.price("BTC", 74_000.0, 95_000) != []


def test_the_same_breach_does_not_fire_twice_while_a_command_is_in_flight() -> None:
    feed = Feeder()
    hedged_straddle(feed, cooldown_ms=0)
    feed.price("BTC", 60_000.0, 0)
    first = feed.price("BTC", 63_000.0, 1_000)
    assert len(first) == 1
    assert feed.price("BTC", 63_050.0, 2_000) == []  # the hedge is pending
    feed.report(first[0], status=ExecutionStatus.REJECTED, time_ms=2_500)
    retry = feed.price("BTC", 63_050.0, 3_000)  # nothing was done: try again
    assert len(retry) == 1 and retry[0].command_id != first[0].command_id


def test_rate_limit_min_size_and_max_notional() -> None:
    feed = Feeder()
    hedged_straddle(feed, cooldown_ms=0, max_commands=1, min_trade=500.0, max_notional=10_000.0)
    feed.price("BTC", 60_000.0, 0)
    assert feed.price("BTC", 60_400.0, 1_000) == []  # inside the band
    first = feed.price("BTC", 63_000.0, 2_000)
    # a delta trade is clipped to the maximum notional (protective ones are split instead)
    assert len(first) == 1 and first[0].quantity * 63_000.0 == pytest.approx(10_000.0)
    feed.report(first[0], price=63_000.0, time_ms=2_100)
    assert feed.price("BTC", 63_000.0, 3_000) == []  # one command per window
    assert "rate_limited" in [r.code for r in feed.engine.take_refusals()]


def test_refusals_carry_the_numbers_that_decided_them() -> None:
    feed = Feeder()
    hedged_straddle(feed, cooldown_ms=0, max_commands=1, max_notional=10_000.0)
    feed.price("BTC", 60_000.0, 0)
    first = feed.price("BTC", 63_000.0, 2_000)
    clipped = feed.engine.take_refusals()
    assert [r.code for r in clipped] == ["max_notional"]
    values = clipped[0].values
    assert values["max_command_notional"] == 10_000.0 and values["commands"] == 1.0
    assert values["notional"] > 10_000.0
    assert first[0].quantity * 63_000.0 == pytest.approx(10_000.0)
    feed.report(first[0], price=63_000.0, time_ms=2_100)
    feed.price("BTC", 63_000.0, 3_000)
    limited = [r for r in feed.engine.take_refusals() if r.code == "rate_limited"]
    assert limited and limited[0].values == {"max_commands": 1.0, "rate_window_ms": 600_000.0,
                                             "recent_commands": 1.0}
    assert {r.code for r in clipped + limited} <= set(REFUSAL_CODES)


@pytest.mark.parametrize(("rule", "kind"), [
    ("margin_ladder[2]", "margin_ladder"), ("delta_band:ETH", "delta_band"),
    ("vol_scaling:BTC", "vol_scaling"), ("gamma_bound:SOL", "gamma_bound"),
    ("margin_ladder[0]+delta_band:BTC", "margin_ladder"),
    ("delta_band:BTC+vol_scaling:BTC", "delta_band"), ("something_else", "other"), ("", "other"),
])
def test_the_rule_family_of_a_label(rule: str, kind: str) -> None:
    assert rule_kind(rule) == kind


def test_protective_reductions_are_split_at_the_maximum_notional() -> None:
    feed = Feeder()
    feed.account("a", [Position("p", perp(), 10.0, 60_000.0)], 60_000.0, 0.0,
                 rules(margin=CUSHION_LADDER, max_notional=100_000.0))
    feed.price("BTC", 60_000.0, 0)
    commands = feed.price("BTC", 56_000.0, 1_000)
    assert len(commands) > 1
    assert all(c.reason is CommandReason.MARGIN_REDUCE and c.side is Side.SELL for c in commands)
    assert all(c.quantity * 56_000.0 <= 100_000.0 + 1e-6 for c in commands)
    assert len({c.command_id for c in commands}) == len(commands)


# --- priorities ------------------------------------------------------------------------------

def test_margin_wins_over_delta_on_the_same_position() -> None:
    feed = Feeder()
    # the delta band wants the account longer (target 5) while the ladder cuts the perp
    feed.account("a", [Position("h", perp(), 3.0, 60_000.0)], 12_000.0, 0.0,
                 rules(delta=DeltaBandRule(band=0.5, hard_limit=100.0, target=5.0),
                       margin=ladder((3.0, LadderAction.REDUCE, 0.5), target=4.0)))
    commands = feed.price("BTC", 57_500.0, 0)
    assert len(commands) == 1, "one command per position"
    command = commands[0]
    assert command.reason is CommandReason.MARGIN_REDUCE and command.rule == "margin_ladder[0]"
    assert command.side is Side.SELL and command.reduce_only
    # cut c to the target ratio, net of the expected slippage (30 bps) of the cut itself:
    # (4,500 - 0.003 * 57,500 c) / (0.01 * 57,500 (3 - c)) = 4
    assert command.quantity == pytest.approx(2_400.0 / 2_127.5, rel=1e-4)
    refusals = feed.engine.take_refusals()
    assert [(r.rule, r.code) for r in refusals] == [("delta_band:BTC", "overridden")]


def test_rules_acting_the_same_way_on_one_position_merge_into_one_command() -> None:
    feed = Feeder()
    feed.account("a", [Position("h", perp(), 3.0, 60_000.0)], 12_000.0, 0.0,
                 rules(delta=DeltaBandRule(band=0.5, hard_limit=100.0),
                       margin=ladder((3.0, LadderAction.REDUCE, 0.5), target=4.0)))
    commands = feed.price("BTC", 57_500.0, 0)
    assert len(commands) == 1
    command = commands[0]
    assert command.reason is CommandReason.MARGIN_REDUCE
    assert command.rule == "margin_ladder[0]+delta_band:BTC"
    assert command.side is Side.SELL and command.quantity == pytest.approx(3.0)
    assert "delta_band:BTC.delta" in command.trigger


# --- degraded mode and oracle uncertainty --------------------------------------------------------

def test_degraded_price_allows_only_reductions() -> None:
    feed = Feeder()
    hedged_straddle(feed)
    feed.price("BTC", 60_000.0, 0)
    # the band is broken, but opening a hedge would add a position on a DEGRADED price
    assert feed.price("BTC", 63_000.0, 1_000, status=PriceStatus.DEGRADED) == []
    assert [r.code for r in feed.engine.take_refusals()] == ["degraded"]
    # a margin cut is reduce-only: allowed on DEGRADED, not on HALTED (top-ups are)
    levered = Feeder()
    levered.account("a", [Position("p", perp(), 1.0, 60_000.0)], 12_000.0, 1_000.0,
                    rules(margin=CUSHION_LADDER))
    levered.price("BTC", 60_000.0, 0)
    halted = levered.price("BTC", 60_000.0, 1_000, confidence=8_000.0,
                           status=PriceStatus.HALTED)
    assert halted and {c.action for c in halted} == {CommandAction.TOP_UP}
    assert "halted" in [r.code for r in levered.engine.take_refusals()]
    cut = levered.price("BTC", 50_500.0, 2_000, status=PriceStatus.DEGRADED)
    assert any(c.reason is CommandReason.MARGIN_REDUCE and c.reduce_only for c in cut)


def test_unhealthy_chain_allows_only_reduce_only_trades_there() -> None:
    feed = Feeder()
    hedged_straddle(feed)
    feed.price("BTC", 60_000.0, 0)
    assert feed.price("BTC", 63_000.0, 1_000, unhealthy=["arbitrum"]) == []
    assert [r.code for r in feed.engine.take_refusals()] == ["unhealthy_chain"]


def test_a_wide_confidence_band_makes_margin_more_careful() -> None:
    ratios = []
    for confidence in (0.0, 500.0):
        feed = Feeder()
        feed.account("a", [Position("p", perp(), 1.0, 60_000.0)], 12_000.0, 1_000.0,
                     rules(margin=CUSHION_LADDER))
        commands = feed.price("BTC", 53_000.0, 0, confidence=confidence)
        ratios.append((feed.engine.figures("a").margin_ratio, bool(commands)))  # type: ignore[union-attr]
    (narrow, narrow_fired), (wide, wide_fired) = ratios
    assert wide < narrow
    assert wide_fired and not narrow_fired


# --- the commands themselves ----------------------------------------------------------------

def test_commands_carry_a_reproducible_id_and_their_provenance() -> None:
    feed = Feeder()
    hedged_straddle(feed)
    feed.price("BTC", 60_000.0, 0, confidence=12.0)
    state_before = feed.engine.state("mm")
    assert state_before is not None
    (command,) = feed.price("BTC", 63_000.0, 1_000, confidence=15.0)
    assert command.command_id == command_id("mm", "delta_band:BTC",
                                            CommandReason.DELTA_REBALANCE, "BTC#2",
                                            state_before.version, "hedge:BTC-PERP@arbitrum")
    p = command.provenance
    assert (p.asset, p.price, p.confidence, p.price_event_time, p.price_status) == (
        "BTC", 63_000.0, 15.0, 1_000, PriceStatus.OK)
    assert p.sources == ["test/feed"] and p.state_version == state_before.version
    assert p.rules_hash == state_before.rules_hash != ""
    assert command.created_at == 1_000 and command.deadline == 61_000
    assert command.chain == "arbitrum" and command.signature == ""
    assert command.limit_price == pytest.approx(63_000.0 * (1 + 30 / 1e4))
    assert not command.reduce_only  # it opens the hedge perp
    state_after = feed.engine.state("mm")
    assert state_after is not None and state_after.version == state_before.version + 1
    assert state_after.pending[0].command_id == command.command_id


def test_engine_config_is_frozen_and_rejects_unknown_settings() -> None:
    config = EngineConfig()
    with pytest.raises(AttributeError):
        config.rate = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        EngineConfig(unknown=1)  # type: ignore[call-arg]
    assert PartitionEngine(config).config is config


def test_exposure_is_restored_once_volatility_is_back_under_target() -> None:
    feed = Feeder()
    vol_rule = VolScalingRule(vol_target=0.9, max_gamma=1.0, window=20, min_scale=0.2)
    hedged_straddle(feed, delta=None, vol=vol_rule, cooldown_ms=0)
    t = 0
    for i in range(20):  # spike
        for command in feed.price("BTC", 60_000.0 * (1 + 0.003 * (-1) ** i), t):
            feed.report(command, price=command.trigger["reference_price"], time_ms=t)
        t += 60_000
    state = feed.engine.state("mm")
    assert state is not None
    scaled = {p.position_id: p.quantity for p in state.positions}
    assert set(scaled) == {"c", "p"} and scaled["c"] == pytest.approx(scaled["p"])
    assert -0.25 < scaled["c"] < -0.199  # about min_scale: the spike is ~4.3 annualized
    assert state.base_quantities == {"c": -1.0, "p": -1.0}
    restored: list[ScalingCommand] = []
    degraded_seen = False
    for i in range(40):  # calm again; the first calm updates are DEGRADED
        status = PriceStatus.DEGRADED if i < 25 else PriceStatus.OK
        out = feed.price("BTC", 60_000.0 * (1 + 0.0002 * (-1) ** i), t, status=status)
        if status is PriceStatus.DEGRADED:
            assert out == []
            degraded_seen = degraded_seen or "degraded" in [
                r.code for r in feed.engine.take_refusals()]
        for command in out:
            feed.report(command, price=command.trigger["reference_price"], time_ms=t)
        restored += out
        t += 60_000
    assert degraded_seen, "scaling back up is an increase of risk: not on a DEGRADED price"
    assert restored and {c.reason for c in restored} == {CommandReason.VOL_SCALE}
    assert all(c.side is Side.SELL and not c.reduce_only for c in restored)
    assert sum(c.quantity for c in restored) == pytest.approx(2 * (1.0 + scaled["c"]))
