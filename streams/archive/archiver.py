"""The archiver: every APS topic (and the risk table's changelog) -> ClickHouse.

One confluent-kafka consumer in group ``aps-archiver`` reads batches (up to `batch_size`
messages or `batch_timeout` seconds), maps them to one block per table column-wise
(`streams.archive.columnar`; undecodable messages go to ``undecodable_messages`` with the
reason), inserts the blocks, and only then commits the batch's offsets synchronously.
Commit order, kept on purpose: insert, then commit. A crash in between re-archives the
batch on restart; the tables deduplicate on the Kafka coordinates (ReplacingMergeTree,
read with FINAL), so nothing is lost and nothing is counted twice.

ClickHouse unavailable (`ArchiveUnavailableError`: down, unreachable, overloaded): the
insert is retried with exponential backoff (capped) for as long as it takes, each retry
logged once with the outage's duration; meanwhile the consumer's partitions are paused (it
stays in its group) and nothing is committed. A retry first drops the rows a failed
attempt may have stored anyway, so no row is stored twice. An insert ClickHouse refuses
for another reason is tried `INSERT_ATTEMPTS` times, then the archiver fails.
The broker unreachable at start: `BrokerUnreachableError` after `broker_timeout` seconds.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from streams.archive import metrics
from streams.archive.backends import (
    ArchiveBackend,
    ArchiveError,
    ArchiveUnavailableError,
    open_archive,
)
from streams.archive.columnar import ColumnarMapper, MappedTables, MessageBatch, open_mapper
from streams.archive.migrations import migrate
from streams.archive.rows import CHANGELOG_SCHEMAS
from streams.config import Settings
from streams.errors import InfraError
from streams.infra.broker import client_config
from streams.topics import topic_specs

log = logging.getLogger(__name__)

GROUP_ID = "aps-archiver"
BATCH_SIZE = 20_000
BATCH_TIMEOUT_S = 0.5
BROKER_TIMEOUT_S = 15.0  # how long a start waits for the broker before giving up
INSERT_ATTEMPTS = 5  # for an insert ClickHouse refuses (not one it cannot take now)
PROGRESS_EVERY_S = 1.0  # progress reports while waiting for ClickHouse


class BrokerUnreachableError(InfraError):
    """The Kafka broker did not answer within the start-up wait."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between insert attempts: `first`, doubled each time, never above `cap`."""

    first: float = 0.5
    cap: float = 10.0

    def delays(self) -> Iterable[float]:
        """The successive waits (endless)."""
        delay = self.first
        while True:
            yield delay
            delay = min(delay * 2, self.cap)


@dataclass(frozen=True, slots=True)
class ArchiverProgress:
    """A snapshot of what the archiver has done; `caught_up` means lag 0 everywhere."""

    batches: int = 0
    messages: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)
    lag: int | None = None  # messages behind the end of the assigned partitions
    assigned_partitions: int = 0
    commit_failures: int = 0
    retries: int = 0  # insert attempts that failed (ClickHouse unavailable)
    unavailable_s: float | None = None  # ClickHouse failing for this long; None: it answers
    lag_seconds: float | None = None  # age of the last committed batch's oldest message

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
        # librdkafka's own log lines (a broker that refuses connections logs one per
        # attempt) go to this module's logger at debug level: errors reach the user once,
        # from here
        "logger": _LibrdkafkaLog(),
    })


class _LibrdkafkaLog:
    """librdkafka log lines -> debug records of `streams.archive.librdkafka`."""

    _log = logging.getLogger("streams.archive.librdkafka")

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        self._log.debug(msg, *args)


class Archiver:
    """Consumes batches, inserts them, then commits; see the module docstring."""

    def __init__(self, backend: ArchiveBackend, bootstrap: str, topics: Sequence[str], *,
                 group_id: str = GROUP_ID, batch_size: int = BATCH_SIZE,
                 batch_timeout: float = BATCH_TIMEOUT_S, backoff: Backoff = Backoff(),
                 broker_timeout: float = BROKER_TIMEOUT_S,
                 mapper: ColumnarMapper | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.backoff = backoff
        self._clock = clock
        self._consumer = Consumer(consumer_config(bootstrap, group_id))
        try:
            self._wait_for_broker(broker_timeout)
            self._owns_mapper = mapper is None
            self._mapper = mapper or open_mapper(backend)
        except BaseException:
            self._consumer.close()
            raise
        self._paused = False
        self._consumer.subscribe(subscription(self.topics), on_assign=self._on_assign)
        self._rows: Counter[str] = Counter()
        self._progress = ArchiverProgress()
        self._on_progress: ProgressCallback | None = None

    def _wait_for_broker(self, timeout: float) -> None:
        try:
            self._consumer.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnreachableError(
                f"cannot reach the Kafka broker at {self.bootstrap} (waited {timeout:.0f} s: "
                f"{exc.args[0].str() if exc.args else exc}); start it, or point --bootstrap / "
                "APS_KAFKA_BOOTSTRAP at a running one") from None

    @property
    def progress(self) -> ArchiverProgress:
        """The latest snapshot (safe to read from another thread)."""
        return self._progress

    def run(self, stop: threading.Event, on_progress: ProgressCallback | None = None,
            ) -> ArchiverProgress:
        """Archive until `stop` is set; the batch in hand is finished and committed first
        (unless ClickHouse is unavailable then: it is left uncommitted, read again later)."""
        self._on_progress = on_progress
        while not stop.is_set():
            self.step(stop)
            self._report()
        return self._progress

    def step(self, stop: threading.Event | None = None) -> int:
        """One cycle: consume a batch, insert it, commit it; return the messages handled."""
        messages = self._consumer.consume(self.batch_size, self.batch_timeout)
        batch = [m for m in messages if self._usable(m)]
        if batch:
            self._archive(batch, stop or threading.Event())
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

    def _archive(self, messages: list[Any], stop: threading.Event) -> None:
        batch = MessageBatch.from_kafka(messages)
        tables = self._mapper.map(batch, int(self._clock()))
        if not self._insert(tables, stop):
            return  # stopped while ClickHouse was away: nothing committed, read again later
        committed = self._commit(messages)
        done = self._clock()
        for name, (_, table) in tables.items():
            self._rows[name] += table.num_rows
            metrics.ARCHIVED_ROWS.labels(name).inc(table.num_rows)
        metrics.BATCHES.inc()
        delay = _oldest_age(batch.timestamps, done)
        if delay is not None:
            metrics.DELAY.observe(delay)
            metrics.LAG_SECONDS.set(delay)
        p = self._progress
        self._progress = replace(
            p, batches=p.batches + 1, messages=p.messages + len(messages),
            rows_by_table=dict(self._rows), lag=None,
            commit_failures=p.commit_failures + (0 if committed else 1),
            lag_seconds=delay if delay is not None else p.lag_seconds)

    # --- inserting, through ClickHouse outages ---------------------------------------

    def _insert(self, tables: MappedTables, stop: threading.Event) -> bool:
        """Insert every table's block, retrying until it works; False if stopped first."""
        pending = sorted(tables)
        uncertain: set[str] = set()  # attempted and failed: may be stored all the same
        delays = iter(self.backoff.delays())
        started: float | None = None
        attempts = 0
        while pending:
            name = pending[0]
            block = tables[name][1]
            try:
                if name in uncertain:
                    block = self._not_archived(name, block)
                self.backend.insert_arrow(name, block)
            except ArchiveError as exc:
                refused = not isinstance(exc, ArchiveUnavailableError)
                uncertain.add(name)
                attempts += 1
                if refused and attempts >= INSERT_ATTEMPTS:
                    raise  # not an outage: the same block would fail forever
                started = started if started is not None else time.monotonic()
                delay = next(delays)
                self._outage(started, attempts, delay, exc)
                if not self._wait(delay, started, stop):
                    log.warning("archiver: stopping while ClickHouse is unavailable; the "
                                "batch in hand is not committed and will be archived again")
                    return False
                continue
            pending.pop(0)
        if started is not None:
            log.warning("archiver: ClickHouse answers again after %.1f s (%d failed "
                        "attempts); resuming", time.monotonic() - started, attempts)
            metrics.UNAVAILABLE.set(0)
            self._progress = replace(self._progress, unavailable_s=None)
        return True

    def _outage(self, started: float, attempt: int, delay: float, exc: Exception) -> None:
        lasted = time.monotonic() - started
        metrics.RETRIES.inc()
        metrics.UNAVAILABLE.set(lasted)
        reason = str(exc).splitlines()[0][:300]
        log.warning("archiver: ClickHouse unavailable for %.1f s (attempt %d failed: %s); "
                    "retrying in %.1f s, nothing committed meanwhile",
                    lasted, attempt, reason, delay)
        p = self._progress
        self._progress = replace(p, retries=p.retries + 1, unavailable_s=lasted)

    def _not_archived(self, table: str, block: pa.Table) -> pa.Table:
        """`block` without the rows a failed attempt stored after all (same coordinates)."""
        keys = ("topic", "kafka_partition", "kafka_offset", "kafka_timestamp")
        clauses, params = [], {}
        ranges = block.group_by(["topic", "kafka_partition"]).aggregate(
            [("kafka_offset", "min"), ("kafka_offset", "max")])
        for i, row in enumerate(ranges.to_pylist()):
            clauses.append(f"(topic = {{t{i}:String}} AND kafka_partition = {{p{i}:Int32}} AND "
                           f"kafka_offset BETWEEN {{lo{i}:Int64}} AND {{hi{i}:Int64}})")
            params.update({f"t{i}": row["topic"], f"p{i}": row["kafka_partition"],
                           f"lo{i}": row["kafka_offset_min"], f"hi{i}": row["kafka_offset_max"]})
        stored = self.backend.query(
            f"SELECT {', '.join(keys)} FROM {table} WHERE {' OR '.join(clauses)}", params)
        if not stored.rows:
            return block
        present = set(stored.rows)
        rows = zip(*(block.column(k).to_pylist() for k in keys), strict=True)
        keep = pa.array([tuple(r) not in present for r in rows])
        log.warning("archiver: %d rows of %s were stored by a failed attempt; not inserted "
                    "again", len(keep) - pc.sum(keep).as_py(), table)
        return block.filter(keep)

    def _wait(self, seconds: float, started: float, stop: threading.Event) -> bool:
        """Sleep `seconds` with the partitions paused (the consumer stays in its group);
        False if `stop` was set meanwhile."""
        self._pause(True)
        deadline = time.monotonic() + seconds
        try:
            while not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                self._unread(self._consumer.consume(100, min(remaining, PROGRESS_EVERY_S)))
                self._progress = replace(self._progress,
                                         unavailable_s=time.monotonic() - started)
                self._refresh_lag()
                self._report()
            return False
        finally:
            self._pause(False)

    def _pause(self, paused: bool) -> None:
        self._paused = paused
        assignment = self._consumer.assignment()
        if assignment:
            (self._consumer.pause if paused else self._consumer.resume)(assignment)

    def _unread(self, messages: list[Any]) -> None:
        """Messages fetched while paused (a partition assigned meanwhile): read them later."""
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            if m.error() is None:
                key = (m.topic(), m.partition())
                first[key] = min(first.get(key, m.offset()), m.offset())
        for (topic, partition), offset in first.items():
            tp = TopicPartition(topic, partition, offset)
            self._consumer.pause([tp])
            self._consumer.seek(tp)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._paused and partitions:
            consumer.pause(partitions)

    # --- committing, lag ------------------------------------------------------------

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
        if lags is not None:
            metrics.LAG_MESSAGES.set(sum(lags.values()))
        self._progress = replace(
            p, lag=None if lags is None else sum(lags.values()),
            assigned_partitions=len(lags) if lags is not None else p.assigned_partitions)

    def _report(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self._progress)

    def close(self) -> None:
        """Leave the group (its partitions go to the other archivers at once)."""
        try:
            self._consumer.close()
        finally:
            if self._owns_mapper:
                self._mapper.close()


def _oldest_age(timestamps: Sequence[int], now: float) -> float | None:
    """Seconds from the oldest Kafka timestamp (epoch ms; -1 = none) to `now` (epoch s)."""
    known = [t for t in timestamps if t >= 0]
    return max(now - min(known) / 1000.0, 0.0) if known else None


def insert_tables(backend: ArchiveBackend, tables: MappedTables) -> None:
    """Insert one block per table (in name order), without retries."""
    for name in sorted(tables):
        backend.insert_arrow(name, tables[name][1])


def run_archiver(settings: Settings, bootstrap: str, stop: threading.Event | None = None,
                 on_progress: ProgressCallback | None = None, *,
                 batch_size: int = BATCH_SIZE, batch_timeout: float = BATCH_TIMEOUT_S,
                 group_id: str = GROUP_ID, metrics_port: int | None = None,
                 broker_timeout: float = BROKER_TIMEOUT_S,
                 backoff: Backoff = Backoff()) -> ArchiverProgress:
    """Open and migrate the configured archive, then archive until `stop` is set.

    Without `stop`, SIGINT and SIGTERM stop it (main thread only). Either way the batch in
    hand is inserted and committed, then the consumer leaves its group and the archive is
    closed. `on_progress` is called after every cycle with an `ArchiverProgress` (and every
    second while ClickHouse is unavailable). With `metrics_port`, Prometheus metrics are
    served there (`streams.archive.metrics`).
    """
    stop = stop or _stop_on_signals()
    if metrics_port:
        metrics.serve(metrics_port)
    backend = open_archive(settings)
    try:
        migrate(backend)
        archiver = Archiver(backend, bootstrap, archived_topics(settings), group_id=group_id,
                            batch_size=batch_size, batch_timeout=batch_timeout,
                            backoff=backoff, broker_timeout=broker_timeout)
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
