"""Account events (inputs from outside APS) and the per-account risk state."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.domain.enums import CommandReason
from streams.domain.instruments import Collateral, Position
from streams.domain.rules import ScalingRules


@dataclass(frozen=True, slots=True)
class PositionChanged:
    """Sets a position to the given record; quantity 0 closes it."""

    position: Position


@dataclass(frozen=True, slots=True)
class CollateralChanged:
    """Deposit (positive) or withdrawal (negative) of collateral and reserve on one chain."""

    chain: str
    balance_delta: float
    reserve_delta: float


@dataclass(frozen=True, slots=True)
class RulesChanged:
    """Replaces the account's scaling rules."""

    rules: ScalingRules


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """A change to an account made outside APS (topic account.events)."""

    event_id: str
    account_id: str
    event_time: int
    body: PositionChanged | CollateralChanged | RulesChanged


@dataclass(frozen=True, slots=True)
class PendingCommand:
    """A command sent and not yet reported back; counted as if it will fill."""

    command_id: str
    reason: CommandReason
    instrument_id: str | None
    quantity: float
    amount: float
    created_at: int
    deadline: int
    rule: str = ""
    position_id: str | None = None
    chain: str = ""


@dataclass(frozen=True, slots=True)
class Exposure:
    """Aggregated Greeks of an account on one underlying."""

    underlying: str
    spot: float
    delta: float
    gamma: float
    vega: float
    theta: float


@dataclass(frozen=True, slots=True)
class Valuation:
    """Mark-to-market of an account at one event time."""

    event_time: int
    equity: float
    initial_margin: float
    maintenance_margin: float
    margin_ratio: float
    stress_loss: float
    exposures: list[Exposure]


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything APS knows about one account (the risk table's value)."""

    account_id: str
    version: int = 0
    last_event_time: int = 0
    positions: list[Position] = field(default_factory=list)
    collateral: list[Collateral] = field(default_factory=list)
    rules: ScalingRules | None = None
    rules_hash: str = ""
    pending: list[PendingCommand] = field(default_factory=list)
    last_fired: dict[str, int] = field(default_factory=dict)
    recent_commands: list[int] = field(default_factory=list)
    valuation: Valuation | None = None
    min_margin_ratio: float = 1e308
    breached_maintenance: bool = False
    origin_offsets: dict[str, int] = field(default_factory=dict)
    base_quantities: dict[str, float] = field(default_factory=dict)
