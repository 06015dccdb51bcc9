"""The archiver when things go wrong: no broker at start, ClickHouse gone mid-run; and its
Prometheus metrics when it runs as its own process (`aps archiver`).

Real components only: the session's Tansu broker, a ClickHouse server of this test's own
(stopped and restarted on the same directory and ports), chdb, the real `aps` command.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from streams.archive.archiver import ArchiverProgress, run_archiver
from streams.archive.backends import ServerBackend
from streams.config import Settings
from streams.infra.broker import create_topics, producer_config
from streams.infra.clickhouse import ClickHouseServer
from streams.infra.ports import free_port
from streams.topics import TopicSpec, topic_specs
from tests.integration.archive import samples as s
from tests.integration.archive.test_archiver import CHAINS, WAIT_S, own_rows, produce

OUTAGE_S = 12.0  # longer than the ~8 s the archiver used to survive


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def aps_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APS_")}
    env.update(values)
    return env


def garbage(prefix: str) -> tuple[str, bytes, bytes]:
    """A message the archive keeps raw, keyed with `prefix`."""
    return "account.events", f"{prefix}garbage".encode(), b"\x00 not an APS message"


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ClickHouseServer]:
    """A ClickHouse server this test may stop and start again (same directory, same ports)."""
    server = ClickHouseServer(base_dir=tmp_path / "clickhouse", tcp_port=free_port(),
                              http_port=free_port()).start()
    yield server
    server.stop()


def test_archiver_waits_out_a_clickhouse_outage(
        kafka_bootstrap: str, own_server: ClickHouseServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    url = own_server.url_for("aps_outage")
    settings = Settings(clickhouse_url=url, data_dir=tmp_path / "aps", chains=CHAINS)
    create_topics(kafka_bootstrap, [*topic_specs(settings),
                                    TopicSpec(s.CHANGELOG, settings.partitions, "")])
    before, during = f"b{uuid.uuid4().hex[:8]}-", f"d{uuid.uuid4().hex[:8]}-"
    seen: list[ArchiverProgress] = []
    stop, errors = threading.Event(), []

    def run() -> None:
        try:
            run_archiver(settings, kafka_bootstrap, stop, seen.append,
                         group_id=f"aps-archiver-outage-{uuid.uuid4().hex[:8]}",
                         batch_timeout=0.1)
        except BaseException as exc:
            errors.append(exc)

    caplog.set_level(logging.WARNING, logger="streams.archive.archiver")
    reader = ServerBackend(url)
    thread = threading.Thread(target=run, name="archiver")
    try:
        produce(kafka_bootstrap, s.samples(before, CHAINS), garbage(before))
        thread.start()
        wait_for(lambda: errors or (seen and seen[-1].caught_up and own_rows(reader, before)),
                 "the first messages")
        reader.close()
        own_server.stop()
        down = time.monotonic()
        produce(kafka_bootstrap, s.samples(during, CHAINS), garbage(during))
        # (getattr: the same test shows what the archiver did before it could wait)
        wait_for(lambda: errors or getattr(seen[-1], "retries", 0) >= 2, "failed inserts",
                 timeout=OUTAGE_S)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        assert not errors, errors  # still waiting, not dead
        assert seen[-1].unavailable_s is not None and seen[-1].unavailable_s >= 5
        own_server.start()
        reader = ServerBackend(url)
        wait_for(lambda: errors or (seen[-1].unavailable_s is None and seen[-1].caught_up
                                    and own_rows(reader, during)), "the archive to catch up")
    finally:
        stop.set()
        thread.join(WAIT_S)
    assert not errors, errors
    for prefix in (before, during):
        expected = Counter(sample.table for sample in s.samples(prefix, CHAINS))
        expected["undecodable_messages"] += 1
        assert own_rows(reader, prefix) == expected  # nothing lost
        assert own_rows(reader, prefix, final=False) == expected  # nothing stored twice
    reader.close()
    messages = [r.getMessage() for r in caplog.records]
    retries = [m for m in messages if "ClickHouse unavailable for" in m]
    assert len(retries) == seen[-1].retries  # each retry logged once, with how long so far
    assert any("ClickHouse answers again after" in m for m in messages)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of http://127.0.0.1:port/metrics by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_aps_archiver_serves_its_metrics(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "aps", chains=CHAINS)
    create_topics(kafka_bootstrap, topic_specs(settings))
    prefix = f"m{uuid.uuid4().hex[:8]}-"
    commands = [x for x in s.samples(prefix, CHAINS) if x.table == "commands"]
    producer = Producer(producer_config(kafka_bootstrap))
    hour_ago = int(time.time() * 1000) - 3_600_000
    for sample in commands:  # produced an hour ago, as far as Kafka timestamps say
        producer.produce(sample.topic, key=sample.key, value=sample.value, timestamp=hour_ago)
    assert producer.flush(30) == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from streams.cli import main; main()", "archiver",
         "--batch-timeout", "0.1", "--group", f"aps-archiver-metrics-{uuid.uuid4().hex[:8]}"],
        env=aps_env(APS_KAFKA_BOOTSTRAP=kafka_bootstrap, APS_DATA_DIR=str(settings.data_dir),
                    APS_CHAINS=",".join(CHAINS), APS_WEB_PORT=str(port)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "; caught up" in line:
                break
        metrics = scrape(port)
    finally:
        process.terminate()
        process.communicate(timeout=WAIT_S)
    assert metrics[("aps_archived_rows_total", (("table", "commands"),))] >= len(commands)
    assert metrics[("aps_archive_batches_total", ())] >= 1
    assert metrics[("aps_archive_retries_total", ())] == 0
    count = metrics[("aps_archive_delay_seconds_count", ())]
    under_half_an_hour = metrics[("aps_archive_delay_seconds_bucket", (("le", "1800.0"),))]
    assert count >= 1 and under_half_an_hour < count  # the batch with the hour-old messages
    assert metrics[("aps_archive_lag_seconds", ())] >= 0
    assert ("aps_archive_lag_messages", ()) in metrics
