"""`aps history ...`: read the archive (embedded chdb, or the server of APS_CLICKHOUSE_URL)."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from streams.archive import history as queries
from streams.archive.backends import ArchiveBackend, ArchiveError, QueryResult
from streams.config import load_settings
from streams.errors import ConfigError

history_app = typer.Typer(
    help="Query the archive: commands, prices, reports, dead letters, refusals, account "
         "states, SQL.",
    no_args_is_help=True)

LIMIT = typer.Option(queries.DEFAULT_LIMIT, "--limit", "-n", min=1, help="Rows to show.")
AS_JSON = typer.Option(False, "--json", help="One JSON object per line instead of a table.")


def _show(title: str, run: Callable[[ArchiveBackend], QueryResult], as_json: bool,
          empty: str) -> None:
    """Open the archive, run one query, print it; archive problems exit 1 with the reason."""
    console = Console()
    try:
        settings = load_settings()
        backend = queries.open_history(settings)
    except (ArchiveError, ConfigError) as exc:
        Console(stderr=True).print(f"[red]aps history:[/red] {exc}")
        raise typer.Exit(1) from None
    try:
        result = run(backend)
    except ArchiveError as exc:
        Console(stderr=True).print(f"[red]aps history:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        backend.close()
    if as_json:
        for row in result.dicts():
            typer.echo(json.dumps({k: _jsonable(v) for k, v in row.items()}, ensure_ascii=False))
    elif not result.rows:
        console.print(empty)
    else:
        table = render_table(title, result)
        if not console.is_terminal:  # piped or captured: never cut values to 80 columns
            natural = console.measure(table, options=console.options.update_width(10_000))
            console = Console(width=max(natural.maximum, console.width))
        console.print(table)


def render_table(title: str, result: QueryResult) -> Table:
    """A rich table of a query result; numbers right-aligned."""
    table = Table(title=title)
    for name, type_ in zip(result.columns, result.types, strict=True):
        numeric = any(t in type_ for t in ("Int", "Float", "Decimal"))
        table.add_column(name, justify="right" if numeric else "left", no_wrap=True)
    for row in result.rows:
        table.add_row(*(format_value(v) for v in row))
    return table


def format_value(value: Any) -> str:
    """A cell for humans: UTC times without zone noise, floats to 8 significant digits."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.8g}"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


@history_app.command("commands")
def history_commands(
    limit: int = LIMIT,
    account: str | None = typer.Option(None, "--account", help="Only this account id."),
    chain: str | None = typer.Option(None, "--chain", help="Only this chain."),
    reason: str | None = typer.Option(None, "--reason", help="e.g. MARGIN_REDUCE."),
    as_json: bool = AS_JSON,
) -> None:
    """Scaling commands, newest first."""
    _show("Scaling commands (newest first)",
          lambda b: queries.commands(b, limit, account=account, chain=chain, reason=reason),
          as_json, "No commands archived (with these filters).")


@history_app.command("prices")
def history_prices(
    limit: int = LIMIT,
    asset: str | None = typer.Option(None, "--asset", help="Only this asset, e.g. ETH."),
    status: str | None = typer.Option(None, "--status", help="OK, DEGRADED or HALTED."),
    as_json: bool = AS_JSON,
) -> None:
    """Consensus prices, newest first."""
    _show("Consensus prices (newest first)",
          lambda b: queries.prices(b, limit, asset=asset, status=status),
          as_json, "No consensus prices archived (with these filters).")


@history_app.command("reports")
def history_reports(
    limit: int = LIMIT,
    account: str | None = typer.Option(None, "--account", help="Only this account id."),
    chain: str | None = typer.Option(None, "--chain", help="Only this chain."),
    status: str | None = typer.Option(None, "--status", help="FILLED, REJECTED or EXPIRED."),
    as_json: bool = AS_JSON,
) -> None:
    """Execution reports, newest first."""
    _show("Execution reports (newest first)",
          lambda b: queries.reports(b, limit, account=account, chain=chain, status=status),
          as_json, "No execution reports archived (with these filters).")


@history_app.command("deadletters")
def history_dead_letters(
    limit: int = LIMIT,
    stage: str | None = typer.Option(None, "--stage", help="e.g. consensus, risk."),
    reason: str | None = typer.Option(None, "--reason", help="e.g. malformed_avro."),
    as_json: bool = AS_JSON,
) -> None:
    """Dead letters (input a stage refused, with the reason), newest first."""
    _show("Dead letters (newest first)",
          lambda b: queries.dead_letters(b, limit, stage=stage, reason=reason),
          as_json, "No dead letters archived (with these filters).")


@history_app.command("refusals")
def history_refusals(
    limit: int = LIMIT,
    account: str | None = typer.Option(None, "--account", help="Only this account id."),
    reason: str | None = typer.Option(None, "--reason", help="e.g. cooldown, rate_limited."),
    as_json: bool = AS_JSON,
) -> None:
    """Actions a rule wanted and the policy refused, with the reason, newest first."""
    _show("Refused actions (newest first)",
          lambda b: queries.refusals(b, limit, account=account, reason=reason),
          as_json, "No refusals archived (with these filters).")


@history_app.command("undecodable")
def history_undecodable(
    limit: int = LIMIT,
    topic: str | None = typer.Option(None, "--topic", help="Only this topic."),
    reason: str | None = typer.Option(None, "--reason", help="e.g. bad_framing."),
    as_json: bool = AS_JSON,
) -> None:
    """Messages the archiver could not decode (kept raw), newest first."""
    _show("Undecodable messages (newest first)",
          lambda b: queries.undecodable(b, limit, topic=topic, reason=reason),
          as_json, "No undecodable messages (with these filters).")


@history_app.command("accounts")
def history_accounts(
    limit: int = LIMIT,
    account: str | None = typer.Option(None, "--account", help="Only this account id."),
    as_json: bool = AS_JSON,
) -> None:
    """Latest risk state of each account, lowest margin ratio first."""
    _show("Accounts (latest state, lowest margin ratio first)",
          lambda b: queries.accounts(b, limit, account=account),
          as_json, "No account states archived (with these filters).")


@history_app.command("counts")
def history_counts(as_json: bool = AS_JSON) -> None:
    """Messages archived per table and topic (distinct, and stored before dedup merges)."""
    _show("Archived messages", queries.counts, as_json, "The archive is empty.")


@history_app.command("sql")
def history_sql(
    query: str = typer.Argument(..., help='e.g. "SELECT reason, count() FROM commands FINAL '
                                          'GROUP BY reason". Read-only.'),
    as_json: bool = AS_JSON,
) -> None:
    """Run a read-only SQL query against the archive (use FINAL to see each message once)."""
    _show("Query result", lambda b: queries.sql(b, query), as_json, "(no rows)")


def register(app: typer.Typer) -> None:
    """Add `aps history` to the root app."""
    app.add_typer(history_app, name="history")
