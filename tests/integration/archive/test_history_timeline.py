"""`aps history account`, `--format` and `aps history plot` on a real archive (chdb and server)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.archive import plotdata, plots
from streams.archive.backends import ArchiveBackend, ChdbBackend, ServerBackend
from streams.archive.migrations import migrate
from streams.archive.rows import KafkaMessage
from streams.archive.timeline import account_timeline
from streams.cli import app
from streams.codecs.avro import encode
from streams.domain import (
    AccountEvent,
    ActionRefused,
    ChainlinkRound,
    DeadLetter,
    ExecutionStatus,
    LadderAction,
    MarginLadder,
    MarginStep,
    OracleObservation,
    OracleSource,
    Position,
    PositionChanged,
    PythPriceUpdate,
    RulesChanged,
    ScalingRules,
)
from streams.oracle.feeds import loads_feeds
from streams.topics import RISK_REFUSALS
from tests.integration.archive import samples as s
from tests.integration.archive.samples import T0, insert_messages

ACCOUNT, OTHER = "acct-A", "acct-B"
LADDER = ScalingRules(margin_ladder=MarginLadder(
    [MarginStep(1.3, LadderAction.TOP_UP, 0.5), MarginStep(1.1, LadderAction.REDUCE, 0.25)],
    target_ratio=1.5))
FEEDS = """
[chains.ethereum]
[chains.arbitrum]
[[feeds]]
asset = "ETH"
chain = "ethereum"
source = "chainlink"
feed_id = "eth-usd"
decimals = 8
heartbeat_s = 3600
[[feeds]]
asset = "ETH"
chain = "arbitrum"
source = "pyth"
feed_id = "eth-usd"
expo = -8
heartbeat_s = 60
"""
WIDE = {"COLUMNS": "400"}
Archive = tuple[dict[str, str | None], ArchiveBackend]


def _messages() -> list[KafkaMessage]:
    """One account's life over 6 s of event time, plus another account's command."""
    values: list[tuple[str, str, bytes]] = [
        ("account.events", ACCOUNT, encode(AccountEvent(
            "ev-1", ACCOUNT, T0, PositionChanged(Position("p1", s.perp(), 2.0, 2900.0))))),
        ("account.events", ACCOUNT, encode(AccountEvent(
            "ev-2", ACCOUNT, T0 + 1, RulesChanged(LADDER)))),
        ("aps-risk-accounts-changelog", ACCOUNT, encode(dataclasses.replace(
            s.account_state(ACCOUNT, 1, ratio=None, t=T0 + 1), rules=LADDER))),
        ("aps-risk-accounts-changelog", ACCOUNT, encode(dataclasses.replace(
            s.account_state(ACCOUNT, 2, ratio=1.4, t=T0 + 1000), rules=LADDER))),
        ("aps-risk-accounts-changelog", ACCOUNT, encode(dataclasses.replace(
            s.account_state(ACCOUNT, 3, ratio=0.9, t=T0 + 2000, breached=True), rules=LADDER))),
        # provenance price event time = created_at - 500: prices at T0+1000 and T0+2000
        ("exec.arbitrum.commands", ACCOUNT, encode(s.command(ACCOUNT, 1, t=T0 + 1500))),
        ("exec.arbitrum.commands", ACCOUNT, encode(s.command(ACCOUNT, 2, t=T0 + 2500))),
        # a top-up priced at its own time, T0+4000: that price is not archived
        ("exec.ethereum.commands", ACCOUNT, encode(s.top_up(ACCOUNT, 3, t=T0 + 4000))),
        ("exec.arbitrum.commands", OTHER, encode(s.command(OTHER, 9, t=T0 + 1500))),
        ("execution.reports", ACCOUNT, encode(s.report(ACCOUNT, 1, t=T0 + 1500))),  # at +2700
        ("execution.reports", ACCOUNT, encode(s.report(
            ACCOUNT, 2, t=T0 + 2500, status=ExecutionStatus.REJECTED))),  # at +3700
        ("aps.deadletter", "account.events", encode(DeadLetter(
            "risk", "unknown_instrument", "no such instrument", "account.events", 0, 7,
            ACCOUNT.encode(), b"\xc3\x01junk", T0 + 5000))),
        ("oracle.ticks", "ethereum/eth-usd", encode(OracleObservation(
            "ethereum", OracleSource.CHAINLINK, "eth-usd", T0 + 900,
            ChainlinkRound("1", "300012345678", T0 // 1000, T0 // 1000, "1")))),
        ("oracle.ticks", "arbitrum/eth-usd", encode(OracleObservation(
            "arbitrum", OracleSource.PYTH, "eth-usd", T0 + 950,
            PythPriceUpdate(300_050_000_000, 120_000_000, -8, T0 // 1000, 0, 0)))),
    ]
    values += [("oracle.prices", "ETH", encode(s.consensus("ETH", i, t=T0 + 1000 * i,
                                                            price=3000.0 + i)))
               for i in (1, 2, 3)]
    offsets: dict[str, int] = {}
    out = []
    for topic, key, value in values:
        offsets[topic] = offsets.get(topic, -1) + 1
        out.append(KafkaMessage(topic, 0, offsets[topic], key.encode(), value,
                                T0 + 10_000 + offsets[topic]))
    return out


@pytest.fixture(params=["chdb", "server"])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    """(environment for the CLI, the archive): one account's timeline and two oracle ticks."""
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(FEEDS)
    backend: ArchiveBackend
    env: dict[str, str | None]
    if request.param == "chdb":
        env = {"APS_DATA_DIR": str(tmp_path / "aps"), "APS_CLICKHOUSE_URL": None}
        backend = ChdbBackend(tmp_path / "aps" / "chdb")
    else:
        env = {"APS_CLICKHOUSE_URL": request.getfixturevalue("server_database_url")}
        backend = ServerBackend(str(env["APS_CLICKHOUSE_URL"]))
    env["APS_FEEDS_FILE"] = str(feeds)
    migrate(backend)
    insert_messages(backend, _messages())
    yield env, backend
    backend.close()


def cli(env: dict[str, str | None], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `aps ARGS`."""
    result = CliRunner().invoke(app, list(args), env={**WIDE, **env})
    return result.exit_code, result.stdout, result.stderr


def json_rows(text: str) -> list[dict[str, Any]]:
    """JSON lines back as dicts."""
    return [json.loads(line) for line in text.splitlines()]


def test_the_timeline_has_every_kind_in_event_time_order(archive: Archive) -> None:
    env, _ = archive
    code, out, err = cli(env, "history", "account", ACCOUNT, "--json")
    assert code == 0, out + err
    rows = json_rows(out)
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    assert [(r["kind"], r["time"][11:23]) for r in rows] == [
        ("event", "22:13:20.000"), ("event", "22:13:20.001"), ("state", "22:13:20.001"),
        ("price", "22:13:21.000"), ("state", "22:13:21.000"), ("command", "22:13:21.500"),
        ("price", "22:13:22.000"), ("state", "22:13:22.000"), ("command", "22:13:22.500"),
        ("report", "22:13:22.700"), ("report", "22:13:23.700"), ("price", "22:13:24.000"),
        ("command", "22:13:24.000"), ("deadletter", "22:13:25.000")]
    by_id = {r["id"]: r for r in rows}
    assert by_id["ETH#1"]["price"] == 3001.0 and by_id["ETH#1"]["what"] == "ETH OK"
    assert "pyth:solana (stale)" in by_id["ETH#1"]["detail"]
    fallback = next(r for r in rows if r["kind"] == "price" and r["time"].endswith("24.000+00:00"))
    assert fallback["price"] == 2500.0 and "provenance" in fallback["detail"]
    state = by_id["3"]
    assert (state["margin_ratio"], state["net_delta"], state["what"]) == (
        0.9, "ETH +2.5", "version 3 breached")
    assert by_id["acct-A-cmd-2"]["what"] == "DELTA_REBALANCE delta_band BUY ETH-PERP-arbitrum"
    assert by_id["acct-A-topup-3"]["amount"] == 25_000.0
    assert by_id["acct-A-rep-2"]["what"].startswith("REJECTED")
    assert "ladder 1.3 TOP_UP 0.5; ladder 1.1 REDUCE 0.25" in by_id["ev-2"]["detail"]
    assert not any(OTHER in json.dumps(r) for r in rows)
    assert "no table refusals" not in err  # the migrations made it; it holds none of ACCOUNT's


def test_an_archive_without_the_refusals_table_says_so_and_shows_the_rest(
        archive: Archive) -> None:
    env, backend = archive
    backend.execute("DROP TABLE refusals")  # an archive of a version before the table
    code, out, err = cli(env, "history", "account", ACCOUNT, "--json")
    assert code == 0 and "no table refusals" in err
    assert len(json_rows(out)) == 14


def test_the_timeline_respects_from_and_to(archive: Archive) -> None:
    env, _ = archive
    start, end = "2023-11-14T22:13:21.500Z", str(T0 + 2700)  # ISO and epoch ms
    code, out, err = cli(env, "history", "account", ACCOUNT, "--from", start, "--to", end,
                         "-f", "json")
    assert code == 0, out + err
    kinds = [(r["kind"], r["time"][17:23]) for r in json_rows(out)]
    # from inclusive (the command at +1500), to exclusive (the report at +2700 is left out)
    assert kinds == [("command", "21.500"), ("price", "22.000"), ("state", "22.000"),
                     ("command", "22.500")]
    code, out, err = cli(env, "history", "account", ACCOUNT, "--from", "soon")
    assert code == 2 and "neither epoch milliseconds nor an ISO 8601" in out + err


def test_a_limited_timeline_is_its_first_rows_and_says_so(archive: Archive) -> None:
    env, _ = archive
    _, full, _ = cli(env, "history", "account", ACCOUNT, "--json")
    code, out, err = cli(env, "history", "account", ACCOUNT, "--json", "--limit", "4")
    assert code == 0
    assert json_rows(out) == json_rows(full)[:4]
    assert "first 4 rows shown; more follow 2023-11-14T22:13:21.000+00:00" in err


def test_the_refusals_are_in_the_timeline_once_the_table_exists(archive: Archive) -> None:
    env, backend = archive
    refused = [(ACCOUNT, "margin_ladder[1]", "rate_limited", "10 commands in 600 s"),
               (OTHER, "delta_band", "cooldown", "")]
    insert_messages(backend, [
        KafkaMessage(RISK_REFUSALS, 0, i, account.encode(), encode(ActionRefused(
            account, rule, reason, detail, {}, T0 + 2600)), T0 + 9000 + i)
        for i, (account, rule, reason, detail) in enumerate(refused)])
    timeline = account_timeline(backend, ACCOUNT)
    refusals = [e for e in timeline.entries if e.kind == "refusal"]
    assert [(e.event_time, e.what, e.detail) for e in refusals] == [
        (T0 + 2600, "margin_ladder[1] rate_limited", "10 commands in 600 s")]
    kinds = [e.kind for e in timeline.entries]
    i = kinds.index("refusal")  # between the command at +2500 and the report at +2700
    assert (kinds[i - 1], kinds[i + 1]) == ("command", "report")
    assert timeline.skipped == ()
    code, out, err = cli(env, "history", "account", ACCOUNT, "--json")
    assert code == 0 and "no table refusals" not in err
    assert [r["what"] for r in json_rows(out) if r["kind"] == "refusal"] == [
        "margin_ladder[1] rate_limited"]


def _table_cells(text: str) -> list[list[str]]:
    """The cells of each line of a rich table (header first), by its column separators."""
    return [[cell.strip() for cell in line.split("┃" if "┃" in line else "│")[1:-1]]
            for line in text.splitlines() if line.startswith(("┃", "│"))]


def _as_table_cell(value: str, name: str) -> str:
    """A CSV field as the table shows it (times without zone, floats to 8 digits, lists)."""
    if value == "":
        return ""
    if name == "time":
        return value.replace("T", " ").split("+")[0]
    if value.startswith("["):
        return ", ".join(json.loads(value))
    try:
        number = float(value)
    except ValueError:
        return value
    return value if value.lstrip("-").isdigit() else f"{number:.8g}"


@pytest.mark.parametrize("command", [["account", ACCOUNT], ["prices"], ["commands"]])
def test_every_format_gives_the_same_rows(archive: Archive, command: list[str]) -> None:
    env, _ = archive
    outputs = {fmt: cli(env, "history", *command, "--format", fmt)
               for fmt in ("table", "csv", "json")}
    assert all(code == 0 for code, _, _ in outputs.values()), outputs
    records = json_rows(outputs["json"][1])
    header, *lines = list(csv.reader(io.StringIO(outputs["csv"][1])))
    assert header == list(records[0]) and len(lines) == len(records) >= 3
    for line, record in zip(lines, records, strict=True):
        for field, (name, value) in zip(line, record.items(), strict=True):
            expected = "" if value is None else (
                json.dumps(value) if isinstance(value, list) else str(value))
            assert field == expected, (name, field, value)
    table_header, *table_rows = _table_cells(outputs["table"][1])
    assert table_header == header
    assert table_rows == [[_as_table_cell(v, n) for v, n in zip(line, header, strict=True)]
                          for line in lines]
    assert cli(env, "history", *command, "--json")[1] == outputs["json"][1]


def test_json_and_another_format_together_are_refused(archive: Archive) -> None:
    env, _ = archive
    code, out, err = cli(env, "history", "counts", "--json", "--format", "csv")
    assert code == 2 and "--json contradicts --format csv" in out + err


def test_the_account_plot_draws_every_panel(archive: Archive, tmp_path: Path) -> None:
    env, backend = archive
    series = plotdata.account_series(backend, ACCOUNT)
    assert series.prices["ETH"].values == [3001.0, 3002.0, 3003.0]
    assert series.ratio.values == [1.4, 0.9]
    assert series.deltas["ETH"].values == [2.5, 2.5]
    figure = plots.account_figure(series)
    axes = figure.axes
    assert [ax.get_ylabel() for ax in axes] == [
        "ETH (USD)", "margin ratio", "net delta\n(units of underlying)", ""]
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in axes]
    assert legends[1] == ["margin ratio", "maintenance (1.0)",
                          "ladder[0] TOP_UP 50% below 1.3", "ladder[1] REDUCE 25% below 1.1"]
    assert legends[3] == ["command DELTA_REBALANCE (2)", "command MARGIN_TOP_UP (1)",
                          "report FILLED (1)", "report REJECTED (1)"]
    assert figure.get_suptitle().startswith("Account acct-A: margin, delta and actions")
    assert axes[-1].get_xlabel() == "event time (UTC), 2023-11-14"
    out = tmp_path / "account.png"
    code, stdout, stderr = cli(env, "history", "plot", "account", ACCOUNT, "-o", str(out))
    assert code == 0, stdout + stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    code, stdout, stderr = cli(env, "history", "plot", "account", "nobody", "-o", str(out))
    assert code == 1 and "nothing archived for account nobody" in stdout + stderr


def test_the_run_plot_draws_accounts_commands_and_every_source(archive: Archive,
                                                               tmp_path: Path) -> None:
    env, backend = archive
    run = plotdata.run_series(backend, loads_feeds(FEEDS))
    assert run.sources["ETH"]["chainlink@ethereum"].values == [3000.12345678]  # decimals 8
    assert run.sources["ETH"]["pyth@arbitrum"].values == [3000.5]  # expo -8
    assert run.accounts == 1 and run.bucket_ms == 1000
    assert run.past.values[-1] == 1 and run.near.values[0] == 0  # 1.4, then 0.9
    assert {reason: sum(c.values) for reason, c in run.commands.items()} == {
        "DELTA_REBALANCE": 3, "MARGIN_TOP_UP": 1}
    figure = plots.run_figure(run)
    axes = figure.axes
    assert len(axes) == 3
    assert [ax.get_ylabel() for ax in axes] == ["accounts", "commands per 1 s", "ETH (USD)"]
    assert [t.get_text() for t in axes[2].get_legend().get_texts()] == [
        "chainlink@ethereum", "pyth@arbitrum", "consensus"]
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == [
        "near maintenance: ratio < 1.2", "past maintenance: ratio < 1"]
    out = tmp_path / "run.png"
    code, stdout, stderr = cli(env, "history", "plot", "run", "-o", str(out))
    assert code == 0, stdout + stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
