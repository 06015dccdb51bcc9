"""Small builders of domain records for tests."""

from __future__ import annotations

from streams.domain import (
    CommandAction,
    CommandReason,
    DeltaBandRule,
    Instrument,
    InstrumentKind,
    LadderAction,
    MarginLadder,
    MarginStep,
    Position,
    PriceStatus,
    Provenance,
    ScalingCommand,
    ScalingRules,
    Side,
)


def perp(asset: str = "ETH", chain: str = "arbitrum") -> Instrument:
    """A perpetual on `asset`."""
    return Instrument(f"{asset}-PERP", InstrumentKind.PERP, asset, chain)


def perp_position(asset: str = "ETH", quantity: float = 1.0, price: float = 3000.0) -> Position:
    """A perp position of `quantity` units."""
    return Position(f"pos-{asset}", perp(asset), quantity, price)


def rules() -> ScalingRules:
    """Rules with a delta band and a two-step margin ladder."""
    return ScalingRules(
        delta_band=DeltaBandRule(band=2.0, hard_limit=6.0),
        margin_ladder=MarginLadder(
            steps=[MarginStep(1.6, LadderAction.TOP_UP, 0.5),
                   MarginStep(1.25, LadderAction.REDUCE, 0.3)],
            target_ratio=2.0,
        ),
    )


def command(command_id: str = "cmd-1", chain: str = "arbitrum", quantity: float = 2.0,
            price: float = 3000.0, created_at: int = 1_000, deadline: int = 61_000,
            side: Side = Side.SELL, slippage_bps: float = 30.0,
            action: CommandAction = CommandAction.TRADE, amount: float = 0.0) -> ScalingCommand:
    """An unsigned delta-rebalance command."""
    return ScalingCommand(
        command_id=command_id, account_id="acct-1", chain=chain,
        reason=CommandReason.DELTA_REBALANCE, rule="delta_band:ETH",
        trigger={"delta": 5.0, "band": 2.0}, action=action,
        instrument=perp("ETH", chain) if action is CommandAction.TRADE else None,
        side=side if action is CommandAction.TRADE else None, quantity=quantity, amount=amount,
        limit_price=price * (1 - slippage_bps / 1e4), slippage_bps=slippage_bps,
        reduce_only=False, created_at=created_at, deadline=deadline,
        provenance=Provenance("ETH", price, 1.5, created_at, PriceStatus.OK,
                              ["ethereum/chainlink/ETH-USD"], 4, "abc123", "cfg456"),
    )
