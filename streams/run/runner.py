"""`aps run`: the bundled scenario through the whole pipeline, with progress and a summary.

Order of a run: clean the previous embedded run's local state, start the broker (embedded
unless APS_KAFKA_BOOTSTRAP is set) and create the topics, start the worker and one executor
per chain and the archiver as processes (the archiver at a lower priority, so that on a
busy machine the decision path gets the CPU first), load the book of accounts and wait
until the sequencer has put every account event on risk.inputs (so every partition's log
starts with its accounts), play the oracle observations paced in event time, wait until
the pipeline is drained (every
command has a report, nothing moved for a while, every consumer group, the archiver's
included, has committed every message the monitor saw), read the processes' metrics, stop
the archiver (it commits and closes the archive), read the archive's row counts, run the
offline twin of the scenario, print the summary, stop everything.

Progress is measured by counting messages, never by high watermarks: Tansu 0.6 reports a
partition's high watermark as the base offset of its last record batch plus one, which
undercounts any topic written in multi-record batches.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console

from streams.app.executor_app import executor_app_id
from streams.app.worker import APP_ID
from streams.archive import history
from streams.archive.archiver import GROUP_ID as ARCHIVER_GROUP
from streams.archive.archiver import archived_topics
from streams.archive.backends import open_archive
from streams.config import Settings
from streams.errors import InfraError
from streams.executors.chains import load_chain_profiles
from streams.infra.processes import cpu_seconds
from streams.oracle.feeds import load_feeds
from streams.risk.settings import engine_config_for
from streams.run.hops import HopStats, hop_latencies, stale_quotes
from streams.run.lag import group_behind
from streams.run.metrics import (
    archive_lag_max,
    archived_rows,
    stage_busy,
    stage_wait_buckets,
    stage_wait_max,
    worst_wait_between,
)
from streams.run.monitor import TopicMonitor
from streams.run.offline import OfflineResult, run_offline
from streams.run.producer import ScenarioProducer
from streams.run.stack import Stack
from streams.scenario.bundled import Scenario, bundled_scenario
from streams.topics import (
    ACCOUNT_EVENTS,
    EXECUTION_REPORTS,
    ORACLE_TICKS,
    RISK_INPUTS,
    exec_commands,
)

NEAR_LIQUIDATION_RATIO = 1.25
STACK_PARTITIONS = 1


def stack_settings(settings: Settings, partitions: int | None = None) -> Settings:
    """The settings of an `aps run` stack: `partitions` if given; else APS_PARTITIONS when it
    is set or the broker is external (its topics exist already); else one partition.

    The stack runs one worker, and a partition is what a worker owns: with more partitions
    than workers every price is applied once per partition (measured on the bundled crash:
    4 partitions cost the worker ~1.5x the CPU per price and the broker ~1.5x, and double
    the tick -> command latency, docs/performance.md), for no parallelism in return.
    """
    if partitions is None:
        if "partitions" in settings.given or not settings.embedded_broker:
            return settings
        partitions = STACK_PARTITIONS
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return dataclasses.replace(settings, partitions=partitions,
                               given=settings.given | {"partitions"})


@dataclass(frozen=True)
class RunOptions:
    """What to run and how fast."""

    accounts: int = 400
    seed: int = 7
    duration_s: int = 300
    speed: float = 3.0
    start_timeout_s: float = 180.0
    drain_timeout_s: float = 240.0
    quiet_s: float = 3.0
    malformed_inputs: bool = True
    offline: bool = True


@dataclass
class RunReport:
    """What came out of a run."""

    scenario: Scenario
    topic_counts: dict[str, int]
    commands_by_reason: Counter[str]
    commands_by_chain: Counter[str]
    reports_by_status: Counter[str]
    dead_letters_by_reason: Counter[str]
    accounts_with_commands: set[str]
    commands_without_report: list[str]
    near_liquidation: list[tuple[str, float]]
    breached: list[str]
    live_commands: set[str] = field(default_factory=set)
    hops: list[HopStats] = field(default_factory=list)
    # commands emitted by a later price than their quote's, from that quote (streams.run.hops)
    stale_quotes: HopStats | None = None
    stage_wait_max_s: dict[str, float] = field(default_factory=dict)
    # bucket bound of the worst lag while the market played (the book load excluded)
    market_wait_max_s: dict[str, float] = field(default_factory=dict)
    stage_busy_s: dict[str, float] = field(default_factory=dict)
    archive_lag_max_s: float | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)
    offline: OfflineResult | None = None
    archive_counts: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def archive_matches(self) -> bool:
        """True when every topic's archived rows equal the messages in the topic."""
        return all(self.archive_counts.get(t, 0) == n for t, n in self.topic_counts.items())

    @property
    def accounts(self) -> int:
        """Accounts in the scenario's book."""
        return len({e.account_id for e in self.scenario.account_events})

    def breach_allowance(self) -> int:
        """How many more accounts past maintenance than offline a live run may have:
        max(2, 1% of the accounts) (the target of docs/performance.md)."""
        return max(2, math.ceil(0.01 * self.accounts))

    @property
    def live_matches_offline(self) -> bool | None:
        """True when live is within `breach_allowance` of offline (None: no offline run)."""
        if self.offline is None:
            return None
        return len(self.breached) <= len(self.offline.breached) + self.breach_allowance()


def reset_embedded_state(settings: Settings) -> None:
    """Remove local state of a previous embedded run: its broker kept topics in memory only,
    so RocksDB tables and the embedded archive would refer to offsets that no longer exist."""
    data = settings.data_dir
    if not data.exists():
        return
    for path in data.iterdir():
        if path.name.startswith(("worker-", "executor-", "archiver-")) or (
                path == settings.chdb_path and settings.embedded_archive):
            shutil.rmtree(path, ignore_errors=True)


def archive_topic_counts(settings: Settings) -> dict[str, int]:
    """Distinct archived messages per topic (every table, undecodable messages included)."""
    backend = open_archive(settings)
    try:
        result = history.counts(backend)
    finally:
        backend.close()
    counts: Counter[str] = Counter()
    for _table, topic, messages, _stored in result.rows:
        if topic:
            counts[topic] += int(messages)
    return dict(counts)


def run_pipeline(settings: Settings, options: RunOptions, console: Console | None = None,
                 on_drained: Callable[[str], None] | None = None) -> RunReport:
    """Run the bundled scenario end to end and return what came out.

    `on_drained(bootstrap)` is called once the pipeline is drained, before anything stops
    (tests use it to read topics).
    """
    console = console or Console(stderr=True)
    started = time.monotonic()
    engine_config_for(settings)  # a bad settings file stops the run before anything starts
    if settings.embedded_broker:
        reset_embedded_state(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    scenario = bundled_scenario(accounts=options.accounts, seed=options.seed,
                                duration_s=options.duration_s, feeds_file=settings.feeds_file,
                                chains=settings.chains)
    with Stack(settings, settings.data_dir / "logs", archiver=True) as stack:
        where = "embedded Tansu" if settings.embedded_broker else settings.kafka_bootstrap
        console.print(f"[bold]APS[/] starting broker ({where}); {settings.partitions} "
                      f"partition(s) per partitioned topic")
        bootstrap = stack.start_broker()
        stack.start_processes()
        console.print(f"started {', '.join(c.name for c in stack.children)} "
                      f"(logs in {stack.log_dir})")
        monitor = TopicMonitor(bootstrap, settings).start()
        try:
            run = _Run(stack, monitor, options, console)
            producer = ScenarioProducer(bootstrap, idempotent=not settings.embedded_broker)
            try:
                run.load_book(producer, scenario)
                ports = [child.web_port for child in stack.children]
                waits_before_market = stage_wait_buckets(ports)
                run.play_market(producer, scenario)
            finally:
                producer.close()
            run.drain()
            cpu = stack.cpu_seconds()
            own = cpu_seconds(os.getpid())
            if own is not None:
                cpu["aps run (scenario, monitor)"] = own
            waits = stage_wait_max(ports)
            market_waits = worst_wait_between(waits_before_market, stage_wait_buckets(ports))
            busy = stage_busy(ports)
            archive_lag = archive_lag_max(ports)
            if on_drained is not None:
                on_drained(bootstrap)
            stack.stop_process("archiver")  # commits its last batch and closes the archive
        finally:
            monitor.stop()
        report = _report(scenario, monitor, settings.partitions)
        report.stage_wait_max_s = waits
        report.market_wait_max_s = market_waits
        report.stage_busy_s = busy
        report.cpu_s = cpu
        report.archive_lag_max_s = archive_lag
    report.archive_counts = archive_topic_counts(settings)
    if options.offline:
        report.offline = _offline(settings, scenario, console)
    report.elapsed_s = time.monotonic() - started
    return report


def _offline(settings: Settings, scenario: Scenario, console: Console) -> OfflineResult:
    """The offline twin of the run (streams.run.offline), with a progress line."""
    started = time.monotonic()
    with console.status("offline run: the same book and prices, no broker") as spinner:
        def progress(done: int, total: int) -> None:
            spinner.update(f"offline run: {done}/{total} observations")

        result = run_offline(scenario, load_feeds(settings.feeds_file),
                             load_chain_profiles(settings.chains_file), settings.partitions,
                             config=engine_config_for(settings), on_progress=progress)
    console.print(f"offline run: {result.prices} prices, {len(result.commands)} commands in "
                  f"{time.monotonic() - started:.0f}s")
    return result


class _Run:
    """The waiting steps of a run, each watching the stack and the monitor."""

    def __init__(self, stack: Stack, monitor: TopicMonitor, options: RunOptions,
                 console: Console) -> None:
        self.stack = stack
        self.monitor = monitor
        self.options = options
        self.console = console
        settings = stack.settings
        self.groups = {
            APP_ID: [ORACLE_TICKS, ACCOUNT_EVENTS, EXECUTION_REPORTS, RISK_INPUTS],
            **{executor_app_id(c): [exec_commands(c)] for c in settings.chains},
            ARCHIVER_GROUP: archived_topics(settings),
        }

    def check(self) -> None:
        """Raise if a process died or the monitor failed."""
        self.stack.check_alive()
        self.monitor.check()

    def wait(self, what: str, condition: Callable[[], bool], timeout: float,
             status: Callable[[], str]) -> None:
        """Poll `condition` until it holds; raise InfraError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.console.status(what) as spinner:
            while not condition():
                self.check()
                if time.monotonic() > deadline:
                    raise InfraError(f"timed out after {timeout:.0f}s: {what} ({status()})")
                spinner.update(f"{what} — {status()}")
                time.sleep(0.25)

    def load_book(self, producer: ScenarioProducer, scenario: Scenario) -> None:
        """Send the book and wait until every account event is on risk.inputs."""
        events = scenario.account_events
        producer.send_account_events(events)
        if self.options.malformed_inputs:
            for account_id, payload in scenario.malformed_account_events:
                producer.send_raw(ACCOUNT_EVENTS, account_id.encode(), payload)
        self.console.print(f"book: {len({e.account_id for e in events})} accounts, "
                           f"{len(events)} events sent to {ACCOUNT_EVENTS}")

        def sequenced() -> int:
            return self.monitor.count(RISK_INPUTS)

        self.wait("waiting for the worker to sequence the book",
                  lambda: sequenced() >= len(events), self.options.start_timeout_s,
                  lambda: f"{sequenced()}/{len(events)} on {RISK_INPUTS}")

    def play_market(self, producer: ScenarioProducer, scenario: Scenario) -> None:
        """Send the oracle observations paced in event time, printing progress."""
        observations = scenario.observations
        total = len(observations)
        self.console.print(f"market: {total} oracle observations over "
                           f"{self.options.duration_s / 60:.0f} min of event time, played at "
                           f"{self.options.speed:g}x")
        if self.options.malformed_inputs:
            for bad in scenario.malformed_ticks:
                producer.send_raw(ORACLE_TICKS, b"malformed", bad)
        last_print = [0.0]

        def progress(sent: int) -> None:
            now = time.monotonic()
            if now - last_print[0] < 2.0 and sent < total:
                return
            last_print[0] = now
            self.check()
            archived = archived_rows(self.stack.child("archiver").web_port)
            self.console.print(f"  ticks {sent:>6}/{total}  {self.monitor.line()}  archived "
                               f"{'?' if archived is None else archived}", soft_wrap=True)

        producer.send_observations(observations, self.options.speed, progress)

    def drain(self) -> None:
        """Wait until the pipeline is idle: nothing moved for `quiet_s` seconds, every
        command has a report, every consumer group has committed every message the monitor
        has seen on its inputs (Faust commits only after processing and flushing what the
        processing produced), the archiver's group too (it commits after inserting)."""
        last_snapshot: tuple[tuple[str, int], ...] = ()
        last_change = time.monotonic()
        behind: int | str = "?"

        def drained() -> bool:
            nonlocal last_snapshot, last_change, behind
            snapshot = self.monitor.snapshot()
            if snapshot != last_snapshot:
                last_snapshot, last_change = snapshot, time.monotonic()
                return False
            if time.monotonic() - last_change < self.options.quiet_s or self.monitor.unreported():
                return False
            behind = sum(group_behind(self.stack.bootstrap, group, self.monitor.ends(topics))
                         for group, topics in self.groups.items())
            return behind == 0

        def status() -> str:
            missing = self.monitor.unreported_ids()
            without = f"; without a report yet: {', '.join(missing)} ..." if missing else ""
            return (f"{self.monitor.line()}, uncommitted {behind} (archiver included), "
                    f"monitor consumer errors {self.monitor.errors}{without}")

        self.wait("draining the pipeline", drained, self.options.drain_timeout_s, status)


def _report(scenario: Scenario, monitor: TopicMonitor, partitions: int) -> RunReport:
    with monitor.lock:
        f = monitor.figures
        accounts = dict(f.accounts)
        near = sorted(((a, s.min_margin_ratio) for a, s in accounts.items()
                       if s.min_margin_ratio < NEAR_LIQUIDATION_RATIO), key=lambda x: x[1])
        return RunReport(
            scenario=scenario,
            topic_counts=dict(f.per_topic),
            commands_by_reason=f.commands_by("reason"),
            commands_by_chain=f.commands_by("chain"),
            reports_by_status=f.reports_by_status(),
            dead_letters_by_reason=Counter(f"{d.stage}:{d.reason}" for d in f.dead_letters),
            accounts_with_commands={c.account_id for c in f.commands.values()},
            commands_without_report=sorted(set(f.commands) - set(f.reports)),
            near_liquidation=near,
            breached=sorted(a for a, s in accounts.items() if s.breached_maintenance),
            live_commands=set(f.commands),
            hops=hop_latencies(f.hops, partitions),
            stale_quotes=stale_quotes(f.hops),
        )
