"""`aps archiver`: archive every APS topic to ClickHouse until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import time

import typer
from rich.console import Console
from rich.markup import escape

from streams.archive.archiver import BATCH_SIZE, BATCH_TIMEOUT_S, GROUP_ID, ArchiverProgress
from streams.config import load_settings
from streams.errors import APSError

PRINT_EVERY_S = 5.0


class ProgressPrinter:
    """Prints a progress line every few seconds, and whenever catching up starts or ends."""

    def __init__(self, console: Console, every: float = PRINT_EVERY_S) -> None:
        self.console = console
        self.every = every
        self._last = 0.0
        self._caught_up: bool | None = None

    def __call__(self, progress: ArchiverProgress) -> None:
        now = time.monotonic()
        if progress.caught_up == self._caught_up and now - self._last < self.every:
            return
        self._last, self._caught_up = now, progress.caught_up
        self.console.print(progress_line(progress))


def progress_line(progress: ArchiverProgress) -> str:
    """One line for humans: messages per table, lag, and what the archiver is doing."""
    tables = ", ".join(f"{name} {count}" for name, count in
                       sorted(progress.rows_by_table.items())) or "nothing yet"
    lag = "unknown" if progress.lag is None else f"{progress.lag} messages"
    if progress.lag_seconds is not None:
        lag += f" (last batch {progress.lag_seconds:.1f} s behind)"
    if progress.unavailable_s is not None:
        state = (f"ClickHouse unavailable for {progress.unavailable_s:.0f} s, retrying "
                 f"({progress.retries} failed attempts so far)")
    else:
        state = "caught up" if progress.caught_up else "catching up"
    return f"archiver: {progress.messages} messages ({tables}); lag {lag}; {state}"


def archiver(
    bootstrap: str | None = typer.Option(
        None, "--bootstrap", help="Kafka bootstrap servers (default: APS_KAFKA_BOOTSTRAP)."),
    batch_size: int = typer.Option(BATCH_SIZE, min=1, help="Most messages per insert."),
    batch_timeout: float = typer.Option(BATCH_TIMEOUT_S, min=0.01,
                                        help="Longest wait for a batch, seconds."),
    group: str = typer.Option(GROUP_ID, help="Consumer group (archivers of one group share "
                                             "the partitions)."),
) -> None:
    """Archive every APS topic (and the risk table's changelog) to ClickHouse.

    Writes to embedded chdb in APS_DATA_DIR, or to the server of APS_CLICKHOUSE_URL. Stops
    on Ctrl-C / SIGTERM after inserting and committing the batch in hand. Waits out a
    ClickHouse outage (retrying with backoff); gives up at start if the broker does not
    answer. Serves Prometheus metrics on APS_WEB_PORT (/metrics).
    """
    from streams.app.preflight import Checks, preflight
    from streams.archive.archiver import run_archiver

    console = Console(stderr=True)
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        settings = load_settings()
        target = bootstrap or settings.kafka_bootstrap
        if not target:
            raise typer.BadParameter(
                "no broker: pass --bootstrap or set APS_KAFKA_BOOTSTRAP (the embedded broker "
                "lives inside `aps run`, which archives by itself)", param_hint="--bootstrap")
        preflight(settings, Checks(data_dir=settings.embedded_archive,
                                   web_port=bool(settings.web_port),
                                   partitions=False), target)
        archive = settings.clickhouse_url and settings.describe()["clickhouse_url"]
        console.print(f"archiver: {target} -> {archive or settings.chdb_path}; metrics on "
                      f"http://127.0.0.1:{settings.web_port}/metrics; Ctrl-C to stop")
        final = run_archiver(settings, target, on_progress=ProgressPrinter(console),
                             batch_size=batch_size, batch_timeout=batch_timeout, group_id=group,
                             metrics_port=settings.web_port)
    except APSError as exc:
        text = " ".join(str(exc).split())
        console.print(f"[red]aps archiver:[/red] {escape(text)}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"archiver: stopped after {final.messages} messages")


def register(app: typer.Typer) -> None:
    """Add `aps archiver` to the root app."""
    app.command("archiver")(archiver)
