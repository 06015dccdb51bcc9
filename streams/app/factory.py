"""Faust app construction shared by the pipeline worker and the executors."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import faust
from faust.types import AgentT, EventT, StreamT, TopicT, TransportT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.app import transport
from streams.app.batching import ReadyBatchStream
from streams.app.batchsend import BatchedTopic, BatchSender
from streams.app.latency import observe_batch_start
from streams.app.metrics import BATCH_SECONDS, watch_gc
from streams.config import Settings

log = logging.getLogger(__name__)

PRODUCER_BATCH_BYTES = 512 * 1024
PRODUCER_LINGER_S = 0.002
SESSION_TIMEOUT_S = 6.0


class ApsApp(faust.App):
    """A Faust app whose consumer waits at most APS_FETCH_WAIT_MS for new records, and
    whose worker stops (exit code 1, a CRITICAL log line) when an agent fails.

    Faust would log the error and restart the agent with a fresh stream, leaving the failed
    batch unacked (so nothing after it is ever committed) while the process looks healthy.
    Stopping makes the failure visible to whatever supervises the process, and a restarted
    worker reads the uncommitted input again.
    """

    _batches: BatchSender | None = None

    @property
    def batches(self) -> BatchSender:
        """The app's `BatchSender`: every stage output and table write goes through it."""
        if self._batches is None:
            self._batches = BatchSender(self)
        return self._batches

    def _new_transport(self) -> TransportT:
        return transport.LowLatencyTransport(self.conf.broker_consumer, self, loop=self.loop)

    async def _on_agent_error(self, agent: AgentT, exc: BaseException) -> None:
        await super()._on_agent_error(agent, exc)
        log.critical("agent %s failed: %r; stopping the worker (its input since the last "
                     "commit is read again on restart)", agent.name, exc, exc_info=exc)
        await self.crash(exc)


def new_app(app_id: str, settings: Settings, bootstrap: str, *, web_port: int,
            datadir: Path) -> faust.App:
    """A Faust app on `bootstrap` with RocksDB tables under `datadir` and /metrics on `web_port`."""
    datadir.mkdir(parents=True, exist_ok=True)
    transport.configure(settings.fetch_wait_ms)
    app = ApsApp(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",
        datadir=str(datadir),
        web_port=web_port,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        # Tansu completes a group join after half the session timeout (Faust's 60 s default
        # would make every start and rebalance wait 30 s), and a process that died without
        # leaving its group holds its partitions until the timeout: 6 s is how long a dead
        # worker's accounts go unwatched before another one takes them over.
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=SESSION_TIMEOUT_S / 4,
        producer_acks=-1,
        # aiokafka builds one batch per partition at a time and a full batch blocks further
        # sends to that partition until it is on the wire; Faust's producer buffer sends in
        # order, so one full partition stalls every topic. At the default 16 KiB one market
        # state (15 KB) filled a batch: room for many records per round trip instead.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        # one processing step sends a price's entries to every partition, its table writes
        # and its commands: waiting 2 ms puts them in one produce request instead of one
        # request each (aiokafka sends as soon as anything is ready when linger is 0)
        producer_linger=PRODUCER_LINGER_S,
        stream_wait_empty=True,
        # Faust's recovery consistency check (faust/tables/recovery.py, _restart_recovery)
        # stays on: it refuses a table whose persisted changelog offset is beyond the
        # changelog's end (local files from another broker's log). On Tansu it compared
        # with an under-reported high watermark and refused every restart on the same data
        # directory; the consumer now counts end offsets from the records
        # (streams.app.transport).
        value_serializer="raw",
        key_serializer="raw",
        autodiscover=False,
        web_stats_enabled=False,
        web_tables_enabled=False,
        Stream=ReadyBatchStream,
    )

    @app.page("/metrics")
    async def metrics(self: View, request: Request) -> Response:
        # aiohttp refuses a charset inside content_type; the header carries the full type
        return self.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def run_worker(app: faust.App, settings: Settings) -> None:
    """Run `app` in a Faust worker until it is stopped (blocks).

    Faust's worker draws a terminal spinner and, to feed it, sets the root logger to DEBUG
    whatever the log level (faust/worker.py, ``_setup_spinner_handler``): every debug call
    of aiokafka and Faust then builds a log record (4% of the worker's time under load).
    Without the spinner the root logger keeps the configured level.
    """
    watch_gc()
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


def raw_topic(app: faust.App, name: str, partitions: int) -> TopicT:
    """A topic whose keys and values are bytes (values are Avro single-object encoded)."""
    return app.topic(name, partitions=partitions, key_serializer="raw", value_serializer="raw",
                     internal=False)


def output_topic(app: faust.App, name: str, partitions: int) -> BatchedTopic:
    """A raw topic a stage sends to, through the app's `BatchSender` (one record batch per
    partition per step instead of Faust's per-record producer buffer)."""
    if not isinstance(app, ApsApp):
        raise TypeError(f"output topics need an ApsApp, not {type(app).__name__}")
    return BatchedTopic(raw_topic(app, name, partitions), app.batches)


def batch_agent(app: faust.App, topic: TopicT, *, name: str, stage: str, size: int,
                process: Callable[[Sequence[EventT]], Awaitable[None] | None]) -> None:
    """Add agent `name` to `app`: `process` gets `topic`'s events in batches of up to `size`,
    each as soon as nothing more is queued (`ReadyBatchStream.take_ready`), timed in the
    aps_batch_seconds metric under `stage`; it may be a coroutine."""

    async def consume(stream: StreamT) -> None:
        ready: Any = stream
        async for events in ready.take_ready(size):
            observe_batch_start(stage, events)
            with BATCH_SECONDS.labels(stage).time():
                result = process(events)
                if inspect.isawaitable(result):
                    await result

    app.agent(topic, name=name)(consume)
