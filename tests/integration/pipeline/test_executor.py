"""An executor process against the real broker: forged commands are refused, a command
executes once even when delivered twice and across a restart of the executor."""

from __future__ import annotations

import dataclasses
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Message
from prometheus_client.parser import text_string_to_metric_families

from streams.codecs import decode, encode
from streams.codecs.signing import sign
from streams.config import Settings, load_settings
from streams.domain import DeadLetter, ExecutionReport, ExecutionStatus
from streams.infra.broker import create_topics
from streams.run.stack import Stack
from streams.topics import DEAD_LETTER, EXECUTION_REPORTS, exec_commands, topic_specs
from tests.integration.kafka_helpers import produce, read_topics
from tests.unit.factories import command

pytestmark = pytest.mark.integration
CHAIN = "arbitrum"
CHANGELOG = f"aps-executor-{CHAIN}-executed-changelog"


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    settings = load_settings({}, kafka_bootstrap=kafka_bootstrap, data_dir=tmp_path,
                             command_key="integration-key")
    create_topics(kafka_bootstrap, topic_specs(settings))
    return settings


def _reports(messages: list[Message], command_id: str) -> list[ExecutionReport]:
    reports = [decode(m.value(), ExecutionReport) for m in messages
               if m.topic() == EXECUTION_REPORTS]
    return [r for r in reports if r.command_id == command_id]


def _dead_letters(messages: list[Message], marker: str) -> list[DeadLetter]:
    letters = [decode(m.value(), DeadLetter) for m in messages if m.topic() == DEAD_LETTER]
    return [d for d in letters if marker in d.detail or marker.encode() in d.payload]


def _executions_recorded(bootstrap: str, command_id: str) -> int:
    messages = read_topics(bootstrap, [CHANGELOG], until=lambda m: True, timeout=20, settle=1.0)
    return sum(1 for m in messages if m.key() == command_id.encode())


def _metric(port: int, name: str, labels: dict[str, str]) -> float:
    """The value of one sample of the process's /metrics page (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        page = response.read().decode()
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def _letters_since(bootstrap: str, since_ms: int, stage: str, reason: str,
                   expected: float) -> int:
    """How many dead letters of `stage` and `reason` were written after `since_ms` (other
    tests share the broker: the executor also refuses their unsigned commands)."""
    def count(messages: list[Message]) -> int:
        return sum(1 for m in messages if m.topic() == DEAD_LETTER
                   and m.timestamp()[1] >= since_ms
                   and (d := decode(m.value(), DeadLetter)).stage == stage
                   and d.reason == reason)
    messages = read_topics(bootstrap, [DEAD_LETTER], lambda m: count(m) >= expected,
                           timeout=30, settle=1.0)
    return count(messages)


def test_forged_refused_and_duplicates_executed_once(settings: Settings,
                                                     kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    good = sign(command(f"good-{run}", chain=CHAIN), settings.command_key)
    forged = command(f"forged-{run}", chain=CHAIN)  # unsigned
    tampered = dataclasses.replace(sign(command(f"tampered-{run}", chain=CHAIN),
                                        settings.command_key), quantity=500.0)
    wrong_chain = sign(command(f"wrong-{run}", chain="solana"), settings.command_key)
    topic = exec_commands(CHAIN)
    produce(kafka_bootstrap, topic, [(b"acct-1", encode(good)), (b"acct-1", encode(good)),
                                     (b"acct-1", encode(forged)), (b"acct-1", encode(tampered)),
                                     (b"acct-1", encode(wrong_chain)),
                                     (b"acct-1", f"garbage-{run}".encode())])
    started_ms = int(time.time() * 1000) - 1000
    with Stack(settings, settings.data_dir / "logs", archiver=False) as stack:
        stack.start_processes(worker=False, chains=(CHAIN,))

        def done(messages: list[Message]) -> bool:
            return len(_reports(messages, good.command_id)) >= 2 and len(
                [m for m in messages if m.topic() == DEAD_LETTER]) >= 4

        messages = read_topics(kafka_bootstrap, [EXECUTION_REPORTS, DEAD_LETTER], done,
                               timeout=90, settle=2.0)
        reports = _reports(messages, good.command_id)
        assert len(reports) == 2 and reports[0] == reports[1]  # stored report re-sent
        assert reports[0].status is ExecutionStatus.FILLED
        for bad in (forged, tampered, wrong_chain):
            assert not _reports(messages, bad.command_id), f"{bad.command_id} was executed"
        reasons = {d.reason for d in _dead_letters(messages, run)}
        assert {"forged_command", "wrong_chain", "bad_framing"} <= reasons
        assert _executions_recorded(kafka_bootstrap, good.command_id) == 1
        port, stage = stack.child(f"executor-{CHAIN}").web_port, f"executor.{CHAIN}"
        forged_total = _metric(port, "aps_dead_letters_total",
                               {"stage": stage, "reason": "forged_command"})
        assert forged_total >= 2  # forged and tampered, plus other tests' unsigned commands
        assert _letters_since(kafka_bootstrap, started_ms, stage, "forged_command",
                              forged_total) == forged_total
        assert _metric(port, "aps_duplicates_total", {"stage": stage}) == 1.0

        # the executor restarts and the same command is delivered again: still one execution
        stack.stop_process(f"executor-{CHAIN}")
        produce(kafka_bootstrap, topic, [(b"acct-1", encode(good))])
        stack.start_executor(CHAIN)
        messages = read_topics(kafka_bootstrap, [EXECUTION_REPORTS],
                               lambda m: len(_reports(m, good.command_id)) >= 3, timeout=90)
        assert len({r.report_id for r in _reports(messages, good.command_id)}) == 1
        assert _executions_recorded(kafka_bootstrap, good.command_id) == 1
