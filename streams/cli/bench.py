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


@bench_app.command("replay")
def bench_replay(
    accounts: int = typer.Option(400, min=1, help="Accounts in the bundled scenario's book."),
    partitions: int = typer.Option(1, min=1, help="Risk partitions of the recorded log."),
) -> None:
    """Audit replay of the bundled scenario's whole history from chdb: inputs per second."""
    from streams.bench.replay import run

    run(accounts=accounts, partitions=partitions)


@bench_app.command("live")
def bench_live(
    runs: int = typer.Option(3, min=1, help="Runs in a row."),
    accounts: int = typer.Option(400, min=1, help="Accounts in the generated book."),
    speed: float = typer.Option(3.0, min=0.0, help="Event time / wall time (as aps run)."),
    duration: int = typer.Option(300, min=30, help="Seconds of event time per run."),
    partitions: int | None = typer.Option(None, min=1, help="Partitions (as aps run)."),
) -> None:
    """The bundled scenario through the live stack: per-hop latency, lag, live vs offline."""
    from streams.bench.live import run
    from streams.config import load_settings
    from streams.run.runner import RunOptions, stack_settings

    run(stack_settings(load_settings(), partitions), runs=runs,
        options=RunOptions(accounts=accounts, speed=speed, duration_s=duration))


@bench_app.command("pipeline")
def bench_pipeline(
    accounts: int = typer.Option(100_000, help="Accounts in the book (standard: 100,000)."),
    duration: int = typer.Option(600, help="Seconds of event time in the observation stream "
                                 "(about 21 observations per second)."),
    observations: int = typer.Option(3_000, help="Backlog of the aps run: the first N "
                                     "observations of the stream (0 = all); the next ones "
                                     "are paced for the latency phase."),
    naive_observations: int = typer.Option(30, help="Backlog of the faust and quix runs "
                                           "(each observation revalues about 10,000 accounts "
                                           "at standard size, one per Python call)."),
    ceiling_observations: int = typer.Option(200_000, help="Backlog of the ceiling run (the"
                                             " stream repeated as needed)."),
    latency_s: float = typer.Option(20.0, help="Length of each latency phase: the observations"
                                    " after the backlog, paced at half the variant's measured "
                                    "maximum (0 = none)."),
    variants: str = typer.Option("aps,faust,quix,ceiling", help="Comma-separated variants: "
                                 "aps, faust, quix, ceiling."),
    seed: int = typer.Option(7, help="Seed of the book and the market."),
) -> None:
    """APS's worker vs a per-event Faust job, Quix Streams and a no-logic ceiling, end to
    end through the embedded broker (bench/README.md)."""
    from streams.bench.pipeline import PipelineOptions, run, with_variants
    from streams.config import load_settings

    options = PipelineOptions(data_dir=load_settings().data_dir / "bench-pipeline",
                              accounts=accounts, duration_s=duration, observations=observations,
                              naive_observations=naive_observations,
                              ceiling_observations=ceiling_observations, latency_s=latency_s,
                              seed=seed)
    run(with_variants(options, variants))


def register(app: typer.Typer) -> None:
    """Add `aps bench` to the root app."""
    app.add_typer(bench_app, name="bench")
