"""The bundled scenario through the whole pipeline on real components: the Tansu broker,
Faust workers and executors as separate processes, Avro on the wire, and the archive in
a ClickHouse server reached by clickhouse-driver.

Checks what came out: commands for accounts whose rules fired and none for the calm ones,
every command executed and reported, every malformed tick dead-lettered with its reason, the
manipulated feed kept out of the consensus price, archive rows equal to topic messages, and
the commands of a replay of each risk partition's log equal to the commands the live run
emitted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections import defaultdict
from pathlib import Path

import pytest
from rich.console import Console

from streams.app.latency import parse_input_header
from streams.archive.backends import open_archive
from streams.codecs import decode
from streams.config import Settings, load_settings
from streams.domain import ConsensusPrice, PriceStatus, RiskInput, ScalingCommand
from streams.errors import DomainError
from streams.replay.audit import ReplayRequest, run_audit
from streams.replay.sources import ArchiveSource
from streams.risk.engine import PartitionEngine
from streams.run.runner import RunOptions, RunReport, run_pipeline
from streams.scenario.bundled import SPIKE_ASSET
from streams.topics import ORACLE_PRICES, RISK_INPUTS, exec_commands
from tests.integration.kafka_helpers import read_topics

pytestmark = pytest.mark.integration

OPTIONS = RunOptions(accounts=80, duration_s=240, speed=6.0, drain_timeout_s=300.0)


@dataclasses.dataclass
class Captured:
    """Topics read before the stack stopped."""

    risk_inputs: dict[int, list[tuple[int, RiskInput]]] = dataclasses.field(
        default_factory=dict)
    commands: list[ScalingCommand] = dataclasses.field(default_factory=list)
    # command id -> the risk.inputs (partition, offset) its `aps-input` header names
    triggers: dict[str, tuple[int, int] | None] = dataclasses.field(default_factory=dict)
    prices: list[ConsensusPrice] = dataclasses.field(default_factory=list)


def _capture(bootstrap: str, chains: tuple[str, ...], into: Captured) -> None:
    """Read risk.inputs (per partition, in offset order), prices and commands."""
    topics = [RISK_INPUTS, ORACLE_PRICES, *(exec_commands(c) for c in chains)]
    messages = read_topics(bootstrap, topics, until=lambda m: True, timeout=60, settle=3.0)
    by_partition: dict[int, list[tuple[int, RiskInput]]] = defaultdict(list)
    for message in messages:
        if message.topic() == RISK_INPUTS:
            by_partition[message.partition()].append(
                (message.offset(), decode(message.value(), RiskInput)))
        elif message.topic() == ORACLE_PRICES:
            into.prices.append(decode(message.value(), ConsensusPrice))
        else:
            command = decode(message.value(), ScalingCommand)
            into.commands.append(command)
            into.triggers[command.command_id] = parse_input_header(message.headers())
    into.risk_inputs = {p: sorted(items, key=lambda x: x[0]) for p, items in by_partition.items()}


@pytest.fixture
def outcome(server_database_url: str,
            tmp_path: Path) -> tuple[RunReport, Captured, Settings]:
    """The bundled scenario run once, archived to a ClickHouse server through
    clickhouse-driver (the embedded backend's archive is checked against the topics by
    tests/integration/archive, through restarts)."""
    # keys of the test's own (not the run's throwaway ones), so the audit replay below can
    # verify the reports and compare the commands' signatures
    settings = load_settings({}, data_dir=tmp_path / "aps", clickhouse_url=server_database_url,
                             command_key="e2e-command-key", report_key="e2e-report-key")
    captured = Captured()
    report = run_pipeline(settings, OPTIONS, Console(file=io.StringIO()),
                          on_drained=lambda bootstrap: _capture(bootstrap, settings.chains,
                                                                captured))
    return report, captured, settings


def test_bundled_scenario_end_to_end(outcome: tuple[RunReport, Captured, Settings]) -> None:
    report, captured, settings = outcome
    scenario = report.scenario

    # every command was executed and reported
    assert report.commands_by_reason, "the crash fired no rule at all"
    assert not report.commands_without_report
    assert sum(report.reports_by_status.values()) == sum(report.commands_by_reason.values())

    # rules fired for stressed accounts, never for the calm ones
    calm = set(scenario.calm_accounts)
    assert calm and not calm & report.accounts_with_commands
    assert len(report.accounts_with_commands) >= 10
    assert {"MARGIN_TOP_UP", "MARGIN_REDUCE"} & set(report.commands_by_reason)

    # malformed ticks are dead-lettered with their reasons, and the worker kept going
    assert {"consensus:bad_framing", "consensus:unknown_feed", "consensus:non_positive_price",
            "sequencer:bad_framing", "risk:invalid_position"} <= set(report.dead_letters_by_reason)

    # the manipulated feed (+30% for a minute) never moved the trusted price above the truth
    true_high = max(price for _, price in scenario.paths[SPIKE_ASSET])
    trusted = [p.price for p in captured.prices
               if p.asset == SPIKE_ASSET and p.status is not PriceStatus.HALTED]
    assert trusted and max(trusted) <= true_high * 1.005

    # the archive holds exactly what went through the topics
    assert report.archive_matches, (report.topic_counts, report.archive_counts)
    backend = open_archive(settings)
    try:
        archived = {row[0] for row in backend.query("SELECT command_id FROM commands FINAL").rows}
    finally:
        backend.close()
    assert archived == {c.command_id for c in captured.commands}

    # replaying each partition's ordered log through a fresh engine gives the same commands
    # (input the engine refuses is skipped, as the risk agent dead-letters it)
    replayed, emitted_by = [], {}
    for partition in sorted(captured.risk_inputs):
        engine = PartitionEngine()
        for offset, item in captured.risk_inputs[partition]:
            with contextlib.suppress(DomainError):
                commands = engine.apply(item)
                replayed += commands
                emitted_by.update({c.command_id: (partition, offset) for c in commands})
    live = {c.command_id: dataclasses.replace(c, signature="") for c in captured.commands}
    assert {c.command_id: c for c in replayed} == live

    # `aps replay`'s audit of the archive decides every command again, signatures included
    backend = open_archive(settings)
    try:
        audit = run_audit(ArchiveSource(backend), settings, ReplayRequest())
    finally:
        backend.close()
    assert audit.comparison.identical, audit.report["differences"][:5]
    assert audit.comparison.matched == len(captured.commands)
    assert audit.report["signatures_compared"] and audit.report["reports_verified"]

    # each command names the input that emitted it (what its latency is measured from)
    assert captured.triggers == emitted_by
