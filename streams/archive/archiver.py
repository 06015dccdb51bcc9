"""The archiver: every APS topic (and the risk table's changelog) -> ClickHouse.

One confluent-kafka consumer in group ``aps-archiver`` reads batches (up to `batch_size`
messages or `batch_timeout` seconds), maps them to one block per table column-wise
(`streams.archive.columnar`; undecodable messages go to ``undecodable_messages`` with the
reason), inserts the blocks, and only then commits the batch's offsets synchronously.
Commit order, kept on purpose: insert, then commit. A crash in between re-archives the
batch on restart; the tables deduplicate on the Kafka coordinates
(ReplacingMergeTree, read with FINAL), so nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from streams.archive.backends import ArchiveBackend, ArchiveError, open_archive
from streams.archive.columnar import MappedTables, MessageBatch, open_mapper
from streams.archive.migrations import migrate
from streams.archive.rows import CHANGELOG_SCHEMAS
from streams.config import Settings
from streams.infra.broker import client_config
from streams.topics import topic_specs

log = logging.getLogger(__name__)

GROUP_ID = "aps-archiver"
BATCH_SIZE = 20_000
BATCH_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class ArchiverProgress:
    """A snapshot of what the archiver has done; `caught_up` means lag 0 everywhere."""

    batches: int = 0
    messages: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)
    lag: int | None = None  # messages behind the end of the assigned partitions
    assigned_partitions: int = 0
    commit_failures: int = 0

    @property
    def caught_up(self) -> bool:
        """True when partitions are assigned and none has unread messages."""
        return self.assigned_partitions > 0 and self.lag == 0


ProgressCallback = Callable[[ArchiverProgress], None]


def archived_topics(settings: Settings) -> list[str]:
    """Every topic the archiver reads: the pipeline's topics plus the Faust changelogs."""
    names = [spec.name for spec in topic_specs(settings)]
    return sorted({*names, *CHANGELOG_SCHEMAS})


def subscription(topics: Iterable[str]) -> list[str]:
    """One anchored regex per topic: a topic that does not exist yet (a changelog before
    the worker's first start) is picked up when it appears, without error reports."""
    return ["^" + re.escape(topic) + "$" for topic in topics]


def consumer_config(bootstrap: str, group_id: str = GROUP_ID) -> dict[str, Any]:
    """librdkafka settings of the archiver's consumer."""
    return client_config(bootstrap, **{
        "group.id": group_id,
        "enable.auto.commit": False,  # committed after the insert, never before
        "auto.offset.reset": "earliest",
        "allow.auto.create.topics": False,  # a consumer must never create topics
        "topic.metadata.refresh.interval.ms": 5_000,  # notice new topics soon
        "enable.partition.eof": False,
        # Kafka's minimum session timeout: a lost archiver's partitions move on quickly, and
        # Tansu answers a JoinGroup only after about half the session timeout (23 s with
        # librdkafka's default 45 s; 3 s with this)
        "session.timeout.ms": 6_000,
        "heartbeat.interval.ms": 2_000,
    })


class Archiver:
    """Consumes batches, inserts them, then commits; see the module docstring."""

    def __init__(self, backend: ArchiveBackend, bootstrap: str, topics: Sequence[str], *,
                 group_id: str = GROUP_ID, batch_size: int = BATCH_SIZE,
                 batch_timeout: float = BATCH_TIMEOUT_S, insert_retries: int = 5,
                 clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.topics = list(topics)
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.insert_retries = insert_retries
        self._clock = clock
        self._mapper = open_mapper(backend)
        self._consumer = Consumer(consumer_config(bootstrap, group_id))
        self._consumer.subscribe(subscription(self.topics))
        self._rows: Counter[str] = Counter()
        self._progress = ArchiverProgress()

    @property
    def progress(self) -> ArchiverProgress:
        """The latest snapshot (safe to read from another thread)."""
        return self._progress

    def run(self, stop: threading.Event, on_progress: ProgressCallback | None = None,
            ) -> ArchiverProgress:
        """Archive until `stop` is set; the batch in hand is finished and committed first."""
        while not stop.is_set():
            self.step()
            if on_progress is not None:
                on_progress(self._progress)
        return self._progress

    def step(self) -> int:
        """One cycle: consume a batch, insert it, commit it; return the messages handled."""
        messages = self._consumer.consume(self.batch_size, self.batch_timeout)
        batch = [m for m in messages if self._usable(m)]
        if batch:
            self._archive(batch)
        if len(messages) < self.batch_size:  # near the end of the log: is it the end?
            self._refresh_lag()
        return len(batch)

    def _usable(self, message: Any) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART):
            log.debug("archiver: %s", error)
        elif error.fatal():
            raise KafkaException(error)
        else:
            log.warning("archiver: consumer error %s", error)
        return False

    def _archive(self, batch: list[Any]) -> None:
        tables = self._mapper.map(MessageBatch.from_kafka(batch), int(self._clock()))
        self._insert_with_retries(tables)
        committed = self._commit(batch)
        for name, (_, table) in tables.items():
            self._rows[name] += table.num_rows
        p = self._progress
        self._progress = ArchiverProgress(
            batches=p.batches + 1, messages=p.messages + len(batch),
            rows_by_table=dict(self._rows), lag=None, assigned_partitions=p.assigned_partitions,
            commit_failures=p.commit_failures + (0 if committed else 1))

    def _insert_with_retries(self, tables: MappedTables) -> None:
        """Insert every table's block; a retry may repeat blocks already in (dedup absorbs it)."""
        delay = 0.5
        for attempt in range(1, self.insert_retries + 1):
            try:
                insert_tables(self.backend, tables)
                return
            except ArchiveError as exc:
                if attempt == self.insert_retries:
                    raise
                log.warning("archiver: insert failed (attempt %d): %s; retrying in %.1fs",
                            attempt, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _commit(self, batch: list[Any]) -> bool:
        """Commit the next offset of every partition in the batch, synchronously."""
        next_offsets: dict[tuple[str, int], int] = defaultdict(int)
        for message in batch:
            key = (message.topic(), message.partition())
            next_offsets[key] = max(next_offsets[key], message.offset() + 1)
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(next_offsets.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            return True
        except KafkaException as exc:
            # e.g. a rebalance took the partitions: the next owner re-archives, dedup absorbs it
            log.warning("archiver: commit failed after insert (will be re-archived): %s", exc)
            return False

    def lag(self) -> dict[tuple[str, int], int] | None:
        """Unread messages per assigned partition; None while a watermark is still unknown.

        Uses the high watermarks of the consumer's own fetch responses (no broker round
        trip; an uncached query costs ~0.2 s per partition on Tansu).
        """
        assignment = self._consumer.assignment()
        positions = self._consumer.position(assignment) if assignment else []
        committed: dict[tuple[str, int], int] | None = None
        out = {}
        for tp in positions:
            low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                return None  # not fetched yet
            offset = tp.offset
            if offset < 0:  # nothing consumed from it in this session: start = commit or low
                if committed is None:
                    committed = {(c.topic, c.partition): c.offset
                                 for c in self._consumer.committed(assignment, timeout=10)}
                offset = committed.get((tp.topic, tp.partition), OFFSET_INVALID)
                if offset < 0:
                    offset = max(low, 0)
            out[(tp.topic, tp.partition)] = max(high - offset, 0)
        return out

    def _refresh_lag(self) -> None:
        try:
            lags = self.lag()
        except KafkaException as exc:
            log.debug("archiver: lag unknown: %s", exc)
            lags = None
        p = self._progress
        self._progress = ArchiverProgress(
            batches=p.batches, messages=p.messages, rows_by_table=p.rows_by_table,
            lag=None if lags is None else sum(lags.values()),
            assigned_partitions=len(lags) if lags is not None else p.assigned_partitions,
            commit_failures=p.commit_failures)

    def close(self) -> None:
        """Leave the group (its partitions go to the other archivers at once)."""
        try:
            self._consumer.close()
        finally:
            self._mapper.close()


def insert_tables(backend: ArchiveBackend, tables: MappedTables) -> None:
    """Insert one block per table (in name order), without retries."""
    for name in sorted(tables):
        backend.insert_arrow(name, tables[name][1])


def run_archiver(settings: Settings, bootstrap: str, stop: threading.Event | None = None,
                 on_progress: ProgressCallback | None = None, *,
                 batch_size: int = BATCH_SIZE, batch_timeout: float = BATCH_TIMEOUT_S,
                 group_id: str = GROUP_ID) -> ArchiverProgress:
    """Open and migrate the configured archive, then archive until `stop` is set.

    Without `stop`, SIGINT and SIGTERM stop it (main thread only). Either way the batch in
    hand is inserted and committed, then the consumer leaves its group and the archive is
    closed. `on_progress` is called after every cycle with an `ArchiverProgress`.
    """
    stop = stop or _stop_on_signals()
    backend = open_archive(settings)
    try:
        migrate(backend)
        archiver = Archiver(backend, bootstrap, archived_topics(settings), group_id=group_id,
                            batch_size=batch_size, batch_timeout=batch_timeout)
        try:
            return archiver.run(stop, on_progress)
        finally:
            archiver.close()
    finally:
        backend.close()


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("archiver: signal %d, finishing the current batch", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)
    return stop
