"""`aps replay`: re-decide a recorded period and compare with what was recorded.

Reads only: the archive is queried read-only and the topics through manually assigned
consumers that commit nothing; nothing is produced, no table is written and no executor is
called. The only file written is the report, and a report path inside the pipeline's own
state (the embedded archive, a worker's or an executor's tables) is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streams.app.partitioning import key_partition
from streams.config import Settings
from streams.domain import ScalingCommand
from streams.errors import ConfigError
from streams.replay.diff import Comparison, Emission, compare
from streams.replay.replayer import PartitionReplay, Period, Replayer, input_event_time
from streams.replay.report import ReportHeader, audit_report
from streams.replay.sources import ReplaySource
from streams.risk.engine import EngineConfig
from streams.risk.settings import engine_config_hash


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay: the period (event time or, with one partition, offsets), which
    partitions (all when empty), with which settings, and whether signatures count."""

    period: Period = field(default_factory=Period)
    partitions: tuple[int, ...] = ()
    from_offset: int | None = None
    to_offset: int | None = None
    config: EngineConfig = field(default_factory=EngineConfig)
    signatures: bool = True


@dataclass(frozen=True, slots=True)
class AuditResult:
    """A finished audit: the partitions replayed, the comparison and the report."""

    replays: list[PartitionReplay]
    comparison: Comparison
    report: dict[str, object]


def refuse_state_path(path: Path, settings: Settings) -> None:
    """ConfigError if `path` lies inside the pipeline's own state (see module doc)."""
    target = path.resolve()
    data = settings.data_dir.resolve()
    protected = [settings.chdb_path.resolve()] + ([
        p.resolve() for p in data.iterdir()
        if p.name.startswith(("worker-", "executor-", "archiver-"))] if data.exists() else [])
    for place in protected:
        if target == place or place in target.parents:
            raise ConfigError(f"the replay report {path} would be written inside {place}, "
                              "the pipeline's own state: write it elsewhere")


def replay_keys(settings: Settings) -> tuple[str | None, str | None]:
    """The workers' and the executors' keys, each only if given (APS_COMMAND_KEY,
    APS_REPORT_KEY): the development keys sign nothing a deployment relies on, and `aps run`
    makes keys of its own for each run that end with it."""
    return (settings.command_key if "command_key" in settings.given else None,
            settings.report_key if "report_key" in settings.given else None)


def period_of_offsets(source: ReplaySource, partition: int, first: int | None,
                      last: int | None) -> Period:
    """The event-time period of the entries at offsets [first, last] of `partition`: from
    the earliest to the latest event time among them (ConfigError if there are none)."""
    end = source.end_offset(partition, None) if last is None else last + 1
    times = [input_event_time(entry.item) for page in source.inputs(partition, end)
             for entry in page if entry.item is not None
             and (first is None or entry.offset >= first)]
    if not times:
        raise ConfigError(f"partition {partition} has no readable entry in offsets "
                          f"{first}..{last}")
    return Period(min(times), max(times))


def select_partitions(source: ReplaySource, wanted: Sequence[int]) -> list[int]:
    """The partitions to replay: `wanted` (each must have recorded inputs), else all."""
    available = source.partitions()
    if not available:
        raise ConfigError(f"no recorded risk.inputs in {source.description}: nothing to replay")
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise ConfigError(f"partition(s) {missing} have no recorded risk.inputs in "
                          f"{source.description} (recorded: {available})")
    return sorted(set(wanted)) if wanted else available


def recorded_of(commands: Sequence[ScalingCommand], replays: Sequence[PartitionReplay],
                replayed_all: bool, partition_count: int) -> list[ScalingCommand]:
    """The recorded commands that belong to the replayed partitions.

    An account belongs to the partition whose log carried its events and reports; an account
    no replayed log mentions belongs to the partition Kafka's default partitioner gives its
    key (so a foreign command is never silently left out of a whole-log replay)."""
    owner = {account: r.partition for r in replays for account in r.accounts}
    chosen = {r.partition for r in replays}

    def belongs(command: ScalingCommand) -> bool:
        partition = owner.get(command.account_id)
        if partition is None:
            return replayed_all or key_partition(command.account_id.encode(),
                                                 partition_count) in chosen
        return partition in chosen
    return [c for c in commands if belongs(c)]


def run_audit(source: ReplaySource, settings: Settings, request: ReplayRequest,
              on_progress: Callable[[int], None] = lambda _n: None,
              on_partition: Callable[[int, int], None] = lambda _p, _end: None) -> AuditResult:
    """Replay the request's partitions of `source` and compare with the recorded commands.

    `on_partition(partition, end_offset)` is called before each partition is replayed,
    `on_progress(n)` as its entries are read."""
    partitions = select_partitions(source, request.partitions)
    period = request.period
    if request.from_offset is not None or request.to_offset is not None:
        if len(partitions) != 1 or not request.partitions:
            raise ConfigError("offsets select entries of one partition: give exactly one "
                              "--partition with --from-offset / --to-offset")
        period = period_of_offsets(source, partitions[0], request.from_offset,
                                   request.to_offset)
    command_key, report_key = replay_keys(settings)
    signatures = request.signatures and command_key is not None
    replayer = Replayer(request.config, period=period, report_key=report_key,
                        command_key=command_key if signatures else None)
    replays = []
    for partition in partitions:
        on_partition(partition, source.end_offset(partition, period.end_ms))
        replays.append(replayer.replay(source, partition, on_progress))
    recorded = recorded_of(source.commands(period.start_ms, period.end_ms), replays,
                           replayed_all=not request.partitions,
                           partition_count=max(source.partitions()) + 1)
    comparison = compare(recorded, {cid: v for r in replays for cid, v in r.emitted.items()},
                         _locator(replays), signatures=signatures)
    header = ReportHeader("audit", source.description, period, replays,
                          engine_config_hash(request.config),
                          signatures_compared=signatures, reports_verified=report_key is not None)
    return AuditResult(replays, comparison, audit_report(header, comparison))


def _locator(replays: Sequence[PartitionReplay]) -> Callable[[ScalingCommand], Emission | None]:
    """Where a recorded command would have been decided: its account's partition, at the
    first price of the period at its `created_at`."""
    by_partition = {r.partition: r for r in replays}
    owner = {account: r.partition for r in replays for account in r.accounts}

    def locate(command: ScalingCommand) -> Emission | None:
        part = by_partition.get(owner.get(command.account_id, -1))
        return part.locate(command.created_at) if part else None
    return locate
