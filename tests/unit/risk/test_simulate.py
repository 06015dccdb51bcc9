"""`aps simulate`: price path parsing, the two runs, the report and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.errors import ConfigError
from streams.risk.bookgen import format_book, generate_accounts
from streams.risk.simulate import (
    PriceTick,
    SimulationConfig,
    first_prices,
    parse_prices,
    simulate,
)
from tests.unit.risk.engine_helpers import crash_path


def test_prices_csv_is_sorted_by_time_and_checked() -> None:
    text = "asset,timestamp,price\nETH,2000,3000\nBTC,1000,60000\nBTC,3000,59000\n"
    ticks = parse_prices(text)
    assert ticks == [PriceTick(1000, "BTC", 60000.0), PriceTick(2000, "ETH", 3000.0),
                     PriceTick(3000, "BTC", 59000.0)]
    assert first_prices(ticks) == {"BTC": 60000.0, "ETH": 3000.0}
    for bad in ("timestamp,price\n1,2\n", "timestamp,asset,price\n1,BTC,-5\n",
                "timestamp,asset,price\n1,BTC,x\n", "timestamp,asset,price\n"):
        with pytest.raises(ConfigError):
            parse_prices(bad)


def crash_csv(steps: int = 400) -> str:
    rows = ["timestamp,asset,price"]
    for asset, start, seed in (("BTC", 60_000.0, 1), ("ETH", 3_000.0, 2)):
        for t, p in crash_path(start, steps, seed=seed, jump_at=120, jump=-0.3,
                               jump_steps=90):
            rows.append(f"{t},{asset},{p:.4f}")
    return "\n".join(rows) + "\n"


def test_policy_run_liquidates_fewer_accounts_and_reports_its_cost() -> None:
    ticks = parse_prices(crash_csv(300))
    book = generate_accounts(first_prices(ticks), 100, seed=7)
    report = simulate(ticks, book, SimulationConfig())
    assert report.policy is not None
    baseline, policy = report.baseline, report.policy
    assert len(baseline.liquidated) >= 15
    assert len(policy.liquidated) < len(baseline.liquidated) / 2
    assert not set(policy.liquidated) - set(baseline.liquidated)
    assert policy.commands > 0 and policy.filled > 0
    assert policy.hedge_cost == pytest.approx(policy.fees + policy.slippage)
    assert 0 < policy.hedge_cost_pct < 2.0
    assert baseline.commands == 0
    assert policy.final_equity > baseline.final_equity
    assert simulate(ticks[:200], book[:30]) == simulate(ticks[:200], book[:30])  # deterministic


def test_no_policy_reports_the_baseline_only() -> None:
    ticks = parse_prices(crash_csv(250))
    book = generate_accounts(first_prices(ticks), 40, seed=7)
    report = simulate(ticks, book, policy=False)
    assert report.policy is None
    n = len(report.baseline.liquidated)
    assert report.result_line() == (f"RESULT accounts=40 liquidated={n}"
                                    f" liquidated_without_policy={n} commands=0"
                                    f" hedge_cost_pct=0.0000")


def test_cli_on_a_crash_path(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text(crash_csv(200))
    saved = tmp_path / "book.json"
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "--prices", str(prices), "--accounts", "40",
                                 "--seed", "3", "--save-book", str(saved)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("RESULT accounts=40 liquidated=")
    assert any(line.startswith("hedging cost:") for line in lines)
    again = runner.invoke(app, ["simulate", "--prices", str(prices), "--book", str(saved)])
    assert again.exit_code == 0 and again.output.strip().splitlines()[-1] == lines[-1]
    book_file = tmp_path / "given.json"
    book_file.write_text(format_book(generate_accounts({"BTC": 60_000.0}, 5, seed=1)))
    only = runner.invoke(app, ["simulate", "--prices", str(prices), "--book", str(book_file),
                               "--no-policy"])
    assert only.exit_code == 0 and "commands=0" in only.output
    bad = tmp_path / "bad.csv"
    bad.write_text("when,what\n")
    failed = runner.invoke(app, ["simulate", "--prices", str(bad)])
    assert failed.exit_code == 2 and "timestamp" in failed.output
