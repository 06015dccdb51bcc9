"""Chain executors: the protocol, a simulated venue, and the registry by chain."""

from streams.executors.registry import executor_for
from streams.executors.venue import Executor, SimulatedVenue, VenueParams

__all__ = ["Executor", "SimulatedVenue", "VenueParams", "executor_for"]
