"""Watches every topic of a run (read-only, no consumer group) and keeps the figures that the
progress line and the summary show.

It counts messages as it reads them; it never uses high watermarks (Tansu 0.6 undercounts
them for multi-record batches).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streams.app.latency import parse_input_header
from streams.app.partitioning import account_partition
from streams.archive.archiver import archived_topics
from streams.codecs import decode
from streams.config import Settings
from streams.domain import (
    AccountState,
    ConsensusPrice,
    DeadLetter,
    ExecutionReport,
    OracleObservation,
    RiskInput,
    ScalingCommand,
)
from streams.errors import CodecError, InfraError
from streams.infra.broker import client_config
from streams.run.hops import CommandStamp, HopRecords
from streams.topics import DEAD_LETTER, EXECUTION_REPORTS, ORACLE_PRICES, ORACLE_TICKS, RISK_INPUTS

log = logging.getLogger(__name__)
ACCOUNTS_CHANGELOG = "aps-risk-accounts-changelog"
MAX_LOGGED_ERRORS = 20


@dataclass
class RunFigures:
    """What has flowed through the topics so far."""

    per_topic: Counter[str] = field(default_factory=Counter)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    commands: dict[str, ScalingCommand] = field(default_factory=dict)
    reports: dict[str, ExecutionReport] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accounts: dict[str, AccountState] = field(default_factory=dict)
    hops: HopRecords = field(default_factory=HopRecords)
    undecodable: int = 0

    def commands_by(self, attribute: str) -> Counter[str]:
        """Commands counted by reason or chain."""
        return Counter(_label(getattr(c, attribute)) for c in self.commands.values())

    def reports_by_status(self) -> Counter[str]:
        """Execution reports counted by status."""
        return Counter(r.status.value for r in self.reports.values())


def _label(value: object) -> str:
    return str(getattr(value, "value", value))


class TopicMonitor:
    """A background consumer over all partitions of the archived topics, from the start."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        self.bootstrap = bootstrap
        self.partitions = settings.partitions
        self.topics = archived_topics(settings)
        self.figures = RunFigures()
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._assigned: set[str] = set()
        self.errors = 0  # errors the consumer returned instead of messages
        self._consumer = Consumer(client_config(bootstrap, **{
            "group.id": "aps-run-monitor", "enable.auto.commit": False,
            "fetch.wait.max.ms": 50}))
        self._thread = threading.Thread(target=self._loop, name="topic-monitor", daemon=True)

    def start(self) -> TopicMonitor:
        """Start consuming in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop consuming and close the consumer."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._consumer.close()

    def check(self) -> None:
        """Raise if the monitor thread failed."""
        if self.error is not None:
            raise InfraError(f"topic monitor failed: {self.error!r}") from self.error

    def count(self, topic: str) -> int:
        """Messages read from `topic` so far."""
        with self.lock:
            return self.figures.per_topic[topic]

    def total(self) -> int:
        """Messages read from every topic so far."""
        with self.lock:
            return sum(self.figures.per_topic.values())

    def snapshot(self) -> tuple[tuple[str, int], ...]:
        """Per-topic counts, comparable between two moments."""
        with self.lock:
            return tuple(sorted(self.figures.per_topic.items()))

    def ends(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """Per partition of `topics`: the offset after the last message read."""
        wanted = set(topics)
        with self.lock:
            return {key: end for key, end in self.figures.ends.items() if key[0] in wanted}

    def unreported(self) -> int:
        """Commands seen without an execution report yet."""
        with self.lock:
            return len(self.figures.commands.keys() - self.figures.reports.keys())

    def unreported_ids(self, limit: int = 3) -> list[str]:
        """Up to `limit` ids of commands seen without an execution report yet (sorted)."""
        with self.lock:
            return sorted(self.figures.commands.keys() - self.figures.reports.keys())[:limit]

    def line(self) -> str:
        """One-line progress figures."""
        with self.lock:
            f = self.figures
            return (f"prices {f.per_topic[ORACLE_PRICES]:>6}  commands {len(f.commands):>5}  "
                    f"reports {len(f.reports):>5}  dead letters {len(f.dead_letters):>3}")

    def _assign_new_topics(self) -> None:
        missing = [t for t in self.topics if t not in self._assigned]
        if not missing:
            return
        metadata = self._consumer.list_topics(timeout=5)
        new = []
        for name in missing:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None or not topic.partitions:
                continue
            new += [TopicPartition(name, p, OFFSET_BEGINNING) for p in topic.partitions]
            self._assigned.add(name)
        if new:
            self._consumer.incremental_assign(new)

    def _loop(self) -> None:
        try:
            polls = 0
            while not self._stop.is_set():
                if polls % 20 == 0:
                    self._assign_new_topics()
                polls += 1
                messages = self._consumer.consume(5000, 0.1)
                with self.lock:
                    for message in messages:
                        if message.error() is not None:
                            self._note_error(message)
                        else:
                            self._record(message.topic(), message.value(),
                                         message.timestamp()[1], message.partition(),
                                         message.offset(), message.headers())
                            key = (message.topic(), message.partition())
                            self.figures.ends[key] = max(self.figures.ends.get(key, 0),
                                                         message.offset() + 1)
        except BaseException as exc:  # surfaced to the run by check()
            log.exception("topic monitor failed")
            self.error = exc

    def _note_error(self, message: Message) -> None:
        """Log an error the consumer returned in place of a message (the first few): a
        record the monitor does not see makes a run wait for it until its drain timeout."""
        self.errors += 1
        if self.errors <= MAX_LOGGED_ERRORS:
            log.warning("topic monitor: %s[%s]: %s", message.topic(), message.partition(),
                        message.error())

    def _record(self, topic: str, value: bytes | None, ts: int, partition: int,
                offset: int = -1, headers: list[tuple[str, bytes]] | None = None) -> None:
        figures = self.figures
        figures.per_topic[topic] += 1
        if value is None:
            return
        hops = figures.hops
        try:
            if topic.startswith("exec.") and topic.endswith(".commands"):
                command = decode(value, ScalingCommand)
                figures.commands[command.command_id] = command
                prov = command.provenance
                hops.commands[command.command_id] = CommandStamp(
                    ts, account_partition(command.account_id, self.partitions), prov.asset,
                    prov.price_event_time, parse_input_header(headers))
            elif topic == EXECUTION_REPORTS:
                report = decode(value, ExecutionReport)
                figures.reports[report.command_id] = report
                HopRecords.first(hops.reports, report.command_id, ts)
            elif topic == ORACLE_TICKS:
                HopRecords.first(hops.ticks, decode(value, OracleObservation).received_at, ts)
            elif topic == ORACLE_PRICES:
                price = decode(value, ConsensusPrice)
                HopRecords.first(hops.prices, (price.asset, price.event_time), ts)
            elif topic == RISK_INPUTS:
                body = decode(value, RiskInput).body
                if isinstance(body, ConsensusPrice):
                    HopRecords.first(hops.risk_prices, (partition, body.asset, body.event_time),
                                     ts)
                    hops.risk_price_entries[(partition, offset)] = (ts, body.asset,
                                                                    body.event_time)
                elif isinstance(body, ExecutionReport):
                    HopRecords.first(hops.risk_reports, body.command_id, ts)
            elif topic == DEAD_LETTER:
                figures.dead_letters.append(decode(value, DeadLetter))
            elif topic == ACCOUNTS_CHANGELOG:
                state = decode(value, AccountState)
                figures.accounts[state.account_id] = state
        except CodecError:
            figures.undecodable += 1
