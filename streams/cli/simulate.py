"""`aps simulate`: the risk engine over a price path and a book, with and without the policy."""

from __future__ import annotations

from pathlib import Path

import typer

from streams.errors import APSError

PRICES = typer.Option(..., "--prices", exists=True, dir_okay=False,
                      help="CSV with columns timestamp (epoch ms or ISO 8601), asset, price;"
                      " one row per observation.")
BOOK = typer.Option(None, "--book", exists=True, dir_okay=False,
                    help="Book file (JSON, see docs/risk.md); default: a generated book"
                    " sized from the first prices.")
CHAINS = typer.Option(None, "--chains", exists=True, dir_okay=False,
                      help="Chain profiles (settlement latency and venue costs); default:"
                      " APS_CHAINS_FILE, else infra/chains.toml.")
SAVE_BOOK = typer.Option(None, "--save-book", dir_okay=False,
                         help="Write the book used to this file.")


def simulate_command(
    prices: Path = PRICES,
    book: Path | None = BOOK,
    seed: int = typer.Option(7, "--seed", help="Seed of the generated book."),
    no_policy: bool = typer.Option(False, "--no-policy",
                                   help="Only the run without scaling rules."),
    accounts: int = typer.Option(3000, "--accounts", min=1,
                                 help="Accounts in the generated book."),
    chains: Path | None = CHAINS,
    confidence_bps: float = typer.Option(0.0, "--confidence-bps", min=0.0,
                                         help="Oracle band given to every path price, bps."),
    save_book: Path | None = SAVE_BOOK,
) -> None:
    """Replay a price path through the risk engine (no broker) and compare liquidations."""
    from streams.config import load_settings
    from streams.executors.chains import load_chain_profiles
    from streams.risk.bookgen import format_book, generate_accounts, parse_book
    from streams.risk.settings import engine_config_for
    from streams.risk.simulate import (
        SimulationConfig,
        first_prices,
        format_report,
        parse_prices,
        simulate,
    )

    try:
        ticks = parse_prices(prices.read_text())
        if book is not None:
            accounts_book = parse_book(book.read_text())
            source = f"from {book}"
        else:
            accounts_book = generate_accounts(first_prices(ticks), accounts, seed=seed,
                                              start_ms=ticks[0].time_ms)
            source = f"generated, seed {seed}"
        if save_book is not None:
            save_book.write_text(format_book(accounts_book))
        settings = load_settings()
        profiles = load_chain_profiles(chains or settings.chains_file)
        config = SimulationConfig(chains=profiles, confidence_bps=confidence_bps,
                                  engine=engine_config_for(settings))
        report = simulate(ticks, accounts_book, config, policy=not no_policy)
    except (APSError, OSError) as exc:
        typer.echo(f"aps simulate: {exc}", err=True)
        raise typer.Exit(2) from None
    for line in format_report(report, source, config):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add `aps simulate` to the root app."""
    app.command("simulate")(simulate_command)
