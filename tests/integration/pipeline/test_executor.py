"""An executor process against the real broker: forged commands are refused, a command
executes once even when delivered twice, on another partition, and across a restart of the
executor; its reports are signed with its own key; its bounds and its clock refuse what a
signed command should never ask for; the risk stage refuses reports it cannot verify."""

from __future__ import annotations

import dataclasses
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Message
from prometheus_client.parser import text_string_to_metric_families

from streams.app.partitioning import account_partition
from streams.codecs import decode, encode
from streams.codecs.signing import sign, verify
from streams.config import Settings, load_settings
from streams.domain import (
    CommandAction,
    DeadLetter,
    ExecutionReport,
    ExecutionStatus,
    ScalingCommand,
)
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
                             command_key="integration-command-key",
                             report_key="integration-report-key")
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
    home = account_partition(good.account_id, settings.partitions)
    produce(kafka_bootstrap, topic, [(b"acct-1", encode(good)), (b"acct-1", encode(good))],
            partition=home)
    # the same valid command on another partition, under another key: refused, not executed
    produce(kafka_bootstrap, topic, [(b"acct-2", encode(good))],
            partition=(home + 1) % settings.partitions)
    produce(kafka_bootstrap, topic, [(b"acct-1", encode(forged)), (b"acct-1", encode(tampered)),
                                     (b"acct-1", encode(wrong_chain)),
                                     (b"acct-1", f"garbage-{run}".encode())])
    started_ms = int(time.time() * 1000) - 1000
    with Stack(settings, settings.data_dir / "logs", archiver=False) as stack:
        stack.start_processes(worker=False, chains=(CHAIN,))

        def done(messages: list[Message]) -> bool:
            return len(_reports(messages, good.command_id)) >= 2 and len(
                [m for m in messages if m.topic() == DEAD_LETTER]) >= 5

        messages = read_topics(kafka_bootstrap, [EXECUTION_REPORTS, DEAD_LETTER], done,
                               timeout=90, settle=2.0)
        reports = _reports(messages, good.command_id)
        assert len(reports) == 2 and reports[0] == reports[1]  # stored report re-sent
        assert reports[0].status is ExecutionStatus.FILLED
        assert verify(reports[0], settings.report_key)  # signed by the executor's own key
        assert not verify(reports[0], settings.command_key)
        for bad in (forged, tampered, wrong_chain):
            assert not _reports(messages, bad.command_id), f"{bad.command_id} was executed"
        reasons = {d.reason for d in _dead_letters(messages, run)}
        assert {"forged_command", "wrong_chain", "bad_framing", "misrouted_command"} <= reasons
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
        produce(kafka_bootstrap, topic, [(b"acct-1", encode(good))], partition=home)
        stack.start_executor(CHAIN)
        messages = read_topics(kafka_bootstrap, [EXECUTION_REPORTS],
                               lambda m: len(_reports(m, good.command_id)) >= 3, timeout=90)
        assert len({r.report_id for r in _reports(messages, good.command_id)}) == 1
        assert _executions_recorded(kafka_bootstrap, good.command_id) == 1


BOUNDED_CHAIN = "ethereum"  # its own executor group and tables: a clock no other test moved
LIMITS = f"""
[limits.{BOUNDED_CHAIN}]
max_commands_per_account = 2
max_clock_lead_ms = {10 ** 9}  # created_at here is wall time; an earlier run may be days old
"""


@pytest.fixture
def bounded(settings: Settings) -> Settings:
    """`settings` with a chains file whose [limits] make the rate limit easy to reach."""
    path = settings.data_dir / "chains.toml"
    path.write_text(settings.chains_file.read_text() + LIMITS)
    return dataclasses.replace(settings, chains_file=path)


def _accounts(run: str, partitions: int, count: int) -> list[str]:
    """`count` account ids of this run, each on a partition of its own."""
    found: dict[int, str] = {}
    for n in range(1000):
        account = f"acct-{run}-{n}"
        found.setdefault(account_partition(account, partitions), account)
        if len(found) == count:
            return list(found.values())
    raise AssertionError("not enough partitions")


def _signed(settings: Settings, command_id: str, account: str, created_at: int,
            **fields: float) -> ScalingCommand:
    """A command of `account` on the bounded chain, signed with the settings' command key."""
    body = command(command_id, chain=BOUNDED_CHAIN, created_at=created_at,
                   deadline=created_at + 60_000, **fields)  # type: ignore[arg-type]
    return sign(dataclasses.replace(body, account_id=account), settings.command_key)


def _send_home(settings: Settings, commands: list[ScalingCommand]) -> None:
    """Produce each command on its account's partition (as the risk agent does)."""
    for item in commands:
        produce(settings.kafka_bootstrap or "", exec_commands(BOUNDED_CHAIN),
                [(item.account_id.encode(), encode(item))],
                partition=account_partition(item.account_id, settings.partitions))


def _outcomes(settings: Settings, commands: list[ScalingCommand]) -> dict[str, ExecutionReport]:
    """The report of each command (waits until all arrived)."""
    ids = {c.command_id for c in commands}

    def by_id(messages: list[Message]) -> dict[str, ExecutionReport]:
        reports = (decode(m.value(), ExecutionReport) for m in messages)
        return {r.command_id: r for r in reports if r.command_id in ids}
    messages = read_topics(settings.kafka_bootstrap or "", [EXECUTION_REPORTS],
                           lambda m: len(by_id(m)) == len(ids), timeout=90)
    return by_id(messages)


def test_bounds_and_one_clock_per_executor(bounded: Settings) -> None:
    settings, run = bounded, uuid.uuid4().hex[:8]
    base = int(time.time() * 1000)
    a, b, c, d = _accounts(run, settings.partitions, 4)
    first = _signed(settings, f"first-{run}", a, base)
    future = _signed(settings, f"future-{run}", a, base + 10 ** 10)
    after = _signed(settings, f"after-{run}", a, base + 1_000)
    _send_home(settings, [first, future, after])
    with Stack(settings, settings.data_dir / "logs", archiver=False) as stack:
        stack.start_processes(worker=False, chains=(BOUNDED_CHAIN,))
        seen = _outcomes(settings, [first, future, after])
        assert seen[first.command_id].status is ExecutionStatus.FILLED
        # a future-dated command is refused and does not move the clock ...
        assert seen[future.command_id].status is ExecutionStatus.REJECTED
        assert seen[future.command_id].reason.startswith("limit max_clock_lead_ms")
        # ... so the next ordinary command is not expired by it
        assert seen[after.command_id].status is ExecutionStatus.FILLED

        # an old command on a partition that saw nothing yet is judged by the executor's
        # clock, not by its own partition's: it expires
        old = _signed(settings, f"old-{run}", b, base - 120_000)
        rated = [_signed(settings, f"rate{n}-{run}", c, base + 2_000 + n) for n in range(3)]
        large = _signed(settings, f"large-{run}", d, base + 3_000, quantity=4_000.0,
                        slippage_bps=400.0)  # 12M USD, within the venue's slippage bound
        _send_home(settings, [old, *rated, large])
        seen = _outcomes(settings, [old, *rated, large])
        assert seen[old.command_id].status is ExecutionStatus.EXPIRED
        assert [seen[r.command_id].status for r in rated] == [
            ExecutionStatus.FILLED, ExecutionStatus.FILLED, ExecutionStatus.REJECTED]
        assert seen[rated[2].command_id].reason.startswith("limit max_commands_per_account")
        assert seen[large.command_id].status is ExecutionStatus.REJECTED
        assert seen[large.command_id].reason.startswith("limit max_notional_usd")
        assert all(verify(r, settings.report_key) for r in seen.values())


def test_a_command_signed_with_another_key_is_reported_once(bounded: Settings) -> None:
    settings, run = bounded, uuid.uuid4().hex[:8]
    base = int(time.time() * 1000)
    (account,) = _accounts(run, settings.partitions, 1)
    other = dataclasses.replace(settings, command_key="a-key-the-executor-does-not-have")
    strangers = [_signed(other, f"stranger{n}-{run}", account, base + n) for n in range(2)]
    _send_home(settings, strangers)
    stage = f"executor.{BOUNDED_CHAIN}"
    with Stack(settings, settings.data_dir / "logs", archiver=False) as stack:
        stack.start_processes(worker=False, chains=(BOUNDED_CHAIN,))
        messages = read_topics(settings.kafka_bootstrap or "", [DEAD_LETTER],
                               lambda m: len(_dead_letters(m, run)) >= 2, timeout=90)
        assert {d.reason for d in _dead_letters(messages, run)} == {"forged_command"}
        child = stack.child(f"executor-{BOUNDED_CHAIN}")
        # counted every time (a redelivery after a rebalance counts again), logged once
        assert _metric(child.web_port, "aps_key_mismatch_total", {"stage": stage}) >= 2.0
        log = child.log_path.read_text(errors="replace")
        assert log.count("were given different keys") == 1
        assert "CRITICAL" in log


def _report(report_id: str, account: str) -> ExecutionReport:
    """An unsigned FILLED top-up report."""
    return ExecutionReport(report_id, f"cmd-of-{report_id}", account, CHAIN,
                           ExecutionStatus.FILLED, "", CommandAction.TOP_UP, None, 0.0, 0.0,
                           0.0, 5_000.0, 2_000, "sim-arbitrum")


def test_the_risk_stage_refuses_reports_it_cannot_verify(settings: Settings) -> None:
    run = uuid.uuid4().hex[:8]
    account = f"acct-{run}"
    unsigned = _report(f"unsigned-{run}", account)
    tampered = dataclasses.replace(sign(_report(f"tampered-{run}", account),
                                        settings.report_key), top_up_amount=1e9)
    stranger = sign(_report(f"stranger-{run}", account), "not-the-report-key")
    good = sign(_report(f"good-{run}", account), settings.report_key)
    produce(settings.kafka_bootstrap or "", EXECUTION_REPORTS,
            [(account.encode(), encode(r)) for r in (unsigned, tampered, stranger, good)])
    with Stack(settings, settings.data_dir / "logs", archiver=False) as stack:
        stack.start_processes(worker=True, chains=())
        messages = read_topics(settings.kafka_bootstrap or "", [DEAD_LETTER],
                               lambda m: len(_dead_letters(m, run)) >= 3, timeout=120,
                               settle=3.0)
        letters = _dead_letters(messages, run)
        assert {(d.stage, d.reason) for d in letters} == {("risk", "forged_report")}
        refused = " ".join(d.detail for d in letters)
        for bad in (unsigned, tampered, stranger):
            assert bad.report_id in refused
        assert good.report_id not in refused
        port = stack.child("worker").web_port
        assert _metric(port, "aps_key_mismatch_total", {"stage": "risk"}) >= 1.0
