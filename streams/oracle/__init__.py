"""Oracle feed normalization and cross-chain consensus: pure, deterministic code.

    feeds       the feed registry (infra/feeds.toml): chains, feeds, consensus thresholds
    normalize   exact integer normalization and validation of Chainlink / Pyth payloads
    consensus   ConsensusEngine: observations in, ConsensusPrice out, refusals with reasons
    reasons     machine-readable reason codes (dead-letter vs counted-only vs exclusions)
    synthetic   observations in each oracle's native shape from price paths, with faults
    jsonl       JSON lines in the oracles' own shapes, for `aps oracle consensus`
"""

from streams.oracle.consensus import ConsensusEngine, Outcome, Refusal
from streams.oracle.feeds import (
    ChainSpec,
    ConsensusConfig,
    FeedRegistry,
    FeedSpec,
    SequencerFeed,
    load_feeds,
    loads_feeds,
)

__all__ = [
    "ChainSpec",
    "ConsensusConfig",
    "ConsensusEngine",
    "FeedRegistry",
    "FeedSpec",
    "Outcome",
    "Refusal",
    "SequencerFeed",
    "load_feeds",
    "loads_feeds",
]
