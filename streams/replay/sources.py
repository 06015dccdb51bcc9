"""Where a replay reads the recorded log and the recorded commands: the archive or the topics.

Both sources give, per risk partition, the entries of `risk.inputs` in offset order from the
start of the partition's log, and the commands that were recorded on the execution topics.
The archive is read with FINAL (every message once, docs/archive.md); an archive on a server
may hold several runs of an embedded broker whose offsets restarted at 0, so the archive
source reads only the newest log (the messages at or after the Kafka timestamp of the
newest offset 0 of each partition) and says so in the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from confluent_kafka import Consumer, TopicPartition

from streams.app.logreader import RangeReader, end_offsets_from_records
from streams.archive.backends import ArchiveBackend, QueryResult
from streams.archive.readback import record_from_json
from streams.codecs import decode
from streams.domain import DeadLetter, RiskInput, ScalingCommand
from streams.errors import CodecError, InfraError
from streams.infra.broker import client_config
from streams.topics import DEAD_LETTER, RISK_INPUTS, exec_commands

R = TypeVar("R")

# what the risk stage writes when a report's signature does not verify (streams.app.risk_agent)
RISK_STAGE = "risk"
FORGED_REPORT = "forged_report"

# entries handed to the replay at a time (a page of the archive, a read of the topic)
PAGE = 20_000


@dataclass(frozen=True, slots=True)
class LoggedInput:
    """One entry of a risk partition's log: its offset and the input, or why it is unreadable
    (the worker dead-letters such an entry and moves on; so does the replay)."""

    offset: int
    item: RiskInput | None
    error: str = ""


class ReplaySource(Protocol):
    """What a replay reads."""

    description: str

    def partitions(self) -> list[int]:
        """The risk partitions that have recorded inputs."""

    def end_offset(self, partition: int, until_ms: int | None) -> int:
        """One past the last offset to read: the last entry with event time <= `until_ms`
        (every entry when None)."""

    def inputs(self, partition: int, end: int) -> Iterator[list[LoggedInput]]:
        """The partition's entries before offset `end`, from its start, in pages."""

    def commands(self, start_ms: int | None, end_ms: int | None) -> list[ScalingCommand]:
        """The recorded commands created in [start_ms, end_ms] (bounds optional)."""

    def forged_reports(self, partition: int) -> set[int]:
        """Offsets of the partition's entries the worker dead-lettered as `forged_report`."""


class ArchiveSource:
    """The archive's `risk_inputs` and `commands` tables (chdb or a ClickHouse server)."""

    def __init__(self, backend: ArchiveBackend) -> None:
        self.backend = backend
        self._since = self._newest_log()
        self.description = f"archive {backend.kind} {backend.location}"

    def _query(self, sql: str, params: dict[str, object]) -> QueryResult:
        """A read-only query (ClickHouse refuses a write in it)."""
        return self.backend.query(sql, params, readonly=True)

    def _newest_log(self) -> int:
        """Kafka timestamp at which the newest log of risk.inputs begins (see module doc)."""
        result = self._query(
            "SELECT min(since) FROM (SELECT kafka_partition, max(kafka_timestamp) AS since "
            "FROM risk_inputs FINAL WHERE topic = {topic:String} AND kafka_offset = 0 "
            "GROUP BY kafka_partition)", {"topic": RISK_INPUTS})
        value = result.scalar() if result.rows else None
        return int(value) if value is not None else -1

    def partitions(self) -> list[int]:
        """The partitions of risk.inputs in the newest log."""
        result = self._query(
            "SELECT DISTINCT kafka_partition FROM risk_inputs FINAL WHERE topic = {topic:String}"
            " AND kafka_timestamp >= {since:Int64} ORDER BY kafka_partition",
            {"topic": RISK_INPUTS, "since": self._since})
        return [int(row[0]) for row in result.rows]

    def end_offset(self, partition: int, until_ms: int | None) -> int:
        """One past the last archived entry with event time <= `until_ms`."""
        bound = "" if until_ms is None else " AND event_time <= {until:Int64}"
        result = self._query(
            "SELECT max(kafka_offset) + 1, count() FROM risk_inputs FINAL WHERE "
            "topic = {topic:String} AND kafka_partition = {partition:Int32} AND "
            "kafka_timestamp >= {since:Int64}" + bound,
            {"topic": RISK_INPUTS, "partition": partition, "since": self._since,
             "until": until_ms if until_ms is not None else 0})
        end, count = result.rows[0]
        return int(end) if int(count) else 0

    def inputs(self, partition: int, end: int) -> Iterator[list[LoggedInput]]:
        """Archived entries of `partition` before `end`, by offset, a page at a time."""
        start = 0
        while start < end:
            stop = min(start + PAGE, end)
            result = self._query(
                "SELECT kafka_offset, record FROM risk_inputs FINAL WHERE "
                "topic = {topic:String} AND kafka_partition = {partition:Int32} AND "
                "kafka_timestamp >= {since:Int64} AND kafka_offset >= {start:Int64} AND "
                "kafka_offset < {stop:Int64} ORDER BY kafka_offset",
                {"topic": RISK_INPUTS, "partition": partition, "since": self._since,
                 "start": start, "stop": stop})
            yield [_from_archive(int(offset), record) for offset, record in result.rows]
            start = stop

    def commands(self, start_ms: int | None, end_ms: int | None) -> list[ScalingCommand]:
        """Archived commands (every chain's topic) created in the period, newest log only."""
        where, params = _period_clause(start_ms, end_ms)
        params["since"] = self._since
        result = self._query(
            "SELECT record FROM commands FINAL WHERE kafka_timestamp >= {since:Int64}"
            + where + " ORDER BY event_time, command_id", params)
        return [record_from_json(ScalingCommand, row[0]) for row in result.rows]


    def forged_reports(self, partition: int) -> set[int]:
        """Offsets of risk.inputs[partition] in the risk stage's `forged_report` dead letters."""
        result = self._query(
            "SELECT DISTINCT source_offset FROM dead_letters FINAL WHERE stage = {stage:String}"
            " AND reason = {reason:String} AND source_topic = {topic:String} AND "
            "source_partition = {partition:Int32} AND kafka_timestamp >= {since:Int64}",
            {"stage": RISK_STAGE, "reason": FORGED_REPORT, "topic": RISK_INPUTS,
             "partition": partition, "since": self._since})
        return {int(row[0]) for row in result.rows}


def _from_archive(offset: int, record: str) -> LoggedInput:
    try:
        return LoggedInput(offset, record_from_json(RiskInput, record))
    except (ValueError, KeyError, TypeError) as exc:
        return LoggedInput(offset, None, f"unreadable archived record: {exc}")


def _period_clause(start_ms: int | None, end_ms: int | None) -> tuple[str, dict[str, object]]:
    clauses, params = [], {}
    if start_ms is not None:
        clauses.append("event_time >= {start:Int64}")
        params["start"] = start_ms
    if end_ms is not None:
        clauses.append("event_time <= {end:Int64}")
        params["end"] = end_ms
    return "".join(" AND " + c for c in clauses), params


class TopicSource:
    """The retained topics of a running broker: risk.inputs and every chain's commands."""

    def __init__(self, bootstrap: str, chains: Sequence[str], *, timeout: float = 30.0,
                 inputs_topic: str = RISK_INPUTS, dead_letter_topic: str = DEAD_LETTER,
                 commands_topic: Callable[[str], str] = exec_commands) -> None:
        """The topic names are the pipeline's unless given (tests use names of their own)."""
        self.bootstrap = bootstrap
        self.chains = tuple(chains)
        self.timeout = timeout
        self.inputs_topic = inputs_topic
        self.dead_letter_topic = dead_letter_topic
        self.description = f"topics at {bootstrap}"
        self._bounds = self._watermarks([inputs_topic, *map(commands_topic, self.chains)])

    def _watermarks(self, topics: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
        """(low, true end) offset of every partition of `topics` (see end_offsets_from_records)."""
        consumer = Consumer(client_config(self.bootstrap, **{"group.id": "aps-replay",
                                                             "enable.auto.commit": False}))
        try:
            metadata = consumer.list_topics(timeout=self.timeout)
            lows, highs = {}, {}
            for topic in topics:
                if topic not in metadata.topics:
                    raise InfraError(f"topic {topic} does not exist at {self.bootstrap}")
                for partition in metadata.topics[topic].partitions:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=self.timeout)
                    lows[(topic, partition)], highs[(topic, partition)] = low, high
        finally:
            consumer.close()
        ends = end_offsets_from_records(self.bootstrap, highs)
        return {tp: (lows[tp], ends[tp]) for tp in lows}

    def partitions(self) -> list[int]:
        """The partitions of risk.inputs."""
        return sorted(p for (topic, p) in self._bounds if topic == self.inputs_topic)

    def end_offset(self, partition: int, until_ms: int | None) -> int:
        """The partition's end: a topic has no event-time index, so all of it is read and the
        replay compares only the period's commands."""
        return self._bounds[(self.inputs_topic, partition)][1]

    def inputs(self, partition: int, end: int) -> Iterator[list[LoggedInput]]:
        """The partition's records from its log start (low watermark) up to `end`."""
        low, _ = self._bounds[(self.inputs_topic, partition)]
        if low > 0:
            raise InfraError(
                f"{self.inputs_topic}[{partition}] starts at offset {low}: earlier entries were "
                "deleted by retention, so a replay from the topic cannot rebuild the state "
                "(replay from the archive instead)")
        yield from self._records(self.inputs_topic, partition, low, end, _from_topic)

    def commands(self, start_ms: int | None, end_ms: int | None) -> list[ScalingCommand]:
        """Every chain's commands topic, read whole; those created in the period."""
        out: list[ScalingCommand] = []
        for (topic, partition), (low, end) in sorted(self._bounds.items()):
            if topic == self.inputs_topic:
                continue
            for page in self._records(topic, partition, low, end, _command_from_topic):
                out.extend(c for c in page
                           if c is not None and _in_period(c.created_at, start_ms, end_ms))
        out.sort(key=lambda c: (c.created_at, c.command_id))
        return out

    def forged_reports(self, partition: int) -> set[int]:
        """Offsets of risk.inputs[partition] in the risk stage's `forged_report` dead letters
        (the dead-letter topic is read whole)."""
        consumer = Consumer(client_config(self.bootstrap, **{"group.id": "aps-replay",
                                                             "enable.auto.commit": False}))
        try:
            name = self.dead_letter_topic
            topic = consumer.list_topics(name, timeout=self.timeout).topics.get(name)
            tps = sorted(topic.partitions) if topic is not None and not topic.error else []
            bounds = {(name, p): consumer.get_watermark_offsets(
                TopicPartition(name, p), timeout=self.timeout) for p in tps}
        finally:
            consumer.close()
        ends = end_offsets_from_records(self.bootstrap, {tp: hi for tp, (_, hi) in bounds.items()})
        offsets: set[int] = set()
        for (topic_name, p), (low, _) in bounds.items():
            for page in self._records(topic_name, p, low, ends[(topic_name, p)], _dead_letter):
                offsets.update(d.source_offset for d in page if d is not None
                               and d.stage == RISK_STAGE and d.reason == FORGED_REPORT
                               and d.source_topic == self.inputs_topic
                               and d.source_partition == partition)
        return offsets

    def _records(self, topic: str, partition: int, start: int, end: int,
                 convert: Callable[[int, bytes], R]) -> Iterator[list[R]]:
        reader = RangeReader(self.bootstrap, topic, partition, start, end,
                             stall_timeout=self.timeout)
        try:
            while not reader.done:
                records = reader.read(PAGE)
                yield [convert(r.offset, r.value) for r in records]
        finally:
            reader.close()


def _from_topic(offset: int, value: bytes) -> LoggedInput:
    try:
        return LoggedInput(offset, decode(value, RiskInput))
    except CodecError as exc:
        return LoggedInput(offset, None, f"{exc.reason}: {exc}")


def _dead_letter(_offset: int, value: bytes) -> DeadLetter | None:
    try:
        return decode(value, DeadLetter)
    except CodecError:
        return None


def _command_from_topic(_offset: int, value: bytes) -> ScalingCommand | None:
    """A command, or None for a message that is not one (executors dead-letter those)."""
    try:
        return decode(value, ScalingCommand)
    except CodecError:
        return None


def _in_period(event_time: int, start_ms: int | None, end_ms: int | None) -> bool:
    return (start_ms is None or event_time >= start_ms) and (end_ms is None or event_time <= end_ms)
