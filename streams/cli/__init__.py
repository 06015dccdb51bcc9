"""The `aps` command: one Typer app; each module below adds its own commands."""

from __future__ import annotations

import typer

from streams.cli import (
    archive,
    bench,
    greeks,
    history,
    oracle,
    pipeline,
    replay,
    scenario,
    simulate,
)

app = typer.Typer(
    name="aps",
    help="APS: Automated Position Scaling. Keeps crypto derivative positions inside their "
    "risk limits by rule.",
    no_args_is_help=True,
    add_completion=False,
)

for module in (pipeline, scenario, greeks, simulate, oracle, history, replay, archive, bench):
    module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
