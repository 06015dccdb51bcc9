"""The archiver against the real broker, into embedded chdb and into the ClickHouse server.

Produces real Avro records to several topics (and one garbage message), runs the archiver
until it reports lag 0, checks one row per message in each table, then restarts it in the
same group (nothing new, nothing doubled), and finally rewinds the group's offsets to
replay a crash between insert and commit (stored copies, still counted once).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.archive.archiver import ArchiverProgress, archived_topics, run_archiver
from streams.archive.backends import ArchiveBackend, ChdbBackend, ServerBackend
from streams.config import Settings
from streams.infra.broker import create_topics, producer_config
from streams.topics import TopicSpec, topic_specs
from tests.integration.archive import samples as s

CHAINS = ("ethereum", "arbitrum")
WAIT_S = 60.0


@pytest.fixture(params=["chdb", "server"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Pipeline settings whose archive is chdb in tmp_path, or a fresh server database."""
    url = request.getfixturevalue("server_database_url") if request.param == "server" else None
    return Settings(clickhouse_url=url, data_dir=tmp_path / "aps", chains=CHAINS)


@pytest.fixture
def reader(settings: Settings) -> Iterator[ArchiveBackend]:
    """A second connection to the archive the archiver writes (same process for chdb)."""
    backend: ArchiveBackend
    if settings.clickhouse_url:
        backend = ServerBackend(settings.clickhouse_url)
    else:
        backend = ChdbBackend(settings.chdb_path)
    yield backend
    backend.close()


def produce(bootstrap: str, samples: list[s.Sample], garbage: tuple[str, bytes, bytes]) -> None:
    producer = Producer(producer_config(bootstrap))
    for sample in samples:
        producer.produce(sample.topic, key=sample.key, value=sample.value)
    producer.produce(garbage[0], key=garbage[1], value=garbage[2])
    assert producer.flush(30) == 0


def archive_until_caught_up(settings: Settings, bootstrap: str, group: str) -> ArchiverProgress:
    """Run the archiver in a thread until its lag is 0, then stop it (clean shutdown)."""
    stop = threading.Event()
    seen: list[ArchiverProgress] = []
    caught_up = threading.Event()

    def on_progress(progress: ArchiverProgress) -> None:
        seen.append(progress)
        if progress.caught_up:
            caught_up.set()

    result: list[ArchiverProgress] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(run_archiver(settings, bootstrap, stop, on_progress, group_id=group,
                                       batch_timeout=0.1))
        except BaseException as exc:
            errors.append(exc)
            caught_up.set()

    thread = threading.Thread(target=run, name="archiver")
    thread.start()
    try:
        assert caught_up.wait(WAIT_S), f"archiver never caught up: last {seen[-1:]}"
    finally:
        stop.set()
        thread.join(WAIT_S)
    assert not errors, errors
    assert not thread.is_alive()
    return result[0]


def own_rows(reader: ArchiveBackend, prefix: str, final: bool = True) -> Counter[str]:
    """Rows per table whose Kafka key starts with `prefix` (other tests share the broker)."""
    counts: Counter[str] = Counter()
    for table in ("oracle_ticks", "consensus_prices", "account_events", "risk_inputs",
                  "commands", "execution_reports", "dead_letters", "account_states",
                  "refusals", "undecodable_messages"):
        n = reader.query(
            f"SELECT count() FROM {table}{' FINAL' if final else ''} "
            "WHERE startsWith(kafka_key, {p:String})", {"p": prefix}).scalar()
        if n:
            counts[table] = int(n)
    return counts


def rewind(bootstrap: str, group: str, topics: list[str]) -> None:
    """Commit offset 0 on every partition for `group`: a restart re-reads everything."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=10)
        offsets = [TopicPartition(t, p, 0) for t in topics if t in metadata.topics
                   for p in metadata.topics[t].partitions]
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def test_archiver_archives_every_topic_once_across_restarts(
        kafka_bootstrap: str, settings: Settings, reader: ArchiveBackend) -> None:
    changelog = TopicSpec(s.CHANGELOG, settings.partitions, "aps.AccountState")
    create_topics(kafka_bootstrap, [*topic_specs(settings), changelog])
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    samples = s.samples(prefix, CHAINS)
    garbage = ("account.events", f"{prefix}garbage".encode(), b"\x00 not an APS message")
    produce(kafka_bootstrap, samples, garbage)
    expected = Counter(sample.table for sample in samples)
    expected["undecodable_messages"] += 1
    group = f"aps-archiver-test-{uuid.uuid4().hex[:8]}"

    first = archive_until_caught_up(settings, kafka_bootstrap, group)
    assert own_rows(reader, prefix) == expected
    assert own_rows(reader, prefix, final=False) == expected  # nothing stored twice
    assert first.messages >= sum(expected.values())
    assert first.rows_by_table["commands"] >= expected["commands"]
    reason = reader.query("SELECT reason, payload_hex FROM undecodable_messages FINAL "
                          "WHERE kafka_key = {k:String}", {"k": f"{prefix}garbage"}).rows
    assert reason == [("bad_framing", garbage[2].hex())]

    second = archive_until_caught_up(settings, kafka_bootstrap, group)  # same group: resumes
    assert second.messages == 0
    assert own_rows(reader, prefix, final=False) == expected

    rewind(kafka_bootstrap, group, archived_topics(settings))  # as if commits were lost
    third = archive_until_caught_up(settings, kafka_bootstrap, group)
    assert third.messages >= sum(expected.values())
    assert own_rows(reader, prefix) == expected  # re-archived, still counted once
    stored = own_rows(reader, prefix, final=False)
    assert all(stored[table] >= count for table, count in expected.items())


def test_aps_archiver_command_runs_until_sigterm(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "aps", chains=CHAINS)
    create_topics(kafka_bootstrap, topic_specs(settings))
    prefix = f"c{uuid.uuid4().hex[:8]}-"
    commands = [sample for sample in s.samples(prefix, CHAINS) if sample.table == "commands"]
    produce(kafka_bootstrap, commands, ("oracle.ticks", f"{prefix}junk".encode(), b"junk"))
    env = {**os.environ, "APS_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "APS_DATA_DIR": str(settings.data_dir), "APS_CHAINS": ",".join(CHAINS)}
    env.pop("APS_CLICKHOUSE_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-c", "from streams.cli import main; main()", "archiver",
         "--batch-timeout", "0.1",
         "--group", f"aps-archiver-cli-{uuid.uuid4().hex[:8]}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "; caught up" in line:
                break
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert "archiver: stopped after" in output
    reader = ChdbBackend(settings.chdb_path)  # released by the stopped process
    try:
        assert own_rows(reader, prefix) == Counter(commands=len(commands),
                                                   undecodable_messages=1)
    finally:
        reader.close()
