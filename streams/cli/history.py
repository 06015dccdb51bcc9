"""`aps history ...`: read the archive (embedded chdb, or the server of APS_CLICKHOUSE_URL)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from streams.archive import history as queries
from streams.archive import plotdata
from streams.archive import timeline as tl
from streams.archive.backends import ArchiveBackend, ArchiveError, QueryResult
from streams.clock import parse_event_time, utc
from streams.config import load_settings
from streams.errors import ConfigError
from streams.oracle.feeds import load_feeds

if TYPE_CHECKING:
    from types import ModuleType

    from matplotlib.figure import Figure

T = TypeVar("T")

history_app = typer.Typer(
    help="Query the archive: commands, prices, reports, dead letters, refusals, account "
         "states and timelines, SQL, plots.",
    no_args_is_help=True)

LIMIT = typer.Option(queries.DEFAULT_LIMIT, "--limit", "-n", min=1, help="Rows to show.")
AS_JSON = typer.Option(False, "--json", help="Shorthand for --format json.")
FORMAT = typer.Option(None, "--format", "-f", case_sensitive=False,
                      help="table (default), csv (header line, then rows) or json (one "
                           "object per line).")


class OutputFormat(StrEnum):
    """How `aps history` prints a result."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"


def output_format(fmt: OutputFormat | None, as_json: bool) -> OutputFormat:
    """The format asked for: --format, or --json (its shorthand); both must agree."""
    if as_json and fmt not in (None, OutputFormat.JSON):
        raise typer.BadParameter(f"--json contradicts --format {fmt.value}", param_hint="--json")
    if as_json:
        return OutputFormat.JSON
    return fmt or OutputFormat.TABLE


def _fail(exc: Exception) -> typer.Exit:
    Console(stderr=True).print(f"[red]aps history:[/red] {exc}")
    return typer.Exit(1)


def _query(run: Callable[[ArchiveBackend], T]) -> T:
    """Open the archive, run one query, close it; archive problems exit 1 with the reason."""
    try:
        settings = load_settings()
        backend = queries.open_history(settings)
    except (ArchiveError, ConfigError) as exc:
        raise _fail(exc) from None
    try:
        return run(backend)
    except ArchiveError as exc:
        raise _fail(exc) from None
    finally:
        backend.close()


def _show(title: str, run: Callable[[ArchiveBackend], QueryResult], fmt: OutputFormat,
          empty: str) -> None:
    """Run one query against the archive and print its result in `fmt`."""
    print_result(title, _query(run), fmt, empty)


def print_result(title: str, result: QueryResult, fmt: OutputFormat, empty: str) -> None:
    """Print a result: a rich table (`empty` when there are no rows), CSV or JSON lines."""
    if fmt is OutputFormat.JSON:
        for line in json_lines(result):
            typer.echo(line)
    elif fmt is OutputFormat.CSV:
        typer.echo(csv_text(result), nl=False)
    elif not result.rows:
        Console().print(empty)
    else:
        _print_table(render_table(title, result))


def _print_table(table: Table) -> None:
    console = Console()
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
        table.add_row(*(format_value(v, t) for v, t in zip(row, result.types, strict=True)))
    return table


def format_value(value: Any, type_: str = "") -> str:
    """A cell for humans: UTC times without zone noise (milliseconds for DateTime64 columns),
    floats to 8 significant digits, lists comma-separated."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        if type_.startswith(("DateTime64", "Nullable(DateTime64")):
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.8g}"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def json_lines(result: QueryResult) -> list[str]:
    """One JSON object per row, keys in column order."""
    return [json.dumps({name: _jsonable(value, type_)
                        for name, type_, value in zip(result.columns, result.types, row,
                                                      strict=True)}, ensure_ascii=False)
            for row in result.rows]


def csv_text(result: QueryResult) -> str:
    """A header line, then one line per row (RFC 4180 quoting by the csv module).

    Values are written as in the JSON output: times ISO 8601, NULL as an empty field, NaN
    and infinities as nan / inf / -inf, floats exactly (Python's shortest repr); a list is
    one field holding its JSON text (``["pyth:arbitrum", "chainlink:ethereum"]``).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(_csv_field(v, t) for v, t in zip(row, result.types, strict=True))
    return out.getvalue()


def _csv_field(value: Any, type_: str) -> str:
    plain = _jsonable(value, type_)
    if plain is None:
        return ""
    if isinstance(plain, list | dict):
        return json.dumps(plain, ensure_ascii=False)
    return str(plain)


def _jsonable(value: Any, type_: str = "") -> Any:
    if isinstance(value, dt.datetime) and "DateTime64" in type_:
        return value.isoformat(timespec="milliseconds")
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
    fmt: OutputFormat | None = FORMAT,
    as_json: bool = AS_JSON,
) -> None:
    """Scaling commands, newest first."""
    _show("Scaling commands (newest first)",
          lambda b: queries.commands(b, limit, account=account, chain=chain, reason=reason),
          output_format(fmt, as_json), "No commands archived (with these filters).")


@history_app.command("prices")
def history_prices(
    limit: int = LIMIT,
    asset: str | None = typer.Option(None, "--asset", help="Only this asset, e.g. ETH."),
    status: str | None = typer.Option(None, "--status", help="OK, DEGRADED or HALTED."),
    fmt: OutputFormat | None = FORMAT,
    as_json: bool = AS_JSON,
) -> None:
    """Consensus prices, newest first."""
    _show("Consensus prices (newest first)",
          lambda b: queries.prices(b, limit, asset=asset, status=status),
          output_format(fmt, as_json), "No consensus prices archived (with these filters).")


@history_app.command("reports")
def history_reports(
    limit: int = LIMIT,
    account: str | None = typer.Option(None, "--account", help="Only this account id."),
    chain: str | None = typer.Option(None, "--chain", help="Only this chain."),
    status: str | None = typer.Option(None, "--status", help="FILLED, REJECTED or EXPIRED."),
    fmt: OutputFormat | None = FORMAT,
    as_json: bool = AS_JSON,
) -> None:
    """Execution reports, newest first."""
    _show("Execution reports (newest first)",
          lambda b: queries.reports(b, limit, account=account, chain=chain, status=status),
          output_format(fmt, as_json), "No execution reports archived (with these filters).")


@history_app.command("deadletters")
def history_dead_letters(
    limit: int = LIMIT,
    stage: str | None = typer.Option(None, "--stage", help="e.g. consensus, risk."),
    reason: str | None = typer.Option(None, "--reason", help="e.g. malformed_avro."),
    fmt: OutputFormat | None = FORMAT,
    as_json: bool = AS_JSON,
) -> None:
    """Dead letters (input a stage refused, with the reason), newest first."""
    _show("Dead letters (newest first)",
          lambda b: queries.dead_letters(b, limit, stage=stage, reason=reason),
          output_format(fmt, as_json), "No dead letters archived (with these filters).")


@history_app.command("refusals")
def history_refusals(
    limit: int = LIMIT,
    account: str | None = typer.Option(None, "--account", help="Only this account id."),
    reason: str | None = typer.Option(None, "--reason", help="e.g. cooldown, rate_limited."),
    fmt: OutputFormat | None = FORMAT,
    as_json: bool = AS_JSON,
) -> None:
    """Actions a rule wanted and the policy refused, with the reason, newest first."""
    _show("Refused actions (newest first)",
          lambda b: queries.refusals(b, limit, account=account, reason=reason),
          output_format(fmt, as_json), "No refusals archived (with these filters).")


@history_app.command("undecodable")
def history_undecodable(
    limit: int = LIMIT,
    topic: str | None = typer.Option(None, "--topic", help="Only this topic."),
    reason: str | None = typer.Option(None, "--reason", help="e.g. bad_framing."),
    fmt: OutputFormat | None = FORMAT,
    as_json: bool = AS_JSON,
) -> None:
    """Messages the archiver could not decode (kept raw), newest first."""
    _show("Undecodable messages (newest first)",
          lambda b: queries.undecodable(b, limit, topic=topic, reason=reason),
          output_format(fmt, as_json), "No undecodable messages (with these filters).")


@history_app.command("accounts")
def history_accounts(
    limit: int = LIMIT,
    account: str | None = typer.Option(None, "--account", help="Only this account id."),
    fmt: OutputFormat | None = FORMAT,
    as_json: bool = AS_JSON,
) -> None:
    """Latest risk state of each account, lowest margin ratio first."""
    _show("Accounts (latest state, lowest margin ratio first)",
          lambda b: queries.accounts(b, limit, account=account),
          output_format(fmt, as_json), "No account states archived (with these filters).")


def event_time_option(name: str, meaning: str) -> Any:
    """A --from / --to option: event time, ISO 8601 or epoch ms."""
    return typer.Option(None, name, help=f"{meaning} event time: ISO 8601 (UTC unless it "
                                         "says otherwise) or epoch ms.")


FROM = event_time_option("--from", "First (inclusive)")
TO = event_time_option("--to", "End (exclusive)")


def time_range(start: str | None, end: str | None) -> tl.TimeRange:
    """--from / --to as a TimeRange; a malformed time is a usage error."""
    try:
        return tl.TimeRange(None if start is None else parse_event_time(start),
                            None if end is None else parse_event_time(end))
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


@history_app.command("account")
def history_account(
    account: str = typer.Argument(..., help="Account id, e.g. acct-000058."),
    start: str | None = FROM,
    end: str | None = TO,
    limit: int = typer.Option(tl.DEFAULT_TIMELINE_LIMIT, "--limit", "-n", min=1,
                              help="Rows to show, from the earliest."),
    fmt: OutputFormat | None = FORMAT,
    as_json: bool = AS_JSON,
) -> None:
    """One account's timeline in event-time order: the prices its commands acted on, its
    events, state versions, commands, refusals, execution reports and dead letters."""
    when, chosen = time_range(start, end), output_format(fmt, as_json)
    timeline = _query(lambda b: tl.account_timeline(b, account, when, limit))
    print_result(f"Account {account} (event time, UTC)", timeline.result(), chosen,
                 f"Nothing archived for account {account} (in this time range).")
    _note_timeline(timeline, limit)


def _note_timeline(timeline: tl.Timeline, limit: int) -> None:
    """Tell (on stderr, so CSV and JSON stay clean) what the timeline leaves out."""
    err = Console(stderr=True)
    if timeline.truncated:
        last = utc(timeline.entries[-1].event_time).isoformat(timespec="milliseconds")
        err.print(f"first {limit} rows shown; more follow {last}: raise --limit or move "
                  "--from")
    for table in timeline.skipped:
        err.print(f"(no table {table} in this archive: none shown)", style="dim")


plot_app = typer.Typer(help="Pictures of the archive (PNG): one account, or the whole run.",
                       no_args_is_help=True)
history_app.add_typer(plot_app, name="plot")
OUTPUT = typer.Option(..., "--output", "-o", help="PNG file to write.", dir_okay=False)


@plot_app.command("account")
def plot_account(
    account: str = typer.Argument(..., help="Account id, e.g. acct-000058."),
    output: Path = OUTPUT,
    start: str | None = FROM,
    end: str | None = TO,
) -> None:
    """Prices of what the account held, margin ratio with maintenance and the ladder, net
    delta, its commands by reason and execution reports by status."""
    when = time_range(start, end)
    series = _query(lambda b: plotdata.account_series(b, account, when))
    _save(lambda plots: plots.account_figure(series), output)


@plot_app.command("run")
def plot_run(
    output: Path = OUTPUT,
    start: str | None = FROM,
    end: str | None = TO,
    near: float = typer.Option(plotdata.NEAR_RATIO, "--near", min=1.0,
                               help="Margin ratio below which an account counts as near "
                                    "maintenance."),
) -> None:
    """Accounts near and past maintenance, commands by reason, and each asset's consensus
    price with every oracle source's price (Chainlink decimals from APS_FEEDS_FILE)."""
    when = time_range(start, end)

    def read(backend: ArchiveBackend) -> plotdata.RunSeries:
        return plotdata.run_series(backend, load_feeds(load_settings().feeds_file), when, near)

    series = _query(read)
    _save(lambda plots: plots.run_figure(series), output)


def _save(build: Callable[[ModuleType], Figure], output: Path) -> None:
    """Build the figure and write it; nothing to draw or an unwritable file exits 1."""
    from streams.archive import plots  # matplotlib: only for the commands that draw

    try:
        path = plots.save(build(plots), output)
    except (plots.NothingToPlotError, OSError) as exc:
        raise _fail(exc) from None
    typer.echo(f"wrote {path} ({path.stat().st_size // 1024} KB)")


@history_app.command("counts")
def history_counts(fmt: OutputFormat | None = FORMAT, as_json: bool = AS_JSON) -> None:
    """Messages archived per table and topic (distinct, and stored before dedup merges)."""
    _show("Archived messages", queries.counts, output_format(fmt, as_json), "The archive is empty.")


@history_app.command("sql")
def history_sql(
    query: str = typer.Argument(..., help='e.g. "SELECT reason, count() FROM commands FINAL '
                                          'GROUP BY reason". Read-only.'),
    fmt: OutputFormat | None = FORMAT,
    as_json: bool = AS_JSON,
) -> None:
    """Run a read-only SQL query against the archive (use FINAL to see each message once)."""
    _show("Query result", lambda b: queries.sql(b, query), output_format(fmt, as_json), "(no rows)")


def register(app: typer.Typer) -> None:
    """Add `aps history` to the root app."""
    app.add_typer(history_app, name="history")
