"""Settling commands without a broker: each command handed straight to its chain's venue.

This is what a live executor does with a command the moment it arrives (the same
`SimulatedVenue`, the same chain profiles), minus the trip through Kafka: offline runs use
it so that they and the live pipeline settle every command at the same event time
(`created_at + settlement_ms`) and at the same price.

No wire, so no signatures: the commands come straight from the engine and the reports go
straight back to it, unsigned. Signatures authenticate what crosses a topic; the live
executor signs its reports and the risk stage's adapter (not the pure engine) verifies
them, so the offline paths bypass verification by construction. Nor does it apply the
executor's bounds (streams.executors.limits): their defaults are far above what the policy
emits, so a normal run settles the same; a run that meets them would differ from live.
"""

from __future__ import annotations

from streams.domain import ExecutionReport, ScalingCommand
from streams.executors.chains import ChainProfiles
from streams.executors.registry import executor_for
from streams.executors.venue import Executor


class Settlement:
    """The venues of every chain, settling commands as a live executor would."""

    def __init__(self, profiles: ChainProfiles) -> None:
        self.profiles = profiles
        self._venues: dict[str, Executor] = {}

    def settle(self, command: ScalingCommand) -> ExecutionReport:
        """The report of `command`, executed as soon as it was sent."""
        venue = self._venues.get(command.chain)
        if venue is None:
            venue = self._venues[command.chain] = executor_for(command.chain, self.profiles)
        return venue.execute(command, now_ms=command.created_at)
