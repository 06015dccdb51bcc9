"""`aps replay`: re-decide a recorded period and diff it against the record (docs/replay.md)."""

from __future__ import annotations

from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streams.errors import APSError


class SourceKind(StrEnum):
    """Where the record is read."""

    archive = "archive"
    topics = "topics"


FROM = typer.Option(None, "--from", help="Start of the period (event time): ISO 8601 (UTC if "
                    "no zone) or epoch ms. Default: the log's start.")
TO = typer.Option(None, "--to", help="End of the period, inclusive (event time). Default: "
                  "the log's end.")
PARTITION = typer.Option([], "--partition", "-p", help="Replay only this risk partition "
                         "(repeatable). Default: every partition.")
FROM_OFFSET = typer.Option(None, "--from-offset", min=0, help="With one --partition: the "
                           "period starts at the event time of the entries from this offset.")
TO_OFFSET = typer.Option(None, "--to-offset", min=0, help="With one --partition: ... up to "
                         "this offset, inclusive.")
SOURCE = typer.Option(SourceKind.archive, "--source", help="archive (chdb or "
                      "APS_CLICKHOUSE_URL) or topics (the retained topics at "
                      "APS_KAFKA_BOOTSTRAP).")
REPORT = typer.Option(None, "--report", "-o", dir_okay=False, help="Where to write the JSON "
                      "report. Default: aps-replay.json (aps-what-if.json with --what-if).")
WHAT_IF = typer.Option(False, "--what-if", help="Replay with changed rules and/or settings "
                       "and report what would have been decided (never an audit).")
RULES = typer.Option(None, "--rules", exists=True, dir_okay=False, help="With --what-if: "
                     "rules per account or for all (JSON, see docs/replay.md).")
ENGINE_CONFIG = typer.Option(None, "--engine-config", exists=True, dir_okay=False,
                             help="With --what-if: engine settings (TOML, as "
                             "APS_ENGINE_CONFIG) instead of the recorded ones.")
NO_SIGNATURES = typer.Option(False, "--no-signatures", help="Leave the commands' signatures "
                             "out of the comparison (for an auditor without APS_COMMAND_KEY).")


def replay_command(
    start: str | None = FROM, end: str | None = TO, partition: list[int] = PARTITION,
    from_offset: int | None = FROM_OFFSET, to_offset: int | None = TO_OFFSET,
    source: SourceKind = SOURCE, report: Path | None = REPORT,
    no_signatures: bool = NO_SIGNATURES, what_if: bool = WHAT_IF,
    rules: Path | None = RULES, engine_config: Path | None = ENGINE_CONFIG,
) -> None:
    """Replay the recorded risk.inputs of a period through the engine and compare the
    commands it decides with the recorded ones. Exit 0 only when identical (1: differences,
    2: the replay could not run). With --what-if, replay with changed rules or settings."""
    from streams.clock import parse_event_time
    from streams.config import load_settings
    from streams.errors import ConfigError
    from streams.replay.audit import ReplayRequest, refuse_state_path, run_audit
    from streams.replay.replayer import Period
    from streams.replay.report import dumps, print_audit, print_what_if
    from streams.replay.whatif import WhatIfRequest, load_rules_override, run_what_if
    from streams.risk.settings import engine_config_for, load_engine_config

    console = Console()
    path = report or Path("aps-what-if.json" if what_if else "aps-replay.json")
    try:
        if (rules or engine_config) and not what_if:
            raise ConfigError("--rules and --engine-config change what is replayed: they "
                              "belong to a --what-if, never to an audit")
        if what_if and not (rules or engine_config):
            raise ConfigError("--what-if needs --rules and/or --engine-config")
        settings = load_settings()
        refuse_state_path(path, settings)
        period = Period(parse_event_time(start) if start is not None else None,
                        parse_event_time(end) if end is not None else None)
        config = engine_config_for(settings)
        request = ReplayRequest(period=period, partitions=tuple(partition),
                                from_offset=from_offset, to_offset=to_offset, config=config,
                                signatures=not no_signatures)
        with _opened(source, settings) as replay_source, _progress(console) as progress:
            if what_if:
                changed = load_engine_config(engine_config) if engine_config else config
                result: Any = run_what_if(replay_source, settings, WhatIfRequest(
                    request, changed, load_rules_override(rules) if rules else None),
                    **progress)
            else:
                result = run_audit(replay_source, settings, request, **progress)
        path.write_text(dumps(result.report))
    except APSError as exc:
        Console(stderr=True).print(f"[red]aps replay:[/red] {exc}")
        raise typer.Exit(2) from None
    if what_if:
        print_what_if(console, result.report, str(path))
    else:
        print_audit(console, result.report, str(path))
    raise typer.Exit(0 if result.comparison.identical else 1)


@contextmanager
def _opened(kind: SourceKind, settings: Any) -> Any:
    """The replay source of `kind`, closed afterwards."""
    from streams.errors import ConfigError
    from streams.replay.sources import ArchiveSource, TopicSource

    if kind is SourceKind.topics:
        if settings.kafka_bootstrap is None:
            raise ConfigError("--source topics reads a running broker: set APS_KAFKA_BOOTSTRAP "
                              "(the embedded broker of `aps run` keeps its topics in memory "
                              "and is gone when the run ends; replay from the archive then)")
        yield TopicSource(settings.kafka_bootstrap, settings.chains)
        return
    from streams.archive.history import open_history

    backend = open_history(settings)
    try:
        yield ArchiveSource(backend)
    finally:
        backend.close()


@contextmanager
def _progress(console: Console) -> Any:
    """Callbacks for run_audit that drive one progress bar per partition."""
    with Progress(TextColumn("partition {task.fields[partition]}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("entries"), TimeElapsedColumn(),
                  console=console, transient=not console.is_terminal) as bar:
        current: list[Any] = []

        def on_partition(partition: int, end: int) -> None:
            current[:] = [bar.add_task("replay", total=end, partition=partition)]

        def on_progress(n: int) -> None:
            bar.advance(current[0], n)
        yield {"on_partition": on_partition, "on_progress": on_progress}


def register(app: typer.Typer) -> None:
    """Add `aps replay` to the CLI."""
    app.command("replay")(replay_command)
