"""`aps bench replay`: how fast an audit replays the bundled scenario's whole history.

The history is recorded by the offline twin of `aps run` (streams.run.offline: the same
consensus, engines and venue, no broker): every entry each partition's engine applied, in
order, becomes a `risk.inputs` message and every command an `exec.<chain>.commands` message,
signed as the worker and the executors sign them. `recorded_history` is also what the
replay tests archive and then tamper with.

The benchmark archives it into a fresh embedded archive (chdb) and times, in one run:
reading and decoding the archived entries alone, the engine over the decoded entries alone,
and `aps replay`'s audit end to end (read, decode, engine, compare). Figures are entries
per second and per CPU second (this machine is shared; CPU time moves less than wall time).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streams.app.partitioning import account_partition
from streams.archive.archiver import insert_tables
from streams.archive.backends import ArchiveBackend, ChdbBackend
from streams.archive.columnar import MessageBatch, open_mapper
from streams.archive.migrations import migrate
from streams.archive.rows import KafkaMessage
from streams.codecs.avro import encode
from streams.codecs.signing import sign
from streams.config import Settings
from streams.domain import ExecutionReport, RiskInput, ScalingCommand
from streams.errors import DomainError
from streams.executors.chains import load_chain_profiles
from streams.oracle.feeds import load_feeds
from streams.replay.audit import ReplayRequest, run_audit
from streams.replay.sources import ArchiveSource
from streams.risk.engine import EngineConfig, PartitionEngine
from streams.run.offline import run_offline
from streams.scenario.bundled import bundled_scenario
from streams.topics import RISK_INPUTS, exec_commands

# broker timestamps of the recorded messages: any fixed epoch-ms origin (deterministic)
RECORDED_AT = 1_700_000_000_000


@dataclass(frozen=True, slots=True)
class History:
    """A recorded history: the messages of risk.inputs and of the commands topics."""

    inputs: list[KafkaMessage]
    commands: list[KafkaMessage]

    @property
    def messages(self) -> list[KafkaMessage]:
        """Every message, inputs first."""
        return [*self.inputs, *self.commands]


def recorded_history(*, accounts: int = 400, seed: int = 7, duration_s: int = 300,
                     partitions: int = 1, command_key: str, report_key: str,
                     config: EngineConfig | None = None) -> History:
    """The bundled scenario's history as the pipeline would log it (see module doc)."""
    settings = Settings()
    scenario = bundled_scenario(accounts, seed, duration_s, settings.feeds_file, settings.chains)
    inputs: list[KafkaMessage] = []
    commands: list[KafkaMessage] = []
    offsets = [0] * partitions
    command_offsets: dict[str, int] = {}

    def on_applied(partition: int, entry: RiskInput, decided: list[ScalingCommand]) -> None:
        body = entry.body
        if isinstance(body, ExecutionReport):
            entry = RiskInput(entry.origin_topic, entry.origin_partition, entry.origin_offset,
                              sign(body, report_key))
        key = getattr(body, "account_id", "").encode() or None
        inputs.append(KafkaMessage(RISK_INPUTS, partition, offsets[partition], key,
                                   encode(entry), RECORDED_AT + len(inputs)))
        offsets[partition] += 1
        for command in decided:
            topic = exec_commands(command.chain)
            offset = command_offsets.get(topic, 0)
            command_offsets[topic] = offset + 1
            commands.append(KafkaMessage(topic, 0, offset, command.account_id.encode(),
                                         encode(sign(command, command_key)),
                                         RECORDED_AT + len(inputs)))

    run_offline(scenario, load_feeds(settings.feeds_file),
                load_chain_profiles(settings.chains_file), partitions, config,
                on_applied=on_applied)
    assert all(account_partition(m.key.decode(), partitions) == m.partition
               for m in inputs if m.key)
    return History(inputs, commands)


def archive_history(backend: ArchiveBackend, messages: list[KafkaMessage],
                    batch: int = 20_000) -> None:
    """Map and insert `messages` as the archiver does (column-wise, batch by batch)."""
    migrate(backend)
    mapper = open_mapper(backend)
    try:
        for start in range(0, len(messages), batch):
            tables = mapper.map(MessageBatch.of(messages[start:start + batch]),
                                RECORDED_AT // 1000)
            insert_tables(backend, tables)
    finally:
        mapper.close()


def _timed(work: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def run(accounts: int = 400, partitions: int = 1, seed: int = 7) -> None:
    """Record, archive and replay the bundled scenario; print entries/s per stage."""
    keys = {"command_key": "bench-command-key", "report_key": "bench-report-key"}
    print(f"recording the bundled scenario offline: {accounts} accounts, {partitions} "
          "partition(s) ...", flush=True)
    history = recorded_history(accounts=accounts, seed=seed, partitions=partitions, **keys)
    settings = Settings(**keys, given=frozenset(keys))
    with tempfile.TemporaryDirectory(prefix="aps-bench-replay-") as tmp:
        backend = ChdbBackend(Path(tmp) / "chdb")
        try:
            archive_history(backend, history.messages)
            _measure(ArchiveSource(backend), settings, len(history.inputs))
        finally:
            backend.close()


def _measure(source: ArchiveSource, settings: Settings, entries: int) -> None:
    decoded: dict[int, list[RiskInput]] = {}

    def read() -> None:
        for p in source.partitions():
            decoded[p] = [e.item for page in source.inputs(p, source.end_offset(p, None))
                          for e in page if e.item is not None]

    def engine_only() -> None:
        for items in decoded.values():
            engine = PartitionEngine()
            for item in items:
                with contextlib.suppress(DomainError):
                    engine.apply(item)

    outcome: list[bool] = []

    def audit() -> None:
        outcome.append(run_audit(source, settings, ReplayRequest()).comparison.identical)

    figures = {"read": _timed(read), "engine": _timed(engine_only), "audit": _timed(audit)}
    print(f"{entries} risk inputs archived (chdb); audit identical: {outcome[0]}")
    for name, label in (("read", "read + decode from chdb"), ("engine", "engine alone"),
                        ("audit", "aps replay audit, end to end")):
        wall, cpu = figures[name]
        print(f"  {label:32s} {entries / wall:>10,.0f} inputs/s  "
              f"({entries / max(cpu, 1e-9):,.0f} per CPU-second, {wall:.2f} s)")
    print("RESULT " + " ".join(f"{name}_inputs_per_s={entries / wall:.0f}"
                               for name, (wall, _) in figures.items())
          + f" inputs={entries} identical={int(outcome[0])}")
