"""Re-running the risk engine over a recorded log: the commands it decides, and where.

Each risk partition is replayed on a fresh `PartitionEngine` from the first entry of its
log, in offset order, exactly as the worker applies it: entries the worker dead-letters
(undecodable, a report whose signature does not verify, input the engine refuses) are
skipped the same way. The engine is pure and deterministic, so the same entries in the same
order give the same commands; starting from the log's start (rather than from a snapshot)
leaves nothing to trust but the log, with one exception when the replay is not given the
executors' key (APS_REPORT_KEY): which reports were forged is then taken from the risk
stage's `forged_report` dead letters in the record. Given the workers' key
(APS_COMMAND_KEY), commands are signed as the worker signs them and their signatures are
compared too.

Only the commands created in the period are kept; entries after the period's last one are
not read at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from streams.app.authenticity import SignatureCheck
from streams.codecs.signing import sign
from streams.domain import AccountEvent, ConsensusPrice, ExecutionReport, RiskInput, ScalingCommand
from streams.errors import DomainError
from streams.replay.diff import Emission
from streams.replay.sources import LoggedInput, ReplaySource
from streams.risk.engine import EngineConfig, PartitionEngine


@dataclass(frozen=True, slots=True)
class Period:
    """A closed interval of event time, epoch ms (either bound may be open: None)."""

    start_ms: int | None = None
    end_ms: int | None = None

    def contains(self, event_time: int) -> bool:
        """True if `event_time` lies in the period."""
        return ((self.start_ms is None or event_time >= self.start_ms)
                and (self.end_ms is None or event_time <= self.end_ms))


@dataclass
class PartitionReplay:
    """What replaying one partition read and decided.

    - `read`: entries read (from the log's start); `in_period`: those whose event time lies
      in the period, `first`/`last` the (offset, event time) of the first and last of them;
    - `skipped`: entries the worker would have dead-lettered, by reason;
      `forged_from_record`: reports refused because the record's dead letters say so (no
      report key given);
    - `missing_offsets`: offsets of the log the source does not have (an archive that lost
      messages: from there on the replay cannot be exact), the first `first_missing_offset`;
    - `emitted`: the commands created in the period, by id, with where they were decided;
      `prices`: the offset of the first price of the period at each event time, to say
      where a recorded command that was not replayed would have been decided;
    - `accounts`: the accounts the log's events and reports name; `rules_in_force`: each
      account's rules hash at the end of the period; `lowest`: each account's lowest margin
      ratio and whether it went past maintenance, from the log's start to the period's end.
    """

    partition: int
    read: int = 0
    in_period: int = 0
    first: tuple[int, int] | None = None
    last: tuple[int, int] | None = None
    skipped: Counter[str] = field(default_factory=Counter)
    emitted: dict[str, tuple[ScalingCommand, Emission]] = field(default_factory=dict)
    prices: dict[int, int] = field(default_factory=dict)
    accounts: set[str] = field(default_factory=set)
    rules_in_force: dict[str, str] = field(default_factory=dict)
    lowest: dict[str, tuple[float, bool]] = field(default_factory=dict)
    forged_from_record: int = 0
    missing_offsets: int = 0
    first_missing_offset: int | None = None

    def locate(self, created_at: int) -> Emission | None:
        """The first price of the period at `created_at` (where such a command is decided)."""
        offset = self.prices.get(created_at)
        return None if offset is None else Emission(self.partition, offset, created_at)


def input_event_time(item: RiskInput) -> int:
    """The event time of a log entry: the body's (a report's is its `executed_at`)."""
    body = item.body
    if isinstance(body, ExecutionReport):
        return body.executed_at
    return body.event_time


class Replayer:
    """Replays partitions of a source with one engine configuration and one pair of keys."""

    def __init__(self, config: EngineConfig, *, command_key: str | None,
                 report_key: str | None, period: Period,
                 rewrite: Callable[[RiskInput], RiskInput] | None = None) -> None:
        """`command_key`: sign commands with it (None: leave them unsigned); `report_key`:
        verify reports with it (None: take the record's forged_report dead letters);
        `rewrite`: applied to every entry before the engine sees it (what-if only)."""
        self.config = config
        self.rewrite = rewrite
        self.command_key = command_key
        self.reports = (SignatureCheck("replay", report_key, "APS_REPORT_KEY", "executors")
                        if report_key is not None else None)
        self.period = period

    def replay(self, source: ReplaySource, partition: int,
               on_progress: Callable[[int], None] = lambda _n: None) -> PartitionReplay:
        """Replay `partition` of `source` up to the end of the period; `on_progress` is
        told how many entries each page added."""
        out = PartitionReplay(partition)
        engine = PartitionEngine(self.config)
        forged = source.forged_reports(partition) if self.reports is None else set()
        end = source.end_offset(partition, self.period.end_ms)
        expected = 0
        for page in source.inputs(partition, end):
            for entry in page:
                if entry.offset != expected:
                    out.missing_offsets += entry.offset - expected
                    if out.first_missing_offset is None:
                        out.first_missing_offset = expected
                expected = entry.offset + 1
                self._apply(engine, entry, out, forged)
            out.read += len(page)
            on_progress(len(page))
        for state in engine.accounts():
            out.lowest[state.account_id] = (state.min_margin_ratio, state.breached_maintenance)
            if state.rules is not None:
                out.rules_in_force[state.account_id] = state.rules_hash
        return out

    def _authentic(self, report: ExecutionReport, offset: int, forged: set[int],
                   out: PartitionReplay) -> bool:
        if self.reports is not None:
            return self.reports.authentic(report)
        if offset in forged:
            out.forged_from_record += 1
            return False
        return True

    def _apply(self, engine: PartitionEngine, entry: LoggedInput, out: PartitionReplay,
               forged: set[int]) -> None:
        item = entry.item
        if item is None:
            out.skipped[entry.error.split(":", 1)[0]] += 1
            return
        if self.rewrite is not None:
            item = self.rewrite(item)
        body = item.body
        event_time = input_event_time(item)
        in_period = self.period.contains(event_time)
        if in_period:
            out.in_period += 1
            out.first = out.first or (entry.offset, event_time)
            out.last = (entry.offset, event_time)
        if isinstance(body, AccountEvent | ExecutionReport):
            out.accounts.add(body.account_id)
        if isinstance(body, ExecutionReport) and not self._authentic(body, entry.offset,
                                                                     forged, out):
            out.skipped["forged_report"] += 1
            return
        try:
            commands = engine.apply(item)
        except DomainError as exc:
            out.skipped[exc.reason] += 1
            return
        if isinstance(body, ConsensusPrice) and in_period:
            out.prices.setdefault(event_time, entry.offset)
        for command in commands:
            if self.period.contains(command.created_at):
                signed = sign(command, self.command_key) if self.command_key else command
                out.emitted[command.command_id] = (
                    signed, Emission(out.partition, entry.offset, event_time))
