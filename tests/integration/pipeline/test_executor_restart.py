"""An executor SIGKILLed after executing a burst of commands and restarted on a fresh data
directory executes none of them again: its `executed` table is rebuilt from the whole
changelog, although Tansu reports the changelog's high watermark as the base offset of its
last (multi-record) batch + 1."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.app.partitioning import account_partition
from streams.codecs import decode, encode
from streams.codecs.signing import sign
from streams.config import load_settings
from streams.domain import ExecutionReport
from streams.run.stack import Stack
from streams.topics import EXECUTION_REPORTS, exec_commands
from tests.integration.kafka_helpers import produce, read_topics
from tests.unit.factories import command

pytestmark = pytest.mark.integration

CHAIN = "arbitrum"
CHANGELOG = f"aps-executor-{CHAIN}-executed-changelog"
COMMANDS = 300


def _executions(port: int) -> float:
    """Commands the executor on `port` executed (not re-sent) since it started."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        page = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(page)
               for sample in family.samples if sample.name == "aps_executions_total")


def test_fresh_restart_executes_no_command_twice(tmp_path: Path) -> None:
    settings = load_settings({}, data_dir=tmp_path / "aps", command_key="integration-key")
    signed = [sign(command(f"burst-{i}", chain=CHAIN), settings.command_key)
              for i in range(COMMANDS)]
    ids = {c.command_id for c in signed}
    records = [(b"acct-1", encode(c)) for c in signed]
    # the executor takes an account's commands only on the account's partition
    home = account_partition("acct-1", settings.partitions)

    def reports(bootstrap: str, at_least: int) -> list[ExecutionReport]:
        def ours(messages: list) -> list[ExecutionReport]:
            found = [decode(m.value(), ExecutionReport) for m in messages]
            return [r for r in found if r.command_id in ids]
        messages = read_topics(bootstrap, [EXECUTION_REPORTS],
                               lambda m: len(ours(m)) >= at_least, timeout=90, settle=1.0)
        return ours(messages)

    with Stack(settings, tmp_path / "logs", archiver=False) as stack:
        bootstrap = stack.start_broker()
        produce(bootstrap, exec_commands(CHAIN), records, home)
        stack.start_executor(CHAIN)
        first = {r.command_id: r for r in reports(bootstrap, COMMANDS)}
        assert set(first) == ids
        stack.kill_process(f"executor-{CHAIN}")

        # fresh data directory (another web port): the table comes from the changelog only
        stack.start_executor(CHAIN)
        port = stack.child(f"executor-{CHAIN}").web_port
        produce(bootstrap, exec_commands(CHAIN), records, home)  # every command delivered again
        again = reports(bootstrap, 2 * COMMANDS)  # the first run's and the restarted one's
        assert _executions(port) == 0, "the restarted executor executed commands again"
        assert all(r == first[r.command_id] for r in again)  # stored reports re-sent
        entries = read_topics(bootstrap, [CHANGELOG], until=lambda m: True, timeout=30,
                              settle=1.0)
        per_id: dict[bytes, int] = {}
        for message in entries:
            per_id[message.key()] = per_id.get(message.key(), 0) + 1
        assert len(per_id) == COMMANDS and set(per_id.values()) == {1}
