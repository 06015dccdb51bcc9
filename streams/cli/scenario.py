"""`aps scenario prices`: the bundled market as a price CSV, for `aps simulate`."""

from __future__ import annotations

import sys

import typer

scenario_app = typer.Typer(help="The bundled market scenario of `aps run`.",
                           no_args_is_help=True)


@scenario_app.command("prices")
def prices(
    duration: int = typer.Option(300, help="Seconds of event time."),
    seed: int = typer.Option(7, help="Seed of the price noise."),
) -> None:
    """Write the bundled crash path (true prices, one row per asset per second) as
    `timestamp,asset,price` CSV: `aps scenario prices > crash.csv; aps simulate --prices
    crash.csv`."""
    from streams.scenario.bundled import START_MS, crash_window
    from streams.scenario.paths import crash_paths

    start, length = crash_window(duration)
    paths = crash_paths(START_MS, duration, seed=seed, crash_start_s=start, crash_len_s=length)
    rows = sorted((t, asset, price) for asset, path in paths.items() for t, price in path)
    out = sys.stdout
    out.write("timestamp,asset,price\n")
    for t, asset, price in rows:
        out.write(f"{t},{asset},{price}\n")


def register(app: typer.Typer) -> None:
    """Add `aps scenario` to the root app."""
    app.add_typer(scenario_app, name="scenario")
