"""The run monitor's bookkeeping of what it read (no broker: records are handed to it)."""

from __future__ import annotations

import dataclasses

from streams.codecs.avro import encode
from streams.config import Settings
from streams.run.monitor import TopicMonitor
from streams.topics import EXECUTION_REPORTS, exec_commands
from tests.integration.archive import samples as s


def test_commands_without_a_report_are_named() -> None:
    monitor = TopicMonitor("127.0.0.1:1", Settings())  # never started: nothing is consumed
    try:
        commands = [s.command("acct-1", n) for n in range(5)]
        for offset, command in enumerate(commands):
            monitor._record(exec_commands(command.chain), encode(command), s.T0, 0, offset)
        for command in commands[:3]:
            report = dataclasses.replace(s.report(command.account_id, 0),
                                         command_id=command.command_id)
            monitor._record(EXECUTION_REPORTS, encode(report), s.T0, 0)
        assert monitor.unreported() == 2
        assert monitor.unreported_ids() == sorted(c.command_id for c in commands[3:])
        assert monitor.unreported_ids(limit=1) == sorted(c.command_id for c in commands[3:])[:1]
        assert monitor.errors == 0
    finally:
        monitor._consumer.close()
