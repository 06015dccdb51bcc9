"""Faust app construction shared by the pipeline worker and the executors."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import faust
from faust.types import EventT, StreamT, TopicT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.app.metrics import BATCH_SECONDS
from streams.config import Settings

# how long a batch may wait to fill before it is processed as it is
BATCH_WITHIN_S = 0.02


def new_app(app_id: str, settings: Settings, bootstrap: str, *, web_port: int,
            datadir: Path) -> faust.App:
    """A Faust app on `bootstrap` with RocksDB tables under `datadir` and /metrics on `web_port`."""
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
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
        # Tansu completes a group join after half the session timeout; Faust's 60 s default
        # would make every start and rebalance wait 30 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        producer_acks=-1,
        stream_wait_empty=True,
        value_serializer="raw",
        key_serializer="raw",
        autodiscover=False,
        web_stats_enabled=False,
        web_tables_enabled=False,
    )

    @app.page("/metrics")
    async def metrics(self: View, request: Request) -> Response:
        # aiohttp refuses a charset inside content_type; the header carries the full type
        return self.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


def raw_topic(app: faust.App, name: str, partitions: int) -> TopicT:
    """A topic whose keys and values are bytes (values are Avro single-object encoded)."""
    return app.topic(name, partitions=partitions, key_serializer="raw", value_serializer="raw",
                     internal=False)


def batch_agent(app: faust.App, topic: TopicT, *, name: str, stage: str, size: int,
                process: Callable[[Sequence[EventT]], Awaitable[None] | None]) -> None:
    """Add agent `name` to `app`: `process` gets `topic`'s events in batches of up to `size`
    (each batch timed in the aps_batch_seconds metric under `stage`); it may be a coroutine."""

    async def consume(stream: StreamT) -> None:
        async for events in stream.take_events(size, within=BATCH_WITHIN_S):
            with BATCH_SECONDS.labels(stage).time():
                result = process(events)
                if inspect.isawaitable(result):
                    await result

    app.agent(topic, name=name)(consume)
