"""`aps bench ...`: benchmarks that print figures and a machine-readable RESULT line."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Benchmarks (print figures; last line: RESULT key=value ...).",
                        no_args_is_help=True)


@bench_app.command("risk")
def bench_risk(
    evals: int = typer.Option(2_000_000, help="Options per vectorized Greek evaluation batch."),
    accounts: int = typer.Option(100_000, help="Accounts in the revalued book."),
    positions: int = typer.Option(3, help="Positions per account."),
) -> None:
    """Option Greek evaluations per second and full-book revaluation time vs a naive loop."""
    from streams.bench.risk import run

    run(evals=evals, accounts=accounts, positions=positions)


@bench_app.command("oracle")
def bench_oracle(
    observations: int = typer.Option(300_000, help="Observations pushed through consensus."),
) -> None:
    """Observations per second through the consensus stage on one core."""
    from streams.bench.oracle import run

    run(observations=observations)


@bench_app.command("archive")
def bench_archive(
    rows: int = typer.Option(100_000, help="Rows inserted per backend."),
    batch: int = typer.Option(5_000, help="Rows per insert."),
    url: str = typer.Option("", help="Also measure this ClickHouse server (clickhouse://...)."),
) -> None:
    """Archive insert throughput: decode+map, chdb (Arrow and JSONEachRow), server."""
    from streams.archive.bench import run

    run(rows=rows, batch=batch, url=url or None)


@bench_app.command("live")
def bench_live(
    runs: int = typer.Option(3, min=1, help="Runs in a row."),
    accounts: int = typer.Option(400, min=1, help="Accounts in the generated book."),
    speed: float = typer.Option(3.0, min=0.0, help="Event time / wall time (as aps run)."),
    duration: int = typer.Option(300, min=30, help="Seconds of event time per run."),
) -> None:
    """The bundled scenario through the live stack: per-hop latency, lag, live vs offline."""
    from streams.bench.live import run
    from streams.config import load_settings
    from streams.run.runner import RunOptions

    run(load_settings(), runs=runs,
        options=RunOptions(accounts=accounts, speed=speed, duration_s=duration))


def register(app: typer.Typer) -> None:
    """Add `aps bench` to the root app."""
    app.add_typer(bench_app, name="bench")
