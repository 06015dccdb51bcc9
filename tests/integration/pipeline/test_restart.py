"""The risk worker SIGKILLed in the middle of its batches and restarted, on the same data
directory, on a fresh one, and on its own after losing a local write: the state it ends
with is exactly what a replay of risk.inputs gives, and every command of the replay was
emitted (none lost, none invented).

The log is written to risk.inputs (account events, consensus prices copied to every
partition, and the execution report of each command right after the price that caused it,
as the offline twin settles them), a part before each run starts, so every run has a
backlog on every partition and processes it in full batches. Each killed run is killed once
its consumer group has committed, so the next one resumes from committed offsets its
restored state may be behind or ahead of. The final account states are read from the
table's changelog after a clean stop.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rocksdict import Options, Rdict

from streams.app.partitioning import account_partition
from streams.codecs import decode, encode
from streams.codecs.signing import sign
from streams.config import Settings, load_settings
from streams.domain import AccountState, ConsensusPrice, PriceStatus, RiskInput, ScalingCommand
from streams.executors.chains import load_chain_profiles
from streams.executors.settlement import Settlement
from streams.infra.broker import client_config
from streams.risk.bookgen import generate_book
from streams.risk.engine import PartitionEngine
from streams.run.stack import Stack
from streams.topics import (
    ACCOUNT_EVENTS,
    EXECUTION_REPORTS,
    ORACLE_PRICES,
    RISK_INPUTS,
    exec_commands,
)
from tests.integration.kafka_helpers import produce, read_topics

pytestmark = pytest.mark.integration

PARTITIONS = 4
ACCOUNTS = 100
STEPS = 160
START_PRICES = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}
ACCOUNTS_CHANGELOG = "aps-risk-accounts-changelog"
# fields an engine refreshes on every revaluation and persists only when they moved far
# enough (EngineConfig.persist_ratio_step): the table may hold an older figure by design
REVALUED = ("valuation", "min_margin_ratio", "breached_maintenance")


@dataclasses.dataclass
class Log:
    """risk.inputs as written, and what a replay of it through fresh engines gives."""

    by_partition: dict[int, list[RiskInput]]
    states: dict[str, AccountState]
    command_ids: set[str]

    @property
    def total(self) -> int:
        """Records in the whole log."""
        return sum(len(items) for items in self.by_partition.values())


def _price(asset: str, start: float, step: int) -> ConsensusPrice:
    """A crash: -35% over the first 60% of the steps, with a small wobble."""
    factor = 1 - 0.35 * min(1.0, step / (STEPS * 0.6)) + 0.02 * math.sin(step / 3)
    value = start * factor
    return ConsensusPrice(asset, 1_000 + step * 1_000, value, value * 1e-4, PriceStatus.OK,
                          1.0, ["test"], [], [], step + 1)


REPORT_KEY = "restart-test-report-key"


def _build_log(settings: Settings) -> Log:
    """The log, built by applying each entry to the partition's engine as it is appended
    (so the engines end as a replay of the log would)."""
    engines = [PartitionEngine() for _ in range(PARTITIONS)]
    settlement = Settlement(load_chain_profiles(settings.chains_file))
    log: dict[int, list[RiskInput]] = {p: [] for p in range(PARTITIONS)}
    commands: set[str] = set()

    def append(partition: int, item: RiskInput) -> list[ScalingCommand]:
        log[partition].append(item)
        return engines[partition].apply(item)

    for event in generate_book(START_PRICES, ACCOUNTS, seed=11):
        partition = account_partition(event.account_id, PARTITIONS)
        append(partition, RiskInput(ACCOUNT_EVENTS, partition, len(log[partition]), event))
    reports = 0
    for step in range(STEPS):
        for index, (asset, start) in enumerate(START_PRICES.items()):
            price = RiskInput(ORACLE_PRICES, 0, step * len(START_PRICES) + index,
                              _price(asset, start, step))
            for partition in range(PARTITIONS):
                for command in append(partition, price):
                    commands.add(command.command_id)
                    # signed as an executor would: the worker applies only verified reports
                    report = sign(settlement.settle(command), REPORT_KEY)
                    append(partition, RiskInput(EXECUTION_REPORTS, 0, reports, report))
                    reports += 1
    states = {s.account_id: s for engine in engines for s in engine.accounts()}
    return Log(log, states, commands)


@pytest.fixture(scope="module")
def log() -> Log:
    """The log of every test of this module (built once: it takes seconds)."""
    return _build_log(load_settings({}))


def _messages(port: int) -> float:
    """Risk inputs the worker on `port` has processed (0 while it starts)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                    timeout=2) as response:
            page = response.read().decode()
    except OSError:
        return 0.0
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == "aps_messages_total" and sample.labels == {"stage": "risk"}:
                return sample.value
    return 0.0


def _wait(condition: Callable[[], bool], stack: Stack, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        stack.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


def _committed(bootstrap: str) -> dict[int, int]:
    """Offsets the worker's consumer group has committed on risk.inputs."""
    consumer = Consumer(client_config(bootstrap, **{"group.id": "aps",
                                                    "enable.auto.commit": False}))
    try:
        found = consumer.committed([TopicPartition(RISK_INPUTS, p) for p in range(PARTITIONS)],
                                   timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found}


def _stored_end(bootstrap: str, partition: int) -> int:
    """End offset the broker reports for one partition of the accounts changelog (it moves
    when the worker stores account states there; -1 before the worker created it)."""
    consumer = Consumer(client_config(bootstrap, **{"group.id": "aps-tests"}))
    try:
        return consumer.get_watermark_offsets(TopicPartition(ACCOUNTS_CHANGELOG, partition),
                                              timeout=10)[1]
    except KafkaException:
        return -1
    finally:
        consumer.close()


def _final_states(bootstrap: str) -> dict[str, AccountState]:
    """The latest value of each key of the accounts table's changelog."""
    latest: dict[str, AccountState | None] = {}
    for message in read_topics(bootstrap, [ACCOUNTS_CHANGELOG], until=lambda m: True,
                               timeout=60, settle=1.0):
        value = message.value()
        latest[message.key().decode()] = None if value is None else decode(value,
                                                                         AccountState)
    return {key: state for key, state in latest.items() if state is not None}


def _comparable(state: AccountState) -> AccountState:
    return dataclasses.replace(state, **{name: getattr(AccountState(""), name)
                                         for name in REVALUED})


# how each killed run is restarted: on its data directory, on a fresh one, or on its data
# directory after the loss of one local write (the state no longer matches its checkpoint:
# discarded, the partition's log re-applied)
KILLS = ("same-dir", "fresh-dir", "lost-write")


def _lose_a_write(datadir: Path) -> None:
    """Delete one account state from partition 0's RocksDB files (the worker is down)."""
    db = Rdict(str(datadir / "v1" / "tables" / "risk-accounts-0.db"),
               Options(raw_mode=True))
    try:
        stored = db.keys()
        key = next(k for k in stored if not k.startswith(b"__faust"))
        del db[key]
    finally:
        db.close()


def test_sigkill_mid_batch_then_restart(log: Log, tmp_path: Path) -> None:
    """SIGKILL the worker once its i-th run has committed and restart it as `KILLS[i]`
    says, let the last run drain the log; then compare with the replay."""
    settings = load_settings({}, data_dir=tmp_path / "aps", partitions=PARTITIONS,
                             report_key=REPORT_KEY)
    with Stack(settings, tmp_path / "logs", archiver=False) as stack:
        bootstrap = stack.start_broker()
        # each run gets a new part of the log before it starts (so every run has work on
        # every partition): two fifths, then a fifth for each of the next three runs
        records = {partition: [(str(i).encode(), encode(item)) for i, item in enumerate(items)]
                   for partition, items in log.by_partition.items()}
        cuts = {partition: [0, *(len(items) * share // 5 for share in (2, 3, 4)), len(items)]
                for partition, items in records.items()}

        def produce_part(run: int) -> None:
            for partition, items in records.items():
                start, end = cuts[partition][run], cuts[partition][run + 1]
                produce(bootstrap, RISK_INPUTS, items[start:end], partition)
        port: int | None = None
        for run, restart in enumerate(KILLS):
            before = _committed(bootstrap)
            stored_before = _stored_end(bootstrap, 0)
            produce_part(run)
            stack.start_worker(web_port=port)
            port = stack.child("worker").web_port

            def progressed(port: int = port, before: dict[int, int] = before,
                           stored_before: int = stored_before, restart: str = restart) -> bool:
                # killed once this run has processed input and committed: the next one
                # resumes from the group's offsets; a run whose local write is lost has
                # first stored partition 0's states (the risk stage persists every 200 ms,
                # and a commit can come first)
                return (_messages(port) > 0 and _committed(bootstrap) != before
                        and (restart != "lost-write"
                             or _stored_end(bootstrap, 0) != stored_before))
            _wait(progressed, stack, 90, "a commit")
            stack.kill_process("worker")
            if restart == "fresh-dir":
                shutil.rmtree(settings.data_dir / f"worker-{port}")
                port = None
            elif restart == "lost-write":
                _lose_a_write(settings.data_dir / f"worker-{port}")
        produce_part(len(KILLS))
        stack.start_worker(web_port=port)
        expected = {p: len(items) for p, items in log.by_partition.items()}
        _wait(lambda: _committed(bootstrap) == expected, stack, 120, "the end of the log")
        stack.stop_process("worker")

        # risk.inputs holds the log exactly as built (the replay below is of this log)
        written: dict[int, list[tuple[int, RiskInput]]] = defaultdict(list)
        commands: set[str] = set()
        topics = [RISK_INPUTS, *(exec_commands(chain) for chain in settings.chains)]
        for message in read_topics(bootstrap, topics, until=lambda m: True, timeout=60,
                                   settle=1.0):
            if message.topic() == RISK_INPUTS:
                written[message.partition()].append(
                    (message.offset(), decode(message.value(), RiskInput)))
            else:
                commands.add(decode(message.value(), ScalingCommand).command_id)
        assert {p: [item for _, item in sorted(items, key=lambda x: x[0])]
                for p, items in written.items()} == log.by_partition

        final = _final_states(bootstrap)
    assert sorted(final) == sorted(log.states)
    differing = [account for account, state in log.states.items()
                 if _comparable(final[account]) != _comparable(state)]
    assert not differing, (f"{len(differing)} accounts differ from the replay, e.g. "
                           f"{differing[0]}: version {final[differing[0]].version} live, "
                           f"{log.states[differing[0]].version} replayed")
    assert commands == log.command_ids, (len(commands - log.command_ids),
                                         len(log.command_ids - commands))
