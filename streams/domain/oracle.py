"""Oracle observations as published (Chainlink rounds, Pyth updates) and consensus prices."""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.domain.enums import OracleSource, PriceStatus


@dataclass(frozen=True, slots=True)
class ChainlinkRound:
    """A Chainlink aggregator round; integers kept exact as decimal strings."""

    round_id: str
    answer: str
    started_at: int
    updated_at: int
    answered_in_round: str


@dataclass(frozen=True, slots=True)
class PythPriceUpdate:
    """A Pyth price update: integer price and confidence with a (negative) exponent."""

    price: int
    conf: int
    expo: int
    publish_time: int
    ema_price: int
    ema_conf: int


@dataclass(frozen=True, slots=True)
class OracleObservation:
    """One raw observation of one feed on one chain, with its event time."""

    chain: str
    source: OracleSource
    feed_id: str
    received_at: int
    body: ChainlinkRound | PythPriceUpdate


@dataclass(frozen=True, slots=True)
class ExcludedSource:
    """A source left out of a consensus price, and why."""

    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class ConsensusPrice:
    """The trusted price of one asset at one event time."""

    asset: str
    event_time: int
    price: float
    confidence: float
    status: PriceStatus
    dispersion_bps: float
    sources_used: list[str]
    sources_excluded: list[ExcludedSource]
    unhealthy_chains: list[str] = field(default_factory=list)
    sequence: int = 0
