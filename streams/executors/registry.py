"""Executors by chain. Every chain is served by a simulated venue for now, with its own costs."""

from __future__ import annotations

from streams.executors.venue import Executor, SimulatedVenue, VenueParams

VENUES: dict[str, VenueParams] = {
    "ethereum": VenueParams("sim-ethereum", fee_bps=5.0, base_slippage_bps=3.0,
                            impact_bps_per_million=8.0),
    "arbitrum": VenueParams("sim-arbitrum", fee_bps=4.0, base_slippage_bps=4.0,
                            impact_bps_per_million=10.0),
    "solana": VenueParams("sim-solana", fee_bps=3.0, base_slippage_bps=5.0,
                          impact_bps_per_million=12.0),
}
DEFAULT_VENUE = VenueParams("sim-generic", fee_bps=5.0, base_slippage_bps=5.0,
                            impact_bps_per_million=10.0)


def executor_for(chain: str) -> Executor:
    """The executor serving `chain` (a simulated venue with that chain's cost model)."""
    params = VENUES.get(chain)
    if params is None:
        params = VenueParams(f"sim-{chain}", DEFAULT_VENUE.fee_bps,
                             DEFAULT_VENUE.base_slippage_bps, DEFAULT_VENUE.impact_bps_per_million)
    return SimulatedVenue(chain, params)
