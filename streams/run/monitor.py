"""Watches every topic of a run (read-only, no consumer group) and keeps the figures that the
progress line and the summary show."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.codecs import decode
from streams.domain import AccountState, DeadLetter, ExecutionReport, ScalingCommand
from streams.errors import CodecError
from streams.topics import DEAD_LETTER, EXECUTION_REPORTS

ACCOUNTS_CHANGELOG = "aps-risk-accounts-changelog"


@dataclass
class RunFigures:
    """What has flowed through the topics so far."""

    per_topic: Counter[str] = field(default_factory=Counter)
    commands: dict[str, ScalingCommand] = field(default_factory=dict)
    reports: dict[str, ExecutionReport] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accounts: dict[str, AccountState] = field(default_factory=dict)
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
    """A background consumer over all partitions of the given topics, from the beginning."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = [*topics, ACCOUNTS_CHANGELOG]
        self.figures = RunFigures()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._assigned: set[str] = set()
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "aps-run-monitor",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 50,
        })
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

    def end_offsets(self) -> dict[str, int]:
        """Messages in each watched topic (sum of partition high watermarks)."""
        metadata = self._consumer.list_topics(timeout=5)
        out = {}
        for name in self.topics:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                continue
            out[name] = sum(self._consumer.get_watermark_offsets(
                TopicPartition(name, p), timeout=5, cached=False)[1] for p in topic.partitions)
        return out

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
        polls = 0
        while not self._stop.is_set():
            if polls % 20 == 0:
                self._assign_new_topics()
            polls += 1
            messages = self._consumer.consume(5000, 0.1)
            if not messages:
                continue
            with self.lock:
                for message in messages:
                    if message.error() is None:
                        self._record(message.topic(), message.key(), message.value())

    def _record(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        figures = self.figures
        figures.per_topic[topic] += 1
        if value is None:
            return
        try:
            if topic.startswith("exec.") and topic.endswith(".commands"):
                command = decode(value, ScalingCommand)
                figures.commands[command.command_id] = command
            elif topic == EXECUTION_REPORTS:
                report = decode(value, ExecutionReport)
                figures.reports[report.command_id] = report
            elif topic == DEAD_LETTER:
                figures.dead_letters.append(decode(value, DeadLetter))
            elif topic == ACCOUNTS_CHANGELOG:
                state = decode(value, AccountState)
                figures.accounts[state.account_id] = state
        except CodecError:
            figures.undecodable += 1
