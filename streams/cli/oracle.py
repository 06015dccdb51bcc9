"""`aps oracle ...`: operator tools for the oracle consensus stage."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Annotated

import typer

from streams.config import load_settings
from streams.errors import ConfigError
from streams.oracle.consensus import ConsensusEngine
from streams.oracle.feeds import load_feeds
from streams.oracle.jsonl import consensus_records

oracle_app = typer.Typer(help="Oracle consensus tools.", no_args_is_help=True)


InputOption = Annotated[str, typer.Option(
    "--input", "-i", help="Observations as JSON lines (docs/oracle.md); - for stdin.")]
FeedsOption = Annotated[Path | None, typer.Option(
    "--feeds", "-f", help="Feeds file (default: APS_FEEDS_FILE or infra/feeds.toml).")]
OutputOption = Annotated[str, typer.Option(
    "--output", "-o", help="Where to write JSON lines; - for stdout.")]
DroppedOption = Annotated[bool, typer.Option(
    "--dropped/--no-dropped", help="Also write a line per dropped (counted-only) observation.")]
SummaryOption = Annotated[bool, typer.Option(
    "--summary/--no-summary", help="Print the engine's counters to stderr at the end.")]


@oracle_app.command("consensus")
def consensus(input_path: InputOption, feeds: FeedsOption = None, output: OutputOption = "-",
              dropped: DroppedOption = False, summary: SummaryOption = True) -> None:
    """Dry-run the consensus stage (the workers' engine) on recorded observations.

    Writes one JSON line per consensus output (kind=price) and per dead letter (kind=dead_letter).
    """
    try:
        registry = load_feeds(feeds if feeds is not None else load_settings().feeds_file)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    engine = ConsensusEngine(registry)
    with ExitStack() as stack:
        source = _open_input(input_path, stack)
        sink = sys.stdout if output == "-" else stack.enter_context(
            open(output, "w", encoding="utf-8"))
        for record in consensus_records(source, engine, with_dropped=dropped):
            sink.write(json.dumps(record, separators=(",", ":")) + "\n")
    if summary:
        typer.echo(json.dumps({"kind": "summary", "counters": engine.counters}), err=True)


def _open_input(path: str, stack: ExitStack) -> IO[bytes]:
    # bytes: a line that is not UTF-8 becomes a dead letter instead of stopping the run
    if path == "-":
        return sys.stdin.buffer
    try:
        return stack.enter_context(open(path, "rb"))
    except OSError as exc:
        typer.echo(f"error: cannot read {path}: {exc}", err=True)
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    """Add `aps oracle` to the root app."""
    app.add_typer(oracle_app, name="oracle")
