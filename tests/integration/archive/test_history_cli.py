"""`aps history` end to end: the real CLI reading a real archive (chdb and the server)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.archive.backends import ArchiveBackend, ArchiveLockedError, ChdbBackend, ServerBackend
from streams.archive.migrations import migrate
from streams.archive.rows import KafkaMessage
from streams.cli import app
from streams.codecs.avro import encode
from streams.domain import CommandReason
from tests.integration.archive import samples as s
from tests.integration.archive.samples import insert_messages

CliArchive = tuple[dict[str, str | None], ArchiveBackend]
WIDE = {"COLUMNS": "250"}  # rich wraps long cells at the default 80 columns


@pytest.fixture(params=["chdb", "server"])
def cli_archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CliArchive]:
    """(environment for the CLI, the archive it points at) with 8 commands archived."""
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
    messages = []
    for i in range(8):
        account, chain = f"acct-{i % 2}", ("ethereum", "arbitrum")[i % 2]
        reason = CommandReason.MARGIN_REDUCE if i == 6 else CommandReason.DELTA_REBALANCE
        command = s.command(account, i, chain=chain, reason=reason, t=s.T0 + 60_000 * i)
        messages.append(KafkaMessage(f"exec.{chain}.commands", 0, i, account.encode(),
                                     encode(command), s.T0 + i))
    insert_messages(backend, messages)
    yield env, backend
    backend.close()


def run_cli(env: dict[str, str | None], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={**WIDE, **env})
    return result.exit_code, result.output


def test_history_commands_prints_the_newest_first(cli_archive: CliArchive) -> None:
    env, _ = cli_archive
    code, out = run_cli(env, "history", "commands", "--limit", "5")
    assert code == 0, out
    ids = [f"acct-{i % 2}-cmd-{i}" for i in (7, 6, 5, 4, 3)]
    positions = [out.index(command_id) for command_id in ids]
    assert positions == sorted(positions)
    assert "acct-1-cmd-2" not in out and "acct-0-cmd-2" not in out
    for header in ("id", "time", "account", "chain", "reason", "rule", "side", "quantity",
                   "price"):
        assert header in out
    assert "2023-11-14 22:20:20" in out  # cmd-7: T0 + 7 min, UTC


def test_history_filters_and_json_lines(cli_archive: CliArchive) -> None:
    env, _ = cli_archive
    code, out = run_cli(env, "history", "commands", "--chain", "arbitrum", "--reason",
                        "DELTA_REBALANCE", "--json")
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == ["acct-1-cmd-7", "acct-1-cmd-5", "acct-1-cmd-3",
                                       "acct-1-cmd-1"]
    assert rows[0]["time"] == "2023-11-14T22:20:20+00:00"
    code, out = run_cli(env, "history", "commands", "--account", "nobody")
    assert code == 0 and "No commands archived" in out


def test_history_counts_and_sql(cli_archive: CliArchive) -> None:
    env, _ = cli_archive
    code, out = run_cli(env, "history", "counts", "--json")
    assert code == 0, out
    counts = {(r["table"], r["topic"]): r["messages"] for r in map(json.loads, out.splitlines())}
    assert counts[("commands", "exec.ethereum.commands")] == 4
    code, out = run_cli(env, "history", "sql", "--json",
                        "SELECT reason, count() AS n FROM commands FINAL GROUP BY reason "
                        "ORDER BY reason")
    assert code == 0, out
    assert [json.loads(line) for line in out.splitlines()] == [
        {"reason": "DELTA_REBALANCE", "n": 7}, {"reason": "MARGIN_REDUCE", "n": 1}]
    code, out = run_cli(env, "history", "sql", "DROP TABLE commands")
    assert code == 1 and "aps history:" in out
    code, out = run_cli(env, "history", "sql", "SELECT * FROM file('/etc/hostname', 'CSV')")
    assert code == 1 and "table functions are not allowed" in out
    code, out = run_cli(env, "history", "sql", "SELECT name FROM system.tables")
    assert code == 1 and "outside the archive" in out


def test_history_on_a_missing_archive_says_so(tmp_path: Path) -> None:
    env = {"APS_DATA_DIR": str(tmp_path / "nothing"), "APS_CLICKHOUSE_URL": None}
    code, out = run_cli(env, "history", "commands")
    assert code == 1
    assert "no archive at" in out and "aps archiver" in out
    assert not (tmp_path / "nothing").exists()  # reading never creates an archive


def test_history_on_an_archive_without_tables_says_so(tmp_path: Path) -> None:
    ChdbBackend(tmp_path / "aps" / "chdb").close()
    code, out = run_cli({"APS_DATA_DIR": str(tmp_path / "aps"), "APS_CLICKHOUSE_URL": None},
                        "history", "prices")
    assert code == 1 and "has no tables yet" in out


def test_an_archive_owned_by_another_process_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "aps" / "chdb"
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from streams.archive.backends import ChdbBackend; "
         f"b = ChdbBackend({str(path)!r}); print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "ready"
        with pytest.raises(ArchiveLockedError, match=f"in use by process {owner.pid}"):
            ChdbBackend(path)
        env = {"APS_DATA_DIR": str(tmp_path / "aps"), "APS_CLICKHOUSE_URL": None}
        for command in (["counts"], ["account", "acct-1"],
                        ["plot", "run", "-o", str(tmp_path / "run.png")]):
            code, out = run_cli(env, "history", *command)
            assert code == 1, (command, out)
            assert f"in use by process {owner.pid}" in out and "wait for that process" in out
            assert "APS_CLICKHOUSE_URL" in out and "Traceback" not in out
        assert not (tmp_path / "run.png").exists()
    finally:
        owner.communicate(timeout=30)  # closing stdin ends it
    ChdbBackend(path).close()  # released: this process may open it now
