"""Per-account scaling rules (Avro record aps.ScalingRules)."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.domain.enums import LadderAction


@dataclass(frozen=True, slots=True)
class DeltaBandRule:
    """Keep net delta per underlying within target +/- band; trade back to target."""

    band: float
    hard_limit: float
    target: float = 0.0
    hysteresis: float = 0.2
    hedge_chain: str | None = None


@dataclass(frozen=True, slots=True)
class VolScalingRule:
    """Scale option exposure toward a volatility target and bound gamma."""

    vol_target: float
    max_gamma: float
    window: int = 30
    min_scale: float = 0.1


@dataclass(frozen=True, slots=True)
class MarginStep:
    """One rung of the margin ladder."""

    margin_ratio: float
    action: LadderAction
    fraction: float


@dataclass(frozen=True, slots=True)
class MarginLadder:
    """Top up from the reserve first, then reduce, as the margin ratio falls."""

    steps: list[MarginStep]
    target_ratio: float
    confidence_k: float = 2.0


@dataclass(frozen=True, slots=True)
class CommandLimits:
    """Cooldowns, rate limits and size bounds, all in event time."""

    cooldown_ms: int = 60_000
    max_commands: int = 10
    rate_window_ms: int = 600_000
    min_trade_notional: float = 100.0
    max_command_notional: float = 1_000_000.0
    slippage_bps: float = 30.0
    deadline_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class ScalingRules:
    """All rules of one account; replaced as a whole by a RulesChanged event."""

    delta_band: DeltaBandRule | None = None
    vol_scaling: VolScalingRule | None = None
    margin_ladder: MarginLadder | None = None
    limits: CommandLimits = field(default_factory=CommandLimits)
