"""Snapshot of the oracle consensus engine (schema aps.ConsensusState)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class OracleFeedState:
    """Latest accepted observation of one feed, kept exact (integer mantissa and exponent)."""

    chain: str
    source: str
    feed_id: str
    round_id: str
    mantissa: str
    exponent: int
    conf: int
    published_at: int
    started_at: int
    received_at: int
    phase_from: str = ""


@dataclass(frozen=True, slots=True)
class ConsensusAssetState:
    """Output state of one asset: its sequence, last aggregate and next review time."""

    asset: str
    sequence: int
    last_price: float
    review_at: int


@dataclass(frozen=True, slots=True)
class ConsensusState:
    """Everything a restarted consensus worker needs to continue exactly."""

    clock: int
    feeds: list[OracleFeedState]
    assets: list[ConsensusAssetState]
    counters: dict[str, int] = field(default_factory=dict)
    clock_claims: dict[str, int] = field(default_factory=dict)
