"""`aps run`: the bundled scenario through the whole pipeline, with progress and a summary.

Order of a run: clean the previous embedded run's local state, start the broker (embedded
unless APS_KAFKA_BOOTSTRAP is set) and create the topics, start the worker, one executor per
chain and the archiver, load the book of accounts and wait until the sequencer has put every
account event on risk.inputs (so every partition's log starts with its accounts), play the
oracle observations paced in event time, wait until the pipeline is drained (every command
has a report, every consumer group has committed everything, nothing moved for a while),
stop the archiver, read the archive's row counts, print the summary, stop everything.
"""

from __future__ import annotations

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
from streams.archive.backends import open_archive
from streams.config import Settings
from streams.errors import InfraError
from streams.run.lag import group_lag
from streams.run.monitor import ACCOUNTS_CHANGELOG, TopicMonitor
from streams.run.producer import ScenarioProducer
from streams.run.stack import Stack
from streams.scenario.bundled import Scenario, bundled_scenario
from streams.topics import (
    ACCOUNT_EVENTS,
    EXECUTION_REPORTS,
    ORACLE_PRICES,
    ORACLE_TICKS,
    RISK_INPUTS,
    exec_commands,
    topic_specs,
)

NEAR_LIQUIDATION_RATIO = 1.25


@dataclass(frozen=True)
class RunOptions:
    """What to run and how fast."""

    accounts: int = 400
    seed: int = 7
    duration_s: int = 300
    speed: float = 12.0
    start_timeout_s: float = 180.0
    drain_timeout_s: float = 180.0
    quiet_s: float = 3.0
    malformed_inputs: bool = True


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
    archive_counts: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def archive_matches(self) -> bool:
        """True when every topic's archived rows equal the messages in the topic."""
        return all(self.archive_counts.get(t, 0) == n for t, n in self.topic_counts.items())


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


def watched_topics(settings: Settings) -> list[str]:
    """Every topic of the pipeline."""
    return [spec.name for spec in topic_specs(settings)]


def run_pipeline(settings: Settings, options: RunOptions, console: Console | None = None,
                 on_stack: Callable[[Stack], None] | None = None) -> RunReport:
    """Run the bundled scenario end to end and return what came out."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    if settings.embedded_broker:
        reset_embedded_state(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    scenario = bundled_scenario(accounts=options.accounts, seed=options.seed,
                                duration_s=options.duration_s, feeds_file=settings.feeds_file,
                                chains=settings.chains)
    with Stack(settings, settings.data_dir / "logs") as stack:
        where = "embedded Tansu" if settings.embedded_broker else settings.kafka_bootstrap
        console.print(f"[bold]APS[/] starting broker ({where})")
        bootstrap = stack.start_broker()
        stack.start_processes()
        if on_stack is not None:
            on_stack(stack)
        console.print(f"started {', '.join(c.name for c in stack.children)} "
                      f"(logs in {stack.log_dir})")
        monitor = TopicMonitor(bootstrap, watched_topics(settings)).start()
        try:
            producer = ScenarioProducer(bootstrap)
            _load_book(stack, monitor, producer, scenario, options, console)
            _play_market(stack, monitor, producer, scenario, options, console)
            _drain(stack, monitor, bootstrap, settings, options, console)
            counts = monitor.end_offsets()
            stack.stop_process("archiver")
            report = _report(scenario, monitor, counts)
        finally:
            monitor.stop()
    report.archive_counts = archive_topic_counts(settings)
    report.elapsed_s = time.monotonic() - started
    return report


def _wait(stack: Stack, what: str, condition: Callable[[], bool], timeout: float,
          console: Console, status: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    with console.status(what) as spinner:
        while not condition():
            stack.check_alive()
            if time.monotonic() > deadline:
                raise InfraError(f"timed out after {timeout:.0f}s: {what} ({status()})")
            spinner.update(f"{what} — {status()}")
            time.sleep(0.25)


def _load_book(stack: Stack, monitor: TopicMonitor, producer: ScenarioProducer,
               scenario: Scenario, options: RunOptions, console: Console) -> None:
    events = scenario.account_events
    producer.send_account_events(events)
    console.print(f"book: {len({e.account_id for e in events})} accounts, {len(events)} events "
                  f"sent to {ACCOUNT_EVENTS}")

    def sequenced() -> int:
        with monitor.lock:
            return monitor.figures.per_topic[RISK_INPUTS]

    _wait(stack, "waiting for the worker to sequence the book", lambda: sequenced() >= len(events),
          options.start_timeout_s, console, lambda: f"{sequenced()}/{len(events)} on {RISK_INPUTS}")


def _play_market(stack: Stack, monitor: TopicMonitor, producer: ScenarioProducer,
                 scenario: Scenario, options: RunOptions, console: Console) -> None:
    observations = scenario.observations
    total = len(observations)
    minutes = options.duration_s / 60
    console.print(f"market: {total} oracle observations over {minutes:.0f} min of event time, "
                  f"played at {options.speed:g}x")
    if options.malformed_inputs:
        for bad in scenario.malformed_ticks:
            producer.send_raw(ORACLE_TICKS, b"malformed", bad)
    last_print = [0.0]

    def progress(sent: int) -> None:
        now = time.monotonic()
        if now - last_print[0] < 2.0 and sent < total:
            return
        last_print[0] = now
        stack.check_alive()
        with monitor.lock:
            f = monitor.figures
            console.print(f"  ticks {sent:>6}/{total}  prices {f.per_topic[ORACLE_PRICES]:>6}  "
                          f"commands {len(f.commands):>5}  reports {len(f.reports):>5}  "
                          f"dead letters {len(f.dead_letters):>3}")

    producer.send_observations(observations, options.speed, progress)


def _drain(stack: Stack, monitor: TopicMonitor, bootstrap: str, settings: Settings,
           options: RunOptions, console: Console) -> None:
    groups = {
        APP_ID: [ORACLE_TICKS, ACCOUNT_EVENTS, ORACLE_PRICES, EXECUTION_REPORTS, RISK_INPUTS],
        ARCHIVER_GROUP: [*watched_topics(settings), ACCOUNTS_CHANGELOG],
        **{executor_app_id(c): [exec_commands(c)] for c in settings.chains},
    }
    state = {"snapshot": None, "since": time.monotonic(), "lag": -1}

    def drained() -> bool:
        with monitor.lock:
            f = monitor.figures
            snapshot = (tuple(sorted(f.per_topic.items())), len(f.reports))
            unreported = len(set(f.commands) - set(f.reports))
        if snapshot != state["snapshot"]:
            state["snapshot"], state["since"] = snapshot, time.monotonic()
            return False
        if unreported or time.monotonic() - state["since"] < options.quiet_s:
            return False
        state["lag"] = sum(group_lag(bootstrap, g, topics) for g, topics in groups.items())
        return state["lag"] == 0

    def status() -> str:
        with monitor.lock:
            f = monitor.figures
            return (f"{len(f.commands)} commands, {len(f.reports)} reports, "
                    f"uncommitted {state['lag']}")

    _wait(stack, "draining the pipeline", drained, options.drain_timeout_s, console, status)


def _report(scenario: Scenario, monitor: TopicMonitor, counts: dict[str, int]) -> RunReport:
    with monitor.lock:
        f = monitor.figures
        accounts = dict(f.accounts)
        near = sorted(((a, s.min_margin_ratio) for a, s in accounts.items()
                       if s.min_margin_ratio < NEAR_LIQUIDATION_RATIO), key=lambda x: x[1])
        return RunReport(
            scenario=scenario,
            topic_counts=counts,
            commands_by_reason=f.commands_by("reason"),
            commands_by_chain=f.commands_by("chain"),
            reports_by_status=f.reports_by_status(),
            dead_letters_by_reason=Counter(f"{d.stage}:{d.reason}" for d in f.dead_letters),
            accounts_with_commands={c.account_id for c in f.commands.values()},
            commands_without_report=sorted(set(f.commands) - set(f.reports)),
            near_liquidation=near,
            breached=sorted(a for a, s in accounts.items() if s.breached_maintenance),
        )
