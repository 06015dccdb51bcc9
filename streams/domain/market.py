"""What a risk partition knows about the market (Avro record aps.MarketState)."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.domain.enums import PriceStatus
from streams.domain.envelopes import RiskInput


@dataclass(frozen=True, slots=True)
class AssetMarket:
    """Last applied consensus quote of one asset and the returns used for realized volatility."""

    asset: str
    price: float
    confidence: float
    status: PriceStatus
    event_time: int
    sequence: int
    sources: list[str] = field(default_factory=list)
    unhealthy_chains: list[str] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    return_intervals_ms: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MarketState:
    """Every asset's last quote, sorted by asset, the partition's event-time watermark, and
    the execution reports received before their settlement time (applied once the watermark
    reaches it), in the order they will be applied."""

    watermark: int = 0
    assets: list[AssetMarket] = field(default_factory=list)
    held_reports: list[RiskInput] = field(default_factory=list)
