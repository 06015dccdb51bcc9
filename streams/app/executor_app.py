"""Executor process of one chain: exec.<chain>.commands -> venue -> execution.reports.

Safety properties, in this order:
- a command whose HMAC signature does not verify with APS_COMMAND_KEY (forged, altered or
  unsigned) is refused to aps.deadletter (``forged_command``) and never executed; one whose
  key id is not ours is also reported once at CRITICAL (streams.app.authenticity);
- a command for another chain is refused the same way (``wrong_chain``);
- a command on another partition than its account's (`account_partition` of the signed
  account id, the partition the risk agent sends it to) is refused (``misrouted_command``);
- each command id executes at most once per chain: the report is stored in the RocksDB
  table ``executed`` (changelogged) before it is sent, and a command seen again (a
  redelivery after a crash, a replay) gets its stored report re-sent instead of a second
  execution. Reports are sent only once the changelog has acknowledged the batch's new
  entries, so a report on execution.reports always has its entry in the changelog: an
  executor restarted on a fresh data directory recovers every command it executed (with the
  end offsets counted from the records, streams.app.transport), and one restarted on its
  own data directory has them in RocksDB. A batch's commands are committed only once its
  reports and dead letters are acknowledged too (streams.app.delivery), so a crash may
  re-send a stored report, never lose one. The lookup reads the partition the command
  arrived on; since a command is only accepted on the one partition its signed account id
  maps to, that partition holds the record of every earlier execution of the id, whatever
  partition or key a copy is sent on;
- the executor's bounds (streams.executors.limits, infra/chains.toml ``[limits]``) and its
  clock (`BoundedClock`, one per executor across its partitions) refuse what a signed
  command should never ask for, as REJECTED reports naming the limit;
- every report is signed with APS_REPORT_KEY, so the risk stage applies only reports an
  executor made.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT

from streams.app.authenticity import SignatureCheck
from streams.app.batchsend import OutputTopic
from streams.app.context import event_context
from streams.app.deadletters import DeadLetterSink
from streams.app.delivery import changelog_delivered, delivered
from streams.app.factory import batch_agent, new_app, output_topic, raw_topic
from streams.app.latency import observe_hop, record_ms
from streams.app.metrics import DUPLICATES, EXECUTIONS, MESSAGES
from streams.app.partitioning import account_partition
from streams.app.tables import tracked_table
from streams.clock import BoundedClock
from streams.codecs import decode
from streams.codecs.signing import sign_encoded
from streams.config import Settings
from streams.domain import ExecutionReport, ScalingCommand
from streams.errors import CodecError, ConfigError
from streams.executors import Executor, executor_for, load_chain_profiles
from streams.executors.limits import (
    ExecutorLimits,
    admit_rate,
    check_command,
    exceeds,
    load_executor_limits,
    rate_refusal,
)
from streams.topics import DEAD_LETTER, EXECUTION_REPORTS, exec_commands, topic_specs

BATCH = 1000
EXECUTED_TABLE = "executed"
CLOCK_TABLE = "executor-clock"
RATE_TABLE = "executor-rate"


def executor_app_id(chain: str) -> str:
    """Faust app id (and consumer group) of a chain's executor."""
    return f"aps-executor-{chain}"


@dataclass(frozen=True, slots=True)
class ExecutorState:
    """The executor's changelogged tables, all partitioned like the commands topic.

    executed: command id -> its signed report. clock: ``clock/<partition>`` -> the clock's
    time when that partition last moved it (the clock restarts at their maximum). rate:
    account id -> created_at of its recently executed commands (the account's partition).
    """

    executed: MutableMapping[bytes, bytes]
    clock: MutableMapping[bytes, bytes]
    rate: MutableMapping[bytes, bytes]

    async def delivered(self) -> None:
        """Wait until the changelogs have every write so far (tables that track them)."""
        await changelog_delivered((self.executed, self.clock, self.rate))


@dataclass(frozen=True, slots=True)
class ExecutorKeys:
    """The key commands are verified with and the key reports are signed with."""

    command_key: str
    report_key: str


def _pack_times(times: tuple[int, ...]) -> bytes:
    return struct.pack(f"<{len(times)}q", *times)


def _unpack_times(raw: bytes | None) -> tuple[int, ...]:
    return () if not raw else struct.unpack(f"<{len(raw) // 8}q", raw)


class CommandExecutor:
    """Verifies, de-duplicates, bounds and executes commands of one chain.

    Its clock (`BoundedClock`) is the executor's notion of now, one for all the partitions it
    consumes: the latest created_at of the new commands it admitted, never moved by a
    command more than `max_clock_lead_ms` ahead (that one is REJECTED). A command executes
    at ``max(clock, created_at)``, so it expires if its own partition lagged past its
    deadline. The clock is kept per partition in the table ``executor-clock`` and restored
    from it at every batch (after a restart or a rebalance).
    """

    def __init__(self, chain: str, executor: Executor, keys: ExecutorKeys,
                 state: ExecutorState, reports: OutputTopic, dead_letters: DeadLetterSink, *,
                 partitions: int, limits: ExecutorLimits | None = None) -> None:
        self.chain = chain
        self.executor = executor
        self.report_key = keys.report_key
        self.commands = SignatureCheck(dead_letters.stage, keys.command_key, "APS_COMMAND_KEY",
                                       "risk worker")
        self.state = state
        self.reports = reports
        self.dead_letters = dead_letters
        self.partitions = partitions
        self.limits = limits or ExecutorLimits()
        self.clock = BoundedClock(self.limits.max_clock_lead_ms)
        self._clock_written: dict[int, int] = {}
        self._sent: list[Awaitable[Any] | None] = []  # the current batch's sends

    async def process(self, events: Sequence[EventT]) -> None:
        """Handle one batch in order; send its reports once their entries are in the
        changelogs."""
        self._restore_clock()
        self._sent = []
        reports = [handled for event in events if (handled := self._handle(event))]
        await self.state.delivered()
        for event, account, raw in reports:
            self._sent.append(self.reports.send_soon(key=account, value=raw))
            observe_hop("command_to_report", record_ms(event))
        MESSAGES.labels(self.dead_letters.stage).inc(len(events))
        # the commands are committed only once their reports and dead letters are sent
        await delivered(self._sent)

    def _restore_clock(self) -> None:
        """Bring the clock up to what the assigned partitions recorded (after a restart or a
        rebalance that brought partitions another process's clock had moved)."""
        for raw in self.state.clock.values():
            self.clock.restore(int(raw))

    def _handle(self, event: EventT) -> tuple[EventT, bytes, bytes] | None:
        """(event, account key, signed report) of an accepted command (its report stored,
        or made and stored now); None if the command was dead-lettered."""
        command = self._accepted(event)
        if command is None:
            return None
        key = command.command_id.encode()
        with event_context(event):
            stored = self.state.executed.get(key)
            if stored is not None:
                DUPLICATES.labels(self.dead_letters.stage).inc()
                raw = stored
            else:
                report = self._decide(command, event.message.partition)
                raw = self.state.executed[key] = sign_encoded(report, self.report_key)
                EXECUTIONS.labels(self.chain, report.status.value).inc()
        return event, command.account_id.encode(), raw

    def _accepted(self, event: EventT) -> ScalingCommand | None:
        """The event's command if it may be executed here, else None (dead-lettered)."""
        try:
            command = decode(event.message.value, ScalingCommand)
        except CodecError as exc:
            self._sent.append(self.dead_letters.send(event, exc.reason, str(exc)))
            return None
        refusal = self._refusal(command, event.message.partition, event.message.value)
        if refusal is not None:
            self._sent.append(self.dead_letters.send(event, *refusal, command.created_at))
            return None
        return command

    def _refusal(self, command: ScalingCommand, partition: int,
                 encoded: bytes) -> tuple[str, str] | None:
        """(reason, detail) of a dead-lettered command (decoded from `encoded`), None if it
        is ours to execute."""
        if not self.commands.authentic(command, encoded):
            return "forged_command", f"signature of command {command.command_id} does not verify"
        if command.chain != self.chain:
            return "wrong_chain", f"command for {command.chain} on the {self.chain} executor"
        home = account_partition(command.account_id, self.partitions)
        if partition != home:
            return "misrouted_command", (f"command {command.command_id} of account "
                                         f"{command.account_id} on partition {partition}, "
                                         f"its account's partition is {home}")
        return None

    def _decide(self, command: ScalingCommand, partition: int) -> ExecutionReport:
        """Execute a new command, or refuse it by a bound (inside the event's context)."""
        now = self.clock.admit(command.created_at)
        if now is None:
            lead = command.created_at - (self.clock.now() or 0)
            return self.executor.refuse(command, exceeds(
                "max_clock_lead_ms", f"created_at is {lead} ms ahead of the executor's clock",
                self.limits))
        if self._clock_written.get(partition) != now:
            self.state.clock[f"clock/{partition}".encode()] = str(now).encode()
            self._clock_written[partition] = now
        reason = check_command(command, self.limits)
        if reason is not None:
            return self.executor.refuse(command, reason)
        account = command.account_id.encode()
        times = admit_rate(_unpack_times(self.state.rate.get(account)), command.created_at,
                           self.limits)
        if times is None:
            return self.executor.refuse(command, rate_refusal(self.limits))
        self.state.rate[account] = _pack_times(times)
        return self.executor.execute(command, now)


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
    reports = output_topic(app, EXECUTION_REPORTS, counts[EXECUTION_REPORTS])
    dead_letters = output_topic(app, DEAD_LETTER, counts[DEAD_LETTER])
    state = ExecutorState(*(tracked_table(app, name, commands.partitions)
                            for name in (EXECUTED_TABLE, CLOCK_TABLE, RATE_TABLE)))
    stage = f"executor.{chain}"
    venue = executor_for(chain, load_chain_profiles(settings.chains_file))
    handler = CommandExecutor(chain, venue, ExecutorKeys(settings.command_key,
                                                         settings.report_key),
                              state, reports, DeadLetterSink(dead_letters, stage),
                              partitions=counts[exec_commands(chain)],
                              limits=load_executor_limits(settings.chains_file, chain))
    batch_agent(app, commands, name=f"execute-{chain}", stage=stage, size=BATCH,
                process=handler.process)

    return app
