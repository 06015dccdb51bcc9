"""`aps bench live`: the bundled scenario through the whole live stack, N runs in a row.

Each run is exactly `aps run` (embedded broker, worker, executors, archiver, the scenario
paced in event time) followed by its offline twin (the worst lag is that of the market
phase, as a histogram bucket bound: the book load at the start is excluded); the figures
come from the records' own Kafka timestamps (streams/run/hops.py) and the processes' metrics.
Printed per run:
tick -> command and command -> report p50/p99/max, the worst lag of any stage, accounts past
maintenance live and offline, and the load average before and after (the machine is
shared: a figure means little without it). Targets (docs/performance.md): tick -> command
p99 <= 50 ms, command -> report p99 <= 50 ms, worst lag < 1 s, live past maintenance <=
offline + max(2, 1% of accounts). Asserts nothing; the last line is
``RESULT key=value ...`` with the worst figures over the runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rich.console import Console

from streams.config import Settings
from streams.run.hops import HopStats
from streams.run.runner import RunOptions, RunReport, run_pipeline

TICK_TO_COMMAND_P99_MS = 50.0
COMMAND_TO_REPORT_P99_MS = 50.0
WORST_LAG_S = 1.0


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """The figures of one run that the targets are about."""

    tick_to_command: HopStats
    command_to_report: HopStats
    worst_lag_s: float
    live_breached: int
    offline_breached: int
    allowance: int
    load_before: float
    load_after: float

    @property
    def meets_targets(self) -> bool:
        """True when every target of the module docstring holds."""
        return (self.tick_to_command.p99 <= TICK_TO_COMMAND_P99_MS
                and self.command_to_report.p99 <= COMMAND_TO_REPORT_P99_MS
                and self.worst_lag_s < WORST_LAG_S
                and self.live_breached <= self.offline_breached + self.allowance)


def figures_of(report: RunReport, load_before: float, load_after: float) -> LiveFigures:
    """The target figures of a finished run."""
    hops = {hop.hop: hop for hop in report.hops}
    offline = report.offline
    return LiveFigures(
        tick_to_command=hops["tick_to_command"], command_to_report=hops["command_to_report"],
        worst_lag_s=max(report.market_wait_max_s.values(), default=float("nan")),
        live_breached=len(report.breached),
        offline_breached=len(offline.breached) if offline else -1,
        allowance=report.breach_allowance(), load_before=load_before, load_after=load_after)


def _load() -> float:
    return os.getloadavg()[0]


def _line(n: int, f: LiveFigures) -> str:
    t, c = f.tick_to_command, f.command_to_report
    return (f"run {n}: tick->command p50 {t.p50:.0f} p99 {t.p99:.0f} max {t.max:.0f} ms;"
            f" command->report p50 {c.p50:.0f} p99 {c.p99:.0f} max {c.max:.0f} ms;"
            f" worst lag <= {1000 * f.worst_lag_s:.0f} ms; past maintenance live"
            f" {f.live_breached} / offline {f.offline_breached} (allowed +{f.allowance});"
            f" load {f.load_before:.2f} -> {f.load_after:.2f};"
            f" {'meets' if f.meets_targets else 'MISSES'} the targets")


def run(settings: Settings, *, runs: int, options: RunOptions) -> list[LiveFigures]:
    """`runs` live runs of the bundled scenario; print each run's figures and a RESULT."""
    console = Console(stderr=True)
    out = Console()
    results = []
    for n in range(1, runs + 1):
        out.print(f"== live run {n}/{runs}: {options.accounts} accounts, {options.speed:g}x,"
                  f" {options.duration_s} s of event time")
        before = _load()
        report = run_pipeline(settings, options, console)
        figures = figures_of(report, before, _load())
        results.append(figures)
        out.print(_line(n, figures), soft_wrap=True)
    worst_t = max(f.tick_to_command.p99 for f in results)
    worst_c = max(f.command_to_report.p99 for f in results)
    worst_lag = max(f.worst_lag_s for f in results)
    gap = max(f.live_breached - f.offline_breached for f in results)
    met = sum(f.meets_targets for f in results)
    out.print(f"RESULT runs={runs} runs_meeting_targets={met} tick_to_command_p99_ms={worst_t:.1f}"
              f" command_to_report_p99_ms={worst_c:.1f} worst_lag_ms={1000 * worst_lag:.0f}"
              f" max_live_minus_offline_breached={gap} accounts={options.accounts}"
              f" speed={options.speed:g}", soft_wrap=True)
    return results
