"""`aps run`, `aps worker`, `aps executor`, `aps broker`, `aps topics`: running the pipeline."""

from __future__ import annotations

import signal
import sys
import time
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from streams.config import Settings, load_settings
from streams.errors import APSError, ConfigError

if TYPE_CHECKING:
    from streams.app.preflight import Checks

console = Console(stderr=True)


def fail(prefix: str, message: object, code: int) -> NoReturn:
    """Print `prefix: message` as one line on stderr (never wrapped) and exit with `code`."""
    text = " ".join(str(message).split())
    console.print(f"[red]{escape(prefix)}:[/] {escape(text)}", soft_wrap=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail("configuration error", exc, 2)


def _bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap is None:
        fail("APS_KAFKA_BOOTSTRAP is not set", "start a broker with `aps broker` (or use "
             "`aps run`, which starts everything) and export its address", 2)
    return settings.kafka_bootstrap


def preflight_or_exit(settings: Settings, checks: Checks, bootstrap: str | None) -> None:
    """Run the start-up checks (streams.app.preflight); a failure is one line on stderr and
    exit code 2 (a setting is wrong) or 1 (the broker does not answer)."""
    from streams.app.preflight import preflight

    try:
        preflight(settings, checks, bootstrap)
    except ConfigError as exc:
        fail("configuration error", exc, 2)
    except APSError as exc:
        fail("cannot start", exc, 1)


def _signals_as_interrupt() -> None:
    """SIGINT and SIGTERM both raise KeyboardInterrupt, so cleanup always runs (SIGINT is
    set explicitly: a shell starting a background job makes it ignored)."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run(
    accounts: int = typer.Option(400, help="Accounts in the generated book."),
    speed: float = typer.Option(3.0, help="Event time runs this many times faster than wall "
                                "time (0 = as fast as possible). Faster runs protect fewer "
                                "accounts: commands and reports take wall time, which a "
                                "faster market turns into more price movement."),
    duration: int = typer.Option(300, help="Seconds of event time in the market scenario."),
    seed: int = typer.Option(7, help="Seed of the price paths and the book."),
    offline: bool = typer.Option(True, help="After the live run, run the same book and prices "
                                 "offline (no broker) and print both side by side."),
    partitions: int | None = typer.Option(None, min=1, help="Partitions of the partitioned "
                                          "topics [default: APS_PARTITIONS if set or with an "
                                          "external broker, else 1: the stack runs one "
                                          "worker]"),
) -> None:
    """Start the stack and run the bundled scenario; print a summary at the end."""
    from streams.app.preflight import Checks
    from streams.run.runner import RunOptions, run_pipeline, stack_settings
    from streams.run.summary import print_summary

    settings = stack_settings(_settings(), partitions)
    # keys: its processes would refuse the development ones on an external broker
    preflight_or_exit(settings, Checks(keys=True, feeds=True, chains=True),
                      settings.kafka_bootstrap)
    _signals_as_interrupt()
    options = RunOptions(accounts=accounts, seed=seed, duration_s=duration, speed=speed,
                         offline=offline)
    out = Console()
    try:
        report = run_pipeline(settings, options, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; every process was stopped.[/]")
        raise typer.Exit(130) from None
    except APSError as exc:
        console.print(f"[red]run failed:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    print_summary(report, out)
    if report.commands_without_report or not report.archive_matches:
        raise typer.Exit(1)


def worker() -> None:
    """Run a pipeline worker (consensus, sequencer and risk agents) until stopped."""
    from streams.app.factory import run_worker
    from streams.app.preflight import Checks
    from streams.app.risk_agent import ACCOUNTS_TABLE, MARKET_TABLE
    from streams.app.worker import APP_ID, create_worker_app

    settings = _settings()
    bootstrap = _bootstrap(settings)
    changelogs = tuple(f"{APP_ID}-{table}-changelog" for table in (ACCOUNTS_TABLE, MARKET_TABLE))
    preflight_or_exit(settings, Checks(keys=True, feeds=True, web_port=True,
                                       extra_topics=changelogs), bootstrap)
    run_worker(create_worker_app(settings, bootstrap), settings)


def executor(chain: str = typer.Option(..., help="Chain whose commands to execute.")) -> None:
    """Run the executor of one chain until stopped."""
    from streams.app.executor_app import (
        CLOCK_TABLE,
        EXECUTED_TABLE,
        RATE_TABLE,
        create_executor_app,
        executor_app_id,
    )
    from streams.app.factory import run_worker
    from streams.app.preflight import Checks

    settings = _settings()
    bootstrap = _bootstrap(settings)
    changelogs = tuple(f"{executor_app_id(chain)}-{table}-changelog"
                       for table in (EXECUTED_TABLE, CLOCK_TABLE, RATE_TABLE))
    preflight_or_exit(settings, Checks(keys=True, chains=True, web_port=True,
                                       extra_topics=changelogs), bootstrap)
    try:
        app = create_executor_app(settings, bootstrap, chain)
    except ConfigError as exc:
        fail("configuration error", exc, 2)
    run_worker(app, settings)


def broker(port: int = typer.Option(9092, help="Port to listen on (127.0.0.1).")) -> None:
    """Run the embedded Kafka-protocol broker (Tansu) in the foreground with APS's topics."""
    from streams.infra.broker import EmbeddedBroker, create_topics
    from streams.topics import topic_specs

    settings = _settings()
    _signals_as_interrupt()
    with EmbeddedBroker(port=port) as embedded:
        created = create_topics(embedded.bootstrap, topic_specs(settings))
        console.print(f"broker on {embedded.bootstrap}; created {len(created)} topics. "
                      f"export APS_KAFKA_BOOTSTRAP={embedded.bootstrap}, and APS_COMMAND_KEY and "
                      "APS_REPORT_KEY ($(openssl rand -hex 32) each) for `aps worker` and "
                      "`aps executor`  (Ctrl-C stops)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("broker stopped")


def topics() -> None:
    """Create APS's topics on APS_KAFKA_BOOTSTRAP (idempotent) and list them."""
    from streams.app.preflight import Checks
    from streams.infra.broker import create_topics
    from streams.topics import topic_specs

    settings = _settings()
    bootstrap = _bootstrap(settings)
    preflight_or_exit(settings, Checks(data_dir=False), bootstrap)
    specs = topic_specs(settings)
    try:
        created = set(create_topics(bootstrap, specs))
    except APSError as exc:
        fail("cannot create the topics", exc, 1)
    for spec in specs:
        state = "created" if spec.name in created else "exists"
        sys.stdout.write(f"{spec.name}\t{spec.partitions}\t{spec.schema}\t{state}\n")


def register(app: typer.Typer) -> None:
    """Add the pipeline commands to the root app."""
    app.command()(run)
    app.command()(worker)
    app.command()(executor)
    app.command()(broker)
    app.command()(topics)
