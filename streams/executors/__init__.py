"""Chain executors: the protocol, a simulated venue, chain profiles and the registry by chain."""

from streams.executors.chains import ChainProfile, ChainProfiles, load_chain_profiles
from streams.executors.registry import executor_for
from streams.executors.venue import Executor, SimulatedVenue, VenueParams

__all__ = ["ChainProfile", "ChainProfiles", "Executor", "SimulatedVenue", "VenueParams",
           "executor_for", "load_chain_profiles"]
