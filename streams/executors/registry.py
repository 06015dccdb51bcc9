"""Executors by chain: every chain is served by a simulated venue with its profile's costs and
settlement latency (infra/chains.toml)."""

from __future__ import annotations

from streams.executors.chains import ChainProfiles
from streams.executors.venue import Executor, SimulatedVenue


def executor_for(chain: str, profiles: ChainProfiles) -> Executor:
    """The executor serving `chain` (a simulated venue with that chain's profile)."""
    return SimulatedVenue(chain, profiles.profile(chain).venue())
