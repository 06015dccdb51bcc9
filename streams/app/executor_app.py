"""Executor process of one chain: exec.<chain>.commands -> venue -> execution.reports.

Safety properties, in this order:
- a command whose HMAC signature does not verify (forged, altered or unsigned) is refused
  to aps.deadletter and never executed;
- a command for another chain is refused the same way;
- each command id executes at most once: the report is stored in the RocksDB table
  ``executed`` (changelogged) before it is sent, and a command seen again (a redelivery
  after a crash, a replay) gets its stored report re-sent instead of a second execution.
  Reports are sent only once the changelog has acknowledged the batch's new entries, so a
  report on execution.reports always has its entry in the changelog: an executor restarted
  on a fresh data directory recovers every command it executed (with the end offsets
  counted from the records, streams.app.transport), and one restarted on its own data
  directory has them in RocksDB (written before anything is sent).
"""

from __future__ import annotations

from collections.abc import Sequence

import faust
from faust.types import EventT, TopicT

from streams.app.context import event_context
from streams.app.deadletters import DeadLetterSink
from streams.app.factory import batch_agent, new_app, raw_topic
from streams.app.latency import observe_hop, record_ms
from streams.app.metrics import DUPLICATES, EXECUTIONS, MESSAGES
from streams.app.tables import TrackedTable, tracked_table
from streams.clock import EventTimeClock
from streams.codecs import decode, encode
from streams.codecs.signing import verify
from streams.config import Settings
from streams.domain import ExecutionReport, ScalingCommand
from streams.errors import CodecError, ConfigError
from streams.executors import Executor, executor_for, load_chain_profiles
from streams.topics import DEAD_LETTER, EXECUTION_REPORTS, exec_commands, topic_specs

BATCH = 1000
EXECUTED_TABLE = "executed"


def executor_app_id(chain: str) -> str:
    """Faust app id (and consumer group) of a chain's executor."""
    return f"aps-executor-{chain}"


class CommandExecutor:
    """Verifies, de-duplicates and executes commands of one chain."""

    def __init__(self, chain: str, executor: Executor, command_key: str, executed: TrackedTable,
                 reports: TopicT, dead_letters: DeadLetterSink) -> None:
        self.chain = chain
        self.executor = executor
        self.command_key = command_key
        self.executed = executed
        self.reports = reports
        self.dead_letters = dead_letters
        self.clocks: dict[int, EventTimeClock] = {}

    async def process(self, events: Sequence[EventT]) -> None:
        """Handle one batch in order; send its reports once their entries are in the
        changelog."""
        reports: list[tuple[EventT, ScalingCommand, ExecutionReport]] = []
        for event in events:
            handled = self._handle(event)
            if handled is not None:
                reports.append((event, *handled))
        await self.executed.changelog_delivered()
        for event, command, report in reports:
            self.reports.send_soon(key=command.account_id.encode(), value=encode(report))
            observe_hop("command_to_report", record_ms(event))
        MESSAGES.labels(self.dead_letters.stage).inc(len(events))

    def _handle(self, event: EventT) -> tuple[ScalingCommand, ExecutionReport] | None:
        """The command of `event` and its report (stored, or new and stored now), None if
        the command is refused."""
        try:
            command = decode(event.message.value, ScalingCommand)
        except CodecError as exc:
            self.dead_letters.send(event, exc.reason, str(exc))
            return None
        if not verify(command, self.command_key):
            self.dead_letters.send(event, "forged_command",
                                   f"signature of command {command.command_id} does not verify",
                                   command.created_at)
            return None
        if command.chain != self.chain:
            self.dead_letters.send(event, "wrong_chain",
                                   f"command for {command.chain} on the {self.chain} executor",
                                   command.created_at)
            return None
        key = command.command_id.encode()
        clock = self.clocks.setdefault(event.message.partition, EventTimeClock())
        with event_context(event):
            stored = self.executed.get(key)
            if stored is not None:
                DUPLICATES.labels(self.dead_letters.stage).inc()
                report = decode(stored, ExecutionReport)
            else:
                report = self.executor.execute(command, clock.observe(command.created_at))
                self.executed[key] = encode(report)
                EXECUTIONS.labels(self.chain, report.status.value).inc()
        return command, report


def create_executor_app(settings: Settings, bootstrap: str, chain: str) -> faust.App:
    """The Faust app of `chain`'s executor (web and /metrics on APS_WEB_PORT: give each
    process on one host its own)."""
    if chain not in settings.chains:
        raise ConfigError(f"chain {chain!r} is not configured (APS_CHAINS: "
                          f"{','.join(settings.chains)})")
    port = settings.web_port
    app = new_app(executor_app_id(chain), settings, bootstrap, web_port=port,
                  datadir=settings.data_dir / f"executor-{chain}-{port}")
    counts = {spec.name: spec.partitions for spec in topic_specs(settings)}
    commands = raw_topic(app, exec_commands(chain), counts[exec_commands(chain)])
    reports = raw_topic(app, EXECUTION_REPORTS, counts[EXECUTION_REPORTS])
    dead_letters = raw_topic(app, DEAD_LETTER, counts[DEAD_LETTER])
    executed = tracked_table(app, EXECUTED_TABLE, commands.partitions)
    stage = f"executor.{chain}"
    venue = executor_for(chain, load_chain_profiles(settings.chains_file))
    handler = CommandExecutor(chain, venue, settings.command_key, executed,
                              reports, DeadLetterSink(dead_letters, stage))
    batch_agent(app, commands, name=f"execute-{chain}", stage=stage, size=BATCH,
                process=handler.process)

    return app
