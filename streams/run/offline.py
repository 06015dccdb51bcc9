"""The offline twin of a live run: the same scenario through the same pure code, no broker.

Everything a live run does to decide, done in one process and in event time only: the
consensus engine over the scenario's observations (in the order the scenario sends them),
each consensus price applied to every risk partition's `PartitionEngine` after that
partition's account events (as on risk.inputs), and every command settled at once by the
executors' own venue and chain profiles (`Settlement`); the engine applies each report
when the partition's event time reaches the report's settlement instant, which is where a
live report lands too whenever the pipeline delivers it in time. Commands and reports
are not signed: they never cross a topic (see `Settlement`).

So the offline run is what the live pipeline would do with no latency at all. A live run
that keeps up emits the same commands and ends with the same accounts past maintenance;
what it loses by being slow shows as the difference (`aps run` prints both).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.app.partitioning import account_partition
from streams.domain import RiskInput, ScalingCommand
from streams.executors.chains import ChainProfiles
from streams.executors.settlement import Settlement
from streams.oracle.consensus import ConsensusEngine
from streams.oracle.feeds import FeedRegistry
from streams.risk.engine import EngineConfig, PartitionEngine
from streams.risk.valuations import SharedValuations
from streams.scenario.bundled import Scenario
from streams.topics import ACCOUNT_EVENTS, EXECUTION_REPORTS, ORACLE_TICKS

Applied = Callable[[int, RiskInput, list[ScalingCommand]], None]


def _ignore(_partition: int, _entry: RiskInput, _commands: list[ScalingCommand]) -> None:
    return None


@dataclass
class OfflineResult:
    """What the offline twin decided."""

    commands: set[str] = field(default_factory=set)
    commands_by_reason: Counter[str] = field(default_factory=Counter)
    breached: set[str] = field(default_factory=set)
    lowest_ratio: dict[str, float] = field(default_factory=dict)
    prices: int = 0


def run_offline(scenario: Scenario, feeds: FeedRegistry, chains: ChainProfiles,
                partitions: int, config: EngineConfig | None = None,
                on_progress: Callable[[int, int], None] | None = None,
                on_applied: Applied | None = None) -> OfflineResult:
    """Run `scenario` through consensus, one engine per partition and instant settlement.

    `on_applied(partition, entry, commands)` is told every entry each partition's engine
    applied, in order, with the commands it decided (the partition's log, as risk.inputs
    would hold it, and what the worker would have sent)."""
    applied = on_applied or _ignore
    config = config or EngineConfig()
    valuations = SharedValuations()
    engines = [PartitionEngine(config, valuations=valuations) for _ in range(partitions)]
    offsets = [0] * partitions
    for event in scenario.account_events:
        partition = account_partition(event.account_id, partitions)
        entry = RiskInput(ACCOUNT_EVENTS, partition, offsets[partition], event)
        applied(partition, entry, engines[partition].apply(entry))
        offsets[partition] += 1
    consensus = ConsensusEngine(feeds)
    settlement = Settlement(chains)
    result = OfflineResult()
    reports = [0] * partitions
    total = len(scenario.observations)
    for index, observation in enumerate(scenario.observations):
        for price in consensus.observe(observation).prices:
            result.prices += 1
            entry = RiskInput(ORACLE_TICKS, 0, index, price)
            for partition, engine in enumerate(engines):
                commands = engine.apply(entry)
                applied(partition, entry, commands)
                for command in commands:
                    result.commands.add(command.command_id)
                    result.commands_by_reason[command.reason.value] += 1
                    report = RiskInput(EXECUTION_REPORTS, partition, reports[partition],
                                       settlement.settle(command))
                    applied(partition, report, engine.apply(report))
                    reports[partition] += 1
        if on_progress is not None and (index % 200 == 0 or index == total - 1):
            on_progress(index + 1, total)
    for engine in engines:
        for state in engine.accounts():
            result.lowest_ratio[state.account_id] = state.min_margin_ratio
            if state.breached_maintenance:
                result.breached.add(state.account_id)
    return result
