"""`aps run`, `aps worker`, `aps executor`, `aps broker`, `aps topics`: running the pipeline."""

from __future__ import annotations

import signal
import sys
import time

import typer
from rich.console import Console

from streams.config import Settings, check_keys, load_settings
from streams.errors import APSError, ConfigError

console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from exc


def _bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap is None:
        console.print("[red]APS_KAFKA_BOOTSTRAP is not set.[/] Start a broker with `aps broker` "
                      "(or use `aps run`, which starts everything) and export its address.")
        raise typer.Exit(2)
    return settings.kafka_bootstrap


def _production_keys(settings: Settings) -> None:
    """Exit with one line (no traceback) if a development key is used outside the embedded
    stack (streams.config.check_keys)."""
    try:
        check_keys(settings)
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


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
) -> None:
    """Start the stack and run the bundled scenario; print a summary at the end."""
    from streams.run.runner import RunOptions, run_pipeline
    from streams.run.summary import print_summary

    settings = _settings()
    _production_keys(settings)  # its processes would refuse them on an external broker
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
        console.print(f"[red]run failed:[/] {exc}")
        raise typer.Exit(1) from exc
    print_summary(report, out)
    if report.commands_without_report or not report.archive_matches:
        raise typer.Exit(1)


def worker() -> None:
    """Run a pipeline worker (consensus, sequencer and risk agents) until stopped."""
    from streams.app.factory import run_worker
    from streams.app.worker import create_worker_app

    settings = _settings()
    bootstrap = _bootstrap(settings)
    _production_keys(settings)
    run_worker(create_worker_app(settings, bootstrap), settings)


def executor(chain: str = typer.Option(..., help="Chain whose commands to execute.")) -> None:
    """Run the executor of one chain until stopped."""
    from streams.app.executor_app import create_executor_app
    from streams.app.factory import run_worker

    settings = _settings()
    bootstrap = _bootstrap(settings)
    _production_keys(settings)
    try:
        app = create_executor_app(settings, bootstrap, chain)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
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
    from streams.infra.broker import create_topics
    from streams.topics import topic_specs

    settings = _settings()
    specs = topic_specs(settings)
    created = set(create_topics(_bootstrap(settings), specs))
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
