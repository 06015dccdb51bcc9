"""Refusals in the archive: typed columns, `history.refusals` and `aps history refusals`,
on chdb and on the server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.archive import history
from streams.archive.backends import ArchiveBackend, ChdbBackend, ServerBackend
from streams.archive.migrations import migrate
from streams.archive.rows import KafkaMessage
from streams.cli import app
from streams.codecs.avro import encode
from streams.domain import ActionRefused
from tests.integration.archive import samples as s
from tests.integration.archive.samples import ARCHIVED_AT, insert_messages

# (account, reason, rule, seconds after T0)
REFUSED = [("acct-0", "cooldown", "delta_band:ETH", 1), ("acct-1", "max_notional",
           "margin_ladder[1]", 2), ("acct-0", "rate_limited", "vol_scaling:ETH", 3),
           ("acct-1", "cooldown", "gamma_bound:ETH", 4), ("acct-0", "cooldown",
           "margin_ladder[0]+delta_band:ETH", 5)]


def _messages() -> list[KafkaMessage]:
    out = []
    for offset, (account, reason, rule, seconds) in enumerate(REFUSED):
        refused = s.refusal(account, reason, rule=rule, t=s.T0 + 1000 * seconds)
        out.append(KafkaMessage("risk.refusals", 0, offset, account.encode(), encode(refused),
                                s.T0 + 10_000 + offset))
    return out


@pytest.fixture
def refused(archive_backend: ArchiveBackend) -> ArchiveBackend:
    """A migrated archive holding REFUSED, archived twice (history must not show doubles)."""
    migrate(archive_backend)
    insert_messages(archive_backend, _messages())
    insert_messages(archive_backend, _messages())
    return archive_backend


def test_typed_columns_of_a_refusal(archive_backend: ArchiveBackend) -> None:
    migrate(archive_backend)
    refusal = ActionRefused("acct-7", "margin_ladder[2]", "max_notional", "too big",
                            {"notional": 2.5e5, "max_command_notional": 1e5}, s.T0 + 42, 3, 99)
    insert_messages(archive_backend, [KafkaMessage("risk.refusals", 1, 7, b"acct-7",
                                                   encode(refusal), s.T0 + 50)])
    row = archive_backend.query("SELECT * FROM refusals FINAL").dicts()[0]
    assert (row["topic"], row["kafka_partition"], row["kafka_offset"], row["kafka_key"]) == (
        "risk.refusals", 1, 7, "acct-7")
    assert row["event_time"] == s.T0 + 42 and row["archived_at"].timestamp() == ARCHIVED_AT
    assert (row["account_id"], row["rule"], row["reason"], row["detail"]) == (
        "acct-7", "margin_ladder[2]", "max_notional", "too big")
    record = json.loads(row["record"])
    assert record["values"] == {"notional": 250000.0, "max_command_notional": 100000.0}
    assert (record["partition"], record["input_offset"]) == (3, 99)


def test_history_refusals_newest_first_with_filters(refused: ArchiveBackend) -> None:
    rows = history.refusals(refused).dicts()
    assert [(r["account"], r["rule"]) for r in rows] == [
        (account, rule) for account, _, rule, _ in reversed(REFUSED)]
    assert list(rows[0]) == ["time", "account", "rule", "reason", "detail", "values"]
    assert json.loads(rows[0]["values"])["max_command_notional"] == 100_000.0
    assert [r["rule"] for r in history.refusals(refused, 2).dicts()] == [
        "margin_ladder[0]+delta_band:ETH", "gamma_bound:ETH"]
    assert [r["rule"] for r in history.refusals(refused, account="acct-0",
                                                reason="cooldown").dicts()] == [
        "margin_ladder[0]+delta_band:ETH", "delta_band:ETH"]
    assert history.refusals(refused, reason="halted").rows == []


@pytest.fixture(params=["chdb", "server"])
def cli_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str | None]]:
    """Environment for the CLI pointing at an archive holding REFUSED."""
    backend: ArchiveBackend
    if request.param == "chdb":
        env: dict[str, str | None] = {"APS_DATA_DIR": str(tmp_path / "aps"),
                                      "APS_CLICKHOUSE_URL": None}
        backend = ChdbBackend(tmp_path / "aps" / "chdb")
    else:
        url = request.getfixturevalue("server_database_url")
        env = {"APS_CLICKHOUSE_URL": url}
        backend = ServerBackend(url)
    migrate(backend)
    insert_messages(backend, _messages())
    yield env
    backend.close()


def test_aps_history_refusals(cli_env: dict[str, str | None]) -> None:
    runner = CliRunner()
    env = {"COLUMNS": "250", **cli_env}
    result = runner.invoke(app, ["history", "refusals", "--limit", "3"], env=env)
    assert result.exit_code == 0, result.output
    out = result.output
    rules = ["margin_ladder[0]+delta_band:ETH", "gamma_bound:ETH", "vol_scaling:ETH"]
    assert [out.index(rule) for rule in rules] == sorted(out.index(rule) for rule in rules)
    assert "margin_ladder[1]" not in out and "Refused actions" in out
    result = runner.invoke(app, ["history", "refusals", "--account", "acct-1", "--reason",
                                 "cooldown", "--json"], env=env)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["account"], r["reason"], r["rule"]) for r in rows] == [
        ("acct-1", "cooldown", "gamma_bound:ETH")]
    assert rows[0]["time"] == "2023-11-14T22:13:24+00:00"
    result = runner.invoke(app, ["history", "refusals", "--reason", "nothing"], env=env)
    assert result.exit_code == 0 and "No refusals archived" in result.output
