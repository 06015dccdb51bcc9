"""Builders and a log feeder for the risk engine tests (pure code, no broker)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from streams.domain import (
    AccountEvent,
    CollateralChanged,
    CommandAction,
    CommandLimits,
    ConsensusPrice,
    DeltaBandRule,
    ExecutionReport,
    ExecutionStatus,
    Instrument,
    InstrumentKind,
    LadderAction,
    MarginLadder,
    MarginStep,
    OptionType,
    Position,
    PositionChanged,
    PriceStatus,
    PricingModel,
    RiskInput,
    RulesChanged,
    ScalingCommand,
    ScalingRules,
    Side,
    VolScalingRule,
)
from streams.risk.engine import EngineConfig, PartitionEngine

DAY_MS = 86_400_000


def perp(asset: str = "BTC", chain: str = "arbitrum") -> Instrument:
    """The perpetual on `asset`."""
    return Instrument(f"{asset}-PERP", InstrumentKind.PERP, asset, chain)


def option(strike: float, kind: OptionType = OptionType.PUT, asset: str = "BTC",
           days: int = 30, chain: str = "arbitrum",
           model: PricingModel = PricingModel.BSM) -> Instrument:
    """A European option expiring `days` after epoch 0."""
    return Instrument(f"{asset}-{days}D-{strike:g}-{kind.value[0]}", InstrumentKind.OPTION,
                      asset, chain, kind, strike, days * DAY_MS, model)


def ladder(*steps: tuple[float, LadderAction, float], target: float = 2.0,
           k: float = 2.0) -> MarginLadder:
    """A margin ladder from (ratio, action, fraction) triples."""
    return MarginLadder([MarginStep(r, a, f) for r, a, f in steps], target, k)


STANDARD_LADDER = ladder((1.8, LadderAction.TOP_UP, 0.5), (1.5, LadderAction.REDUCE, 0.5),
                         (1.2, LadderAction.REDUCE, 1.0), target=2.5)


def rules(*, delta: DeltaBandRule | None = None, vol: VolScalingRule | None = None,
          margin: MarginLadder | None = STANDARD_LADDER, cooldown_ms: int = 60_000,
          max_commands: int = 100, min_trade: float = 10.0,
          max_notional: float = 1e9, deadline_ms: int = 60_000) -> ScalingRules:
    """Rules with permissive limits unless told otherwise."""
    return ScalingRules(delta_band=delta, vol_scaling=vol, margin_ladder=margin,
                        limits=CommandLimits(cooldown_ms=cooldown_ms, max_commands=max_commands,
                                             rate_window_ms=600_000,
                                             min_trade_notional=min_trade,
                                             max_command_notional=max_notional,
                                             slippage_bps=30.0, deadline_ms=deadline_ms))


class Feeder:
    """Feeds an engine one log entry at a time, with per-topic offsets and sequences."""

    def __init__(self, engine: PartitionEngine | None = None) -> None:
        self.engine = engine or PartitionEngine(EngineConfig())
        self.offsets: dict[str, int] = {}
        self.sequences: dict[str, int] = {}
        self.log: list[RiskInput] = []

    def entry(self, topic: str, body: object) -> RiskInput:
        """The next log entry of `topic`."""
        offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
        return RiskInput(topic, 0, offset, body)  # type: ignore[arg-type]

    def apply(self, item: RiskInput) -> list[ScalingCommand]:
        """Apply and remember `item`."""
        self.log.append(item)
        return self.engine.apply(item)

    def event(self, account: str, body: object, time_ms: int = 0) -> None:
        """An account event."""
        n = self.offsets.get("account.events", -1) + 1
        self.apply(self.entry("account.events",
                              AccountEvent(f"ev-{n}", account, time_ms, body)))  # type: ignore[arg-type]

    def account(self, account: str, positions: Iterable[Position], collateral: float,
                reserve: float = 0.0, account_rules: ScalingRules | None = None,
                chain: str = "arbitrum") -> None:
        """Create an account: collateral, positions, rules."""
        self.event(account, CollateralChanged(chain, collateral, reserve))
        for position in positions:
            self.event(account, PositionChanged(position))
        if account_rules is not None:
            self.event(account, RulesChanged(account_rules))

    def price(self, asset: str, price: float, time_ms: int, confidence: float = 0.0,
              status: PriceStatus = PriceStatus.OK,
              unhealthy: Iterable[str] = ()) -> list[ScalingCommand]:
        """A consensus price with the next sequence of `asset`."""
        seq = self.sequences[asset] = self.sequences.get(asset, 0) + 1
        body = ConsensusPrice(asset, time_ms, price, confidence, status, 0.0, ["test/feed"], [],
                              list(unhealthy), seq)
        return self.apply(self.entry("oracle.prices", body))

    def report(self, command: ScalingCommand, status: ExecutionStatus = ExecutionStatus.FILLED,
               price: float | None = None, time_ms: int | None = None) -> None:
        """The executor's report of `command`, filled at `price` (default: its limit)."""
        filled = 0.0
        fill_price = 0.0
        amount = 0.0
        if status is ExecutionStatus.FILLED:
            if command.action is CommandAction.TOP_UP:
                amount = command.amount
            else:
                sign = 1.0 if command.side is Side.BUY else -1.0
                filled = sign * command.quantity
                fill_price = command.limit_price if price is None else price
        body = ExecutionReport(
            f"rep-{command.command_id}", command.command_id, command.account_id, command.chain,
            status, "", command.action, command.instrument, filled, fill_price, 0.0, amount,
            command.created_at if time_ms is None else time_ms, "test")
        self.apply(self.entry("execution.reports", body))


def crash_path(start: float, steps: int, seed: int = 3, vol: float = 0.8,
               jump_at: int | None = None, jump: float = -0.30, step_ms: int = 1_000,
               jump_steps: int = 1) -> list[tuple[int, float]]:
    """A seeded GBM path with a jump of `jump` spread over `jump_steps` steps."""
    rng = np.random.default_rng(seed)
    dt = step_ms / (365.0 * DAY_MS)
    log_price = math.log(start)
    out = []
    for i in range(steps):
        if i:
            log_price += vol * math.sqrt(dt) * float(rng.standard_normal()) - 0.5 * vol**2 * dt
        if jump_at is not None and jump_at <= i < jump_at + jump_steps:
            log_price += math.log(1.0 + jump) / jump_steps
        out.append((i * step_ms, math.exp(log_price)))
    return out
