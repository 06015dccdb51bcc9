"""`aps replay` against real archives (chdb and a ClickHouse server) and real topics.

The record is the bundled scenario's history as the pipeline logs it (recorded by the
offline twin, signed with the test's keys), archived by the archiver's own mapping; the
tampering tests change that record before it is archived, as an attacker or a bug would.
(tests/integration/pipeline/test_end_to_end.py replays a live run's archive.)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from streams.archive.backends import ArchiveBackend, ChdbBackend, ServerBackend
from streams.archive.rows import KafkaMessage, record_json
from streams.bench.replay import History, archive_history, recorded_history
from streams.cli import app
from streams.codecs.avro import decode, encode, to_datum
from streams.codecs.signing import sign
from streams.config import Settings
from streams.domain import AccountEvent, RiskInput, RulesChanged, ScalingCommand
from streams.infra.broker import create_topics, producer_config
from streams.replay.audit import ReplayRequest, run_audit
from streams.replay.sources import ArchiveSource, TopicSource
from streams.topics import TopicSpec

pytestmark = pytest.mark.integration

KEYS = {"APS_COMMAND_KEY": "replay-test-command-key", "APS_REPORT_KEY": "replay-test-report-key"}
SETTINGS = Settings(command_key=KEYS["APS_COMMAND_KEY"], report_key=KEYS["APS_REPORT_KEY"],
                    given=frozenset({"command_key", "report_key"}))


@cache
def history() -> History:
    """The bundled scenario (60 accounts, 150 s of event time) over two risk partitions."""
    return recorded_history(accounts=60, duration_s=150, partitions=2,
                            command_key=KEYS["APS_COMMAND_KEY"],
                            report_key=KEYS["APS_REPORT_KEY"])


@pytest.fixture(params=["chdb", "server"])
def archive(request: pytest.FixtureRequest, tmp_path: Path
            ) -> Iterator[tuple[dict[str, str | None], ArchiveBackend]]:
    """(environment for the CLI, an empty archive it points at), on both backends."""
    backend: ArchiveBackend
    if request.param == "chdb":
        env: dict[str, str | None] = {"APS_DATA_DIR": str(tmp_path / "aps"),
                                      "APS_CLICKHOUSE_URL": None}
        backend = ChdbBackend(tmp_path / "aps" / "chdb")
    else:
        url = request.getfixturevalue("server_database_url")
        env = {"APS_CLICKHOUSE_URL": url}
        backend = ServerBackend(url)
    try:
        yield {**env, **KEYS}, backend
    finally:
        backend.close()


def _commands(record: History) -> list[ScalingCommand]:
    return [decode(m.value, ScalingCommand) for m in record.commands]


def _replay_cli(env: dict[str, str | None], *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    report = Path(str(env.get("APS_DATA_DIR") or "/tmp")).parent / "replay.json"
    result = CliRunner().invoke(app, ["replay", "-o", str(report), *args], env=env)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(report.read_text())


def test_a_replay_of_the_archived_history_reports_no_difference(archive) -> None:  # type: ignore[no-untyped-def]
    env, backend = archive
    archive_history(backend, history().messages)
    code, report = _replay_cli(env)
    assert code == 0
    assert report["identical"] is True
    assert report["kind"] == "audit" and report["format_version"] == 1
    n = len(history().commands)
    assert report["summary"] == {"recorded": n, "replayed": n, "matched": n, "missing": 0,
                                 "extra": 0, "changed": 0}
    assert report["signatures_compared"] is True and report["reports_verified"] is True
    assert [p["read"] for p in report["partitions"]] == [
        sum(m.partition == p for m in history().inputs) for p in (0, 1)]


def test_a_deleted_a_changed_and_a_foreign_command_are_each_reported(archive) -> None:  # type: ignore[no-untyped-def]
    env, backend = archive
    messages = list(history().commands)
    deleted, changed = messages[10], messages[20]
    original = decode(changed.value, ScalingCommand)
    # a tampered record: the quantity changed, its signature left as it was
    tampered = dataclasses.replace(original, quantity=original.quantity * 1.5)
    victim = decode(messages[30].value, ScalingCommand)
    foreign = sign(dataclasses.replace(victim, command_id="f" * 32, quantity=123.0),
                   "an-attackers-key")
    messages = [dataclasses.replace(m, value=encode(tampered)) if m is changed else m
                for m in messages if m is not deleted]
    last = messages[-1]
    messages.append(KafkaMessage(last.topic, last.partition, last.offset + 1,
                                 foreign.account_id.encode(), encode(foreign),
                                 last.timestamp + 1))
    archive_history(backend, [*history().inputs, *messages])

    code, report = _replay_cli(env)
    assert code == 1 and report["identical"] is False
    kinds = {d["command_id"]: d for d in report["differences"]}
    deleted_id = decode(deleted.value, ScalingCommand).command_id
    assert set(kinds) == {deleted_id, original.command_id, foreign.command_id}
    assert kinds[deleted_id]["kind"] == "missing"
    assert kinds[foreign.command_id]["kind"] == "extra"
    assert kinds[foreign.command_id]["account_id"] == victim.account_id
    assert kinds[original.command_id]["kind"] == "changed"
    assert kinds[original.command_id]["fields"] == [
        {"field": "quantity", "recorded": tampered.quantity, "replayed": original.quantity}]
    summary = report["summary"]
    assert (summary["missing"], summary["extra"], summary["changed"]) == (1, 1, 1)
    first = min(report["differences"], key=lambda d: (d["event_time"], d["input_offset"]))
    assert report["first_divergence"]["command_id"] == first["command_id"]


def test_a_second_replay_writes_a_byte_identical_report(tmp_path: Path) -> None:
    env: dict[str, str | None] = {"APS_DATA_DIR": str(tmp_path / "aps"),
                                  "APS_CLICKHOUSE_URL": None, **KEYS}
    backend = ChdbBackend(tmp_path / "aps" / "chdb")
    archive_history(backend, history().messages)
    backend.close()
    runner = CliRunner()
    texts = []
    for name in ("one.json", "two.json"):
        result = runner.invoke(app, ["replay", "--from", "2026-01-15T12:01:00",
                                     "--to", "2026-01-15T12:02:00", "-o",
                                     str(tmp_path / name)], env=env)
        assert result.exit_code == 0, result.output
        texts.append((tmp_path / name).read_bytes())
    assert texts[0] == texts[1]
    report = json.loads(texts[0])
    assert report["period"]["from_iso"] == "2026-01-15T12:01:00.000Z"
    created = [c.created_at for c in _commands(history())]
    assert report["summary"]["recorded"] == sum(
        report["period"]["from"] <= t <= report["period"]["to"] for t in created) > 0


def test_the_retained_topics_replay_like_the_archive(kafka_bootstrap: str) -> None:
    record = history()
    prefix = f"replay-{id(record)}"
    inputs, dead, commands = f"{prefix}.inputs", f"{prefix}.dead", f"{prefix}.commands"
    create_topics(kafka_bootstrap, [TopicSpec(inputs, 2, "aps.RiskInput"),
                                    TopicSpec(dead, 1, "aps.DeadLetter"),
                                    TopicSpec(commands, 1, "aps.ScalingCommand")])
    producer = Producer(producer_config(kafka_bootstrap))
    for m in record.inputs:
        producer.produce(inputs, key=m.key, value=m.value, partition=m.partition)
    for m in record.commands:
        producer.produce(commands, key=m.key, value=m.value, partition=0)
    assert producer.flush(60) == 0
    source = TopicSource(kafka_bootstrap, ["ethereum"], inputs_topic=inputs,
                         dead_letter_topic=dead, commands_topic=lambda _chain: commands)
    result = run_audit(source, SETTINGS, ReplayRequest())
    assert result.comparison.identical
    assert result.comparison.matched == len(record.commands)
    assert source.forged_reports(0) == set()


def test_a_what_if_rule_change_shows_exactly_the_affected_accounts_commands(archive) -> None:  # type: ignore[no-untyped-def]
    env, backend = archive
    archive_history(backend, history().messages)
    counts: dict[str, int] = {}
    for command in _commands(history()):
        counts[command.account_id] = counts.get(command.account_id, 0) + 1
    account = max(counts, key=lambda a: (counts[a], a))
    # the account's recorded rules, as the archive writes a RulesChanged body
    events = [decode(m.value, RiskInput).body for m in history().inputs]
    recorded = next(e.body for e in events if isinstance(e, AccountEvent)
                    and e.account_id == account and isinstance(e.body, RulesChanged))
    body = json.loads(record_json(to_datum(recorded)))
    body["rules"]["margin_ladder"] = None
    body["rules"]["delta_band"] = None
    body["rules"]["vol_scaling"] = None
    rules_file = Path(str(env.get("APS_DATA_DIR") or "/tmp")).parent / "rules.json"
    rules_file.write_text(json.dumps({"accounts": {account: body}}))

    code, report = _replay_cli(env, "--what-if", "--rules", str(rules_file))
    assert code == 1 and report["kind"] == "what-if"
    assert report["baseline_matches_record"] is True
    assert {d["account_id"] for d in report["commands"]} == {account}
    assert report["summary"]["removed"] == counts[account]
    row = next(a for a in report["accounts"] if a["account_id"] == account)
    assert row["commands"] == {"recorded": counts[account], "what_if": 0}


def test_a_what_if_with_other_engine_settings_names_both_hashes(tmp_path: Path) -> None:
    env: dict[str, str | None] = {"APS_DATA_DIR": str(tmp_path / "aps"),
                                  "APS_CLICKHOUSE_URL": None, **KEYS}
    backend = ChdbBackend(tmp_path / "aps" / "chdb")
    archive_history(backend, history().messages)
    backend.close()
    settings_file = tmp_path / "engine.toml"
    settings_file.write_text("[policy]\nprotective_slippage_bps = 150.0\n")
    runner = CliRunner()
    refused = runner.invoke(app, ["replay", "--engine-config", str(settings_file)], env=env)
    assert refused.exit_code == 2 and "never to an audit" in refused.output

    report_file = tmp_path / "what-if.json"
    result = runner.invoke(app, ["replay", "--what-if", "--engine-config", str(settings_file),
                                 "-o", str(report_file)], env=env)
    assert result.exit_code == 1, result.output
    report = json.loads(report_file.read_text())
    hashes = report["engine_config_hash"]
    assert report["kind"] == "what-if" and hashes["recorded"] != hashes["what_if"]
    changed = [d for d in report["commands"] if d["kind"] == "changed"]
    assert changed, "another settings hash changes every command's provenance"
    assert all(any(f["field"] == "provenance.config_hash"
                   and f["recorded"] == hashes["recorded"] and f["what_if"] == hashes["what_if"]
                   for f in d["fields"]) for d in changed)
    assert "what-if, not an audit" in result.output


def test_an_archive_of_several_runs_is_replayed_on_its_newest_log(tmp_path: Path) -> None:
    """A server archive outlives the embedded broker, whose offsets restart at 0 per run:
    the replay reads the newest log only (its Kafka timestamps are later)."""
    backend = ChdbBackend(tmp_path / "chdb")
    try:
        older = recorded_history(accounts=20, duration_s=90, partitions=2,
                                 command_key=KEYS["APS_COMMAND_KEY"],
                                 report_key=KEYS["APS_REPORT_KEY"])
        archive_history(backend, older.messages)
        later = max(m.timestamp for m in older.messages) + 1_000
        newer = [dataclasses.replace(m, timestamp=m.timestamp - history().inputs[0].timestamp
                                     + later) for m in history().messages]
        archive_history(backend, newer)
        result = run_audit(ArchiveSource(backend), SETTINGS, ReplayRequest())
    finally:
        backend.close()
    assert result.comparison.identical
    assert result.comparison.matched == len(history().commands)
    assert [p["read"] for p in result.report["partitions"]] == [
        sum(m.partition == p for m in history().inputs) for p in (0, 1)]
