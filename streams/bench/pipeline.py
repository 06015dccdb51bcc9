"""`aps bench pipeline`: the standard workload end to end through the real broker, four ways.

Variants, each on its own (one at a time; the machine has 2 cores), each on a fresh
embedded Tansu broker started for that run and fed the same bytes:

  aps      the APS worker (`aps worker`: consensus, sequencer and risk agents), unchanged;
  faust    the job as a per-event Faust app (streams.bench.naive_faust);
  quix     the same job in Quix Streams (streams.bench.naive_quix, own virtualenv);
  ceiling  confluent-kafka consume + fastavro decode + produce, no logic (streams.bench.ceiling).

Per variant, one fresh broker and process, two phases (method: bench/README.md):

1. throughput: the book is produced to account.events and loaded by the variant; then a
   backlog of the stream's first observations is produced to oracle.ticks at once and
   drained. Observations/s and revaluations/s are counted from the first observation
   consumed to the last revaluation done (APS: its Prometheus counters polled every 0.1 s;
   the others stamp those instants themselves).
2. latency: the observations that follow the backlog in the stream, paced at half the
   rate just measured; tick -> command latency is the command's Kafka timestamp minus the
   timestamp of the observation that caused it (a command's created_at is the event time
   of the consensus price that caused it, which is the received_at of the observation that
   produced the price: the first observation at or after created_at).

Peak memory is the variant process's peak RSS (VmHWM) over both phases.
The last line is ``RESULT key=value ...``.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.bench.status import peak_rss, read_status
from streams.bench.workload import FEEDS_FILE, Payload, Workload, WorkloadSpec, build_workload
from streams.codecs import decode
from streams.config import Settings
from streams.domain import OracleObservation, ScalingCommand
from streams.errors import InfraError
from streams.infra.broker import EmbeddedBroker, client_config
from streams.infra.ports import free_port
from streams.infra.processes import die_with_parent
from streams.oracle.consensus import ConsensusEngine
from streams.oracle.feeds import FeedRegistry
from streams.paths import PROJECT_ROOT
from streams.run.stack import Stack
from streams.topics import exec_commands, topic_specs

VARIANTS = ("aps", "faust", "quix", "ceiling")
LABELS = {"aps": "(a) APS worker", "faust": "(b) per-event Faust",
          "quix": "(c) Quix Streams", "ceiling": "(d) ceiling: consume+decode+produce"}
BENCH_TOPICS = {"bench.faust.revalue": 4, "bench.quix.revalue": 4, "bench.ceiling.out": 1}
TOPIC_CONFIG = {"retention.ms": "604800000", "retention.bytes": "-1"}
TARGETS = {"faust": 50.0, "quix": 10.0, "ceiling": 0.3, "p99_ms": 50.0}
POLL_S = 0.1
PER_100K = 100_000


@dataclass(frozen=True)
class PipelineOptions:
    """What to run."""

    accounts: int = 100_000
    duration_s: int = 600
    observations: int = 3_000
    naive_observations: int = 30
    ceiling_observations: int = 200_000
    latency_s: float = 20.0
    variants: tuple[str, ...] = VARIANTS
    seed: int = 7
    data_dir: Path = PROJECT_ROOT / ".aps-bench"
    quix_python: Path = PROJECT_ROOT / ".venv-quix" / "bin" / "python"
    timeout_s: float = 1800.0

    def backlog(self, variant: str, available: int) -> int:
        """Observations in the throughput run of `variant` (the ceiling cycles the stream:
        it drains too fast for the stream alone to time it well)."""
        if variant == "ceiling":
            return self.ceiling_observations
        wanted = self.naive_observations if variant in ("faust", "quix") else self.observations
        return available if wanted <= 0 else min(wanted, available)


@dataclass
class Drain:
    """What one run measured."""

    observations: int = 0
    revaluations: int = 0
    seconds: float = 0.0
    load_s: float = 0.0
    peak_rss: int = 0
    commands: list[tuple[int, int]] = field(default_factory=list)  # (created_at, kafka ts)
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def obs_per_s(self) -> float:
        """Observations per second."""
        return self.observations / self.seconds if self.seconds > 0 else 0.0

    @property
    def reval_per_s(self) -> float:
        """Account revaluations per second."""
        return self.revaluations / self.seconds if self.seconds > 0 else 0.0


@dataclass
class VariantResult:
    """Both runs of one variant."""

    name: str
    throughput: Drain
    latency: Drain | None = None
    paced_rate: float = 0.0
    paced_stamps: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float | None:
        """Latency percentile in ms (None without a command)."""
        if not self.latencies_ms:
            return None
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]


Say = Callable[[str], None]


def _say(text: str) -> None:
    print(text, flush=True)


# --- broker and inputs -----------------------------------------------------------------------

def _settings(bootstrap: str, data_dir: Path) -> Settings:
    # the benchmark's broker is not the stack's own: its worker refuses the development keys
    return Settings(kafka_bootstrap=bootstrap, data_dir=data_dir, feeds_file=FEEDS_FILE,
                    command_key=secrets.token_hex(32), report_key=secrets.token_hex(32))


def create_all_topics(bootstrap: str, settings: Settings) -> None:
    """APS's topics (same partition counts) and the benchmark's, with explicit retention
    (Quix Streams derives its changelog topics' settings from it)."""
    wanted = {spec.name: spec.partitions for spec in topic_specs(settings)}
    wanted.update(BENCH_TOPICS)
    admin = AdminClient(client_config(bootstrap))
    futures = admin.create_topics([NewTopic(name, num_partitions=n, replication_factor=1,
                                            config=TOPIC_CONFIG)
                                   for name, n in sorted(wanted.items())])
    for name, future in futures.items():
        try:
            future.result(timeout=30)
        except Exception as exc:
            raise InfraError(f"could not create topic {name}: {exc}") from exc


def _producer(bootstrap: str, linger_ms: int) -> Producer:
    # murmur2 like Java clients, aiokafka (Faust) and Quix: a keyed message lands on the
    # same partition whoever produces it, so the naive variants' topics are co-partitioned
    return Producer(client_config(bootstrap, **{
        "partitioner": "murmur2_random", "linger.ms": linger_ms, "enable.idempotence": False,
        "acks": "all", "queue.buffering.max.messages": 500_000}))


def _produce(producer: Producer, topic: str, key: bytes, value: bytes,
             timestamp: int = 0) -> None:
    while True:
        try:
            if timestamp:
                producer.produce(topic, key=key, value=value, timestamp=timestamp)
            else:
                producer.produce(topic, key=key, value=value)
            return
        except BufferError:
            producer.poll(0.05)


def produce_all(bootstrap: str, topic: str, payloads: Sequence[Payload], say: Say) -> None:
    """Send every payload and wait until all are acknowledged."""
    producer = _producer(bootstrap, linger_ms=20)
    last = time.monotonic()
    for n, (key, value) in enumerate(payloads, start=1):
        _produce(producer, topic, key, value)
        if time.monotonic() - last > 5:
            last = time.monotonic()
            say(f"    {topic}: {n:,}/{len(payloads):,} sent")
    if producer.flush(120):
        raise InfraError(f"{topic}: messages not delivered")


def produce_ticks(bootstrap: str, payloads: Sequence[Payload], rate: float) -> list[int]:
    """Send ticks (at `rate` per second, or at once if rate <= 0); return each one's Kafka
    timestamp (ms)."""
    from streams.topics import ORACLE_TICKS

    producer = _producer(bootstrap, linger_ms=0 if rate > 0 else 5)
    stamps = []
    started = time.monotonic()
    for n, (key, value) in enumerate(payloads):
        if rate > 0:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                producer.poll(0)
                time.sleep(delay)
        stamp = int(time.time() * 1000)
        _produce(producer, ORACLE_TICKS, key, value, timestamp=stamp)
        stamps.append(stamp)
        producer.poll(0)
    if producer.flush(60):
        raise InfraError("oracle.ticks: messages not delivered")
    return stamps


def read_commands(bootstrap: str, chains: Sequence[str]) -> tuple[list[tuple[int, int]],
                                                                  Counter[str]]:
    """Every command on the execution topics: (created_at, Kafka timestamp), by reason."""
    consumer = Consumer(client_config(bootstrap, **{
        "group.id": "bench-commands-reader", "enable.auto.commit": False,
        "fetch.wait.max.ms": 50}))
    metadata = consumer.list_topics(timeout=10)
    parts = [TopicPartition(exec_commands(c), p, 0) for c in chains
             for p in metadata.topics[exec_commands(c)].partitions]
    consumer.assign(parts)
    out: list[tuple[int, int]] = []
    reasons: Counter[str] = Counter()
    idle_since = time.monotonic()
    try:
        while time.monotonic() - idle_since < 1.5:
            messages = consumer.consume(5000, 0.2)
            if messages:
                idle_since = time.monotonic()
            for message in messages:
                if message.error() is not None:
                    continue
                command = decode(message.value(), ScalingCommand)
                out.append((command.created_at, message.timestamp()[1]))
                reasons[command.reason.value] += 1
    finally:
        consumer.close()
    return out, reasons


# --- variant processes -------------------------------------------------------------------------

class VariantProcess:
    """One variant's process: start, progress, peak memory, stop."""

    def __init__(self, name: str, bootstrap: str, run_dir: Path, options: PipelineOptions,
                 backlog: int) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.run_dir = run_dir
        self.options = options
        self.status_path = run_dir / "status.json"
        self.stack: Stack | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.backlog = backlog

    def start(self) -> None:
        """Start the process."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.name == "aps":
            self.stack = Stack(_settings(self.bootstrap, self.run_dir), self.run_dir / "logs",
                               archiver=False)
            self.stack.start_broker()  # topics exist already: creates nothing
            self.stack.start_worker()
            child = self.stack.child("worker")
            self.proc, self.metrics_port = child.proc, child.web_port
            return
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.name == "faust":
            args = [sys.executable, "-m", "streams.bench.naive_faust"]
            env.update(BENCH_BOOTSTRAP=self.bootstrap, BENCH_DATA_DIR=str(self.run_dir / "db"),
                       BENCH_STATUS=str(self.status_path), BENCH_WEB_PORT=str(free_port()),
                       BENCH_FEEDS=str(FEEDS_FILE))
        elif self.name == "quix":
            if not self.options.quix_python.exists():
                raise InfraError(f"{self.options.quix_python} not found: run `make quix-venv`"
                                 " (Quix Streams lives in its own virtualenv)")
            args = [str(self.options.quix_python), "-m", "streams.bench.naive_quix",
                    "--bootstrap", self.bootstrap, "--state-dir", str(self.run_dir / "state"),
                    "--status", str(self.status_path), "--feeds", str(FEEDS_FILE)]
            env["PYTHONPATH"] = str(PROJECT_ROOT)
        else:
            args = [sys.executable, "-m", "streams.bench.ceiling", "--bootstrap",
                    self.bootstrap, "--observations", str(self.backlog),
                    "--status", str(self.status_path)]
        with open(self.run_dir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(args, env=env, cwd=PROJECT_ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=die_with_parent)

    def check(self) -> None:
        """Raise if the process died."""
        if self.stack is not None:
            self.stack.check_alive()
        elif self.proc is not None and self.proc.poll() is not None and self.name != "ceiling":
            log = (self.run_dir / f"{self.name}.log").read_text(errors="replace")
            raise InfraError(f"{self.name} exited with {self.proc.returncode}:\n"
                             + "\n".join(log.splitlines()[-25:]))

    def counters(self) -> dict[str, float]:
        """Current counters: ticks, revaluations, account_events (+ the variant's own)."""
        if self.name == "aps":
            return _aps_counters(self.metrics_port)
        status = read_status(self.status_path)
        if status is None:
            return {}
        return {**status["counters"], "peak_rss": status.get("peak_rss", 0),
                **{f"at.{k}": v for k, v in status["instants"].items()}}

    def peak_rss(self) -> int:
        """Peak resident set size of the process, bytes: its VmHWM while it runs, else
        what it last reported in its status file (the ceiling exits when done)."""
        if self.proc is not None and self.proc.poll() is None:
            return peak_rss(self.proc.pid)
        return int(self.counters().get("peak_rss", 0)) if self.name != "aps" else 0

    def stop(self) -> None:
        """Stop the process."""
        if self.stack is not None:
            self.stack.stop()
            return
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


_METRIC = re.compile(r'^(aps_messages_total\{stage="(\w+)"\}|aps_revaluations_total)\s+(\S+)$',
                     re.MULTILINE)


def _aps_counters(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for match in _METRIC.finditer(text):
        name = f"stage.{match.group(2)}" if match.group(2) else "revaluations"
        out[name] = float(match.group(3))
    out["ticks"] = out.get("stage.consensus", 0.0)
    return out


# --- one run -------------------------------------------------------------------------------

def _wait(what: str, variant: VariantProcess, done: Callable[[dict[str, float]], bool],
          timeout: float, say: Say, show: Callable[[dict[str, float]], str]
          ) -> list[tuple[float, dict[str, float]]]:
    """Poll the variant's counters until `done`; return the polls (wall time, counters)."""
    deadline = time.monotonic() + timeout
    polls: list[tuple[float, dict[str, float]]] = []
    last_print = time.monotonic()
    while True:
        variant.check()
        counters = variant.counters()
        polls.append((time.time(), counters))
        if counters and done(counters):
            return polls
        if time.monotonic() > deadline:
            raise InfraError(f"{variant.name}: timed out after {timeout:.0f}s {what} "
                             f"({show(counters)})")
        if time.monotonic() - last_print > 10:
            last_print = time.monotonic()
            say(f"    {what}: {show(counters)}")
        time.sleep(POLL_S)


def _show(counters: dict[str, float]) -> str:
    keys = ("account_events", "stage.sequencer", "stage.risk", "ticks", "requests",
            "revaluations", "commands")
    return ", ".join(f"{k} {int(counters[k]):,}" for k in keys if k in counters) or "starting"


def _load_book(variant: VariantProcess, workload: Workload, say: Say,
               timeout: float) -> float:
    started = time.monotonic()
    produce_all(variant.bootstrap, "account.events", workload.account_payloads, say)
    wanted = len(workload.account_payloads)
    key = "stage.risk" if variant.name == "aps" else "account_events"
    _wait("loading the book", variant, lambda c: c.get(key, 0) >= wanted, timeout, say, _show)
    return time.monotonic() - started


def _drained(variant: VariantProcess, wanted: int, risk_inputs: int = 0
             ) -> Callable[[dict[str, float]], bool]:
    """True once every tick is consumed and everything it caused is done: the naive
    variants' revaluations equal the requests they sent; APS's risk stage has consumed
    `risk_inputs` messages (every account event, and every consensus price once per
    partition: counted beforehand by running the same consensus engine on the same ticks)."""

    def done(c: dict[str, float]) -> bool:
        if c.get("ticks", 0) < wanted:
            return False
        if variant.name == "ceiling":
            return "at.last_done_at" in c
        if variant.name != "aps":
            return c.get("revaluations", 0) >= c.get("requests", 0)
        return c.get("stage.risk", 0) >= risk_inputs

    return done


def consensus_prices(feeds: FeedRegistry, ticks: Sequence[Payload]) -> int:
    """Consensus prices the APS consensus stage makes of `ticks` (same engine, same order)."""
    engine = ConsensusEngine(feeds)
    return sum(len(engine.observe(decode(value, OracleObservation)).prices)
               for _, value in ticks)


def _risk_inputs(workload: Workload, ticks: Sequence[Payload]) -> int:
    """Messages APS's risk stage consumes for the book and `ticks` (no executors run, so
    no execution reports): each account event once, each price once per partition."""
    partitions = Settings().partitions
    return len(workload.account_payloads) + partitions * consensus_prices(workload.feeds, ticks)


def _window(variant: VariantProcess, polls: list[tuple[float, dict[str, float]]],
            before: dict[str, float]) -> tuple[float, float]:
    """(seconds, revaluations) between the first tick consumed and the last revaluation."""
    last = polls[-1][1]
    if variant.name != "aps":
        name = "at.last_done_at" if variant.name == "ceiling" else "at.last_revaluation_at"
        end = last.get(name, 0.0)
        return end - last.get("at.first_tick_at", end), last.get("revaluations", 0.0)
    base_ticks = before.get("ticks", 0.0)
    first = next(t for t, c in polls if c.get("ticks", 0.0) > base_ticks)
    # each poll is up to one interval late: the two errors cancel on average
    return polls[-1][0] - first, last.get("revaluations", 0.0) - before.get("revaluations", 0.0)


def run_variant(name: str, workload: Workload, backlog: Sequence[Payload],
                options: PipelineOptions, say: Say) -> VariantResult:
    """Both phases of one variant on a fresh broker and process: load the book, drain
    `backlog`, then (except the ceiling) pace the observations that follow it in the stream
    at half the measured rate for `options.latency_s` and time tick -> command."""
    run_dir = options.data_dir / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    broker = EmbeddedBroker(log_path=run_dir / "broker.log").start()
    variant = VariantProcess(name, broker.bootstrap, run_dir, options, len(backlog))
    try:
        create_all_topics(broker.bootstrap, _settings(broker.bootstrap, run_dir))
        variant.start()
        drain = Drain()
        if name != "ceiling":
            drain.load_s = _load_book(variant, workload, say, options.timeout_s)
            say(f"    book loaded in {drain.load_s:.1f} s")
        before = variant.counters()
        produce_ticks(broker.bootstrap, backlog, 0.0)
        expected = _risk_inputs(workload, backlog) if name == "aps" else 0
        polls = _wait("draining", variant, _drained(variant, len(backlog), expected),
                      options.timeout_s, say, _show)
        drain.observations = len(backlog)
        drain.seconds, revaluations = _window(variant, polls, before)
        drain.revaluations = int(revaluations)
        say(f"    {drain.observations:,} observations, {drain.revaluations:,} revaluations "
            f"in {drain.seconds:.2f} s: {drain.obs_per_s:,.1f} obs/s, "
            f"{drain.reval_per_s:,.0f} revaluations/s")
        result = VariantResult(name, drain)
        if name != "ceiling" and options.latency_s > 0:
            _paced_phase(result, variant, workload, len(backlog), options, say)
        drain.peak_rss = variant.peak_rss()
        if name != "ceiling":
            commands, drain.reasons = read_commands(broker.bootstrap,
                                                    _settings("", run_dir).chains)
            last = workload.observations[len(backlog) - 1].received_at
            drain.commands = [c for c in commands if c[0] <= last]
            if result.latency is not None:
                result.latency.commands = [c for c in commands if c[0] > last]
                times = [o.received_at for o in
                         workload.observations[len(backlog):][:result.latency.observations]]
                result.latencies_ms = tick_latencies(times, result.paced_stamps,
                                                     result.latency.commands)
        return result
    finally:
        variant.stop()
        broker.stop()


def _paced_phase(result: VariantResult, variant: VariantProcess, workload: Workload,
                 offset: int, options: PipelineOptions, say: Say) -> None:
    """Send the observations after the backlog at half the drained rate; wait for them."""
    rate = result.throughput.obs_per_s / 2
    available = len(workload.tick_payloads) - offset
    count = max(1, min(available, int(rate * options.latency_s)))
    if available <= 0:
        say("    no observations left after the backlog for the latency phase")
        return
    result.paced_rate = rate
    say(f"    latency: {count:,} further observations paced at {rate:,.1f}/s (half the "
        f"measured maximum)")
    ticks = workload.tick_payloads[offset:offset + count]
    expected = _risk_inputs(workload, workload.tick_payloads[:offset + count]) \
        if variant.name == "aps" else 0
    result.paced_stamps = produce_ticks(variant.bootstrap, ticks, rate)
    _wait("processing the paced observations", variant,
          _drained(variant, offset + count, expected), options.timeout_s, say, _show)
    result.latency = Drain(observations=count)


def tick_latencies(ticks: Sequence[int], stamps: Sequence[int],
                   commands: Sequence[tuple[int, int]]) -> list[float]:
    """Tick -> command latencies (ms): each command's Kafka timestamp minus that of the
    first observation whose event time (received_at) is at or after the command's
    created_at (the observation that produced the price that caused it). `ticks` are the
    observations' event times in the order sent (ascending), `stamps` their timestamps."""
    out = []
    for created_at, stamp in commands:
        index = bisect.bisect_left(ticks, created_at)
        if index < len(ticks):
            out.append(float(stamp - stamps[index]))
    return sorted(out)


# --- the benchmark ------------------------------------------------------------------------------

def run_benchmark(options: PipelineOptions, say: Say = _say
                  ) -> tuple[Workload, list[VariantResult]]:
    """Every selected variant, one at a time."""
    workload = build_workload(WorkloadSpec(options.accounts, options.duration_s, options.seed),
                              say)
    say(f"workload: {workload.describe()}")
    results = []
    for name in options.variants:
        count = options.backlog(name, len(workload.tick_payloads))
        say(f"== {LABELS[name]}: backlog of {count:,} observations")
        backlog = [workload.tick_payloads[n % len(workload.tick_payloads)]
                   for n in range(count)]
        result = run_variant(name, workload, backlog, options, say)
        if result.latency is not None:
            say(f"    {len(result.latencies_ms):,} commands from the paced observations; "
                f"tick -> command p50 {_ms(result.percentile(50))}, "
                f"p99 {_ms(result.percentile(99))}")
        say(f"    {len(result.throughput.commands):,} commands from the backlog; peak RSS "
            f"{result.throughput.peak_rss / 2**20:,.0f} MiB")
        results.append(result)
    return workload, results


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} ms"


def _prefix_commands(drain: Drain, workload: Workload, observations: int) -> int:
    """Commands caused by the first `observations` observations."""
    if observations <= 0 or not workload.observations:
        return 0
    last = workload.observations[min(observations, len(workload.observations)) - 1].received_at
    return sum(1 for created_at, _ in drain.commands if created_at <= last)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def report(results: Sequence[VariantResult], options: PipelineOptions, load: tuple[float, ...],
           say: Say = _say) -> str:
    """Print the table and the verdicts; return the RESULT line."""
    by = {r.name: r for r in results}
    per = PER_100K / max(options.accounts, 1)
    say("")
    say(f"{'variant':<38} {'obs/s':>9} {'reval/s':>11} {'cmds':>6} {'book s':>7} "
        f"{'paced/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'RSS MiB':>8} {'/100k':>7}")
    for r in results:
        d = r.throughput
        say(f"{LABELS[r.name]:<38} {d.obs_per_s:>9,.1f} {d.reval_per_s:>11,.0f} "
            f"{len(d.commands):>6,} {d.load_s:>7.1f} {r.paced_rate:>8,.1f} "
            f"{_num(r.percentile(50)):>8} {_num(r.percentile(99)):>8} "
            f"{d.peak_rss / 2**20:>8,.0f} {d.peak_rss * per / 2**20:>7,.0f}")
    fields = {"accounts": options.accounts}
    aps = by.get("aps")
    for name, r in by.items():
        fields[f"{name}_obs_per_s"] = round(r.throughput.obs_per_s, 1)
        if name != "ceiling":
            fields[f"{name}_reval_per_s"] = round(r.throughput.reval_per_s)
            fields[f"{name}_rss_mib_per_100k"] = round(r.throughput.peak_rss * per / 2**20)
            fields[f"{name}_p99_ms"] = _num(r.percentile(99))
    if aps is not None:
        fields["aps_p50_ms"] = _num(aps.percentile(50))
        say("")
        for name, what in (("faust", "revaluations/s"), ("quix", "revaluations/s"),
                           ("ceiling", "messages/s")):
            other = by.get(name)
            if other is None:
                continue
            if name == "ceiling":
                ratio = _ratio(aps.throughput.obs_per_s, other.throughput.obs_per_s)
            else:
                ratio = _ratio(aps.throughput.reval_per_s, other.throughput.reval_per_s)
            fields[f"ratio_{name}"] = round(ratio, 3 if name == "ceiling" else 1)
            verdict = "meets" if ratio >= TARGETS[name] else "MISSES"
            say(f"APS / {LABELS[name]}: {ratio:,.2f}x in {what} (target >= {TARGETS[name]:g}x:"
                f" {verdict})")
        p99 = aps.percentile(99)
        if p99 is not None:
            verdict = "meets" if p99 <= TARGETS["p99_ms"] else "MISSES"
            say(f"APS tick -> command p99 at half load: {p99:,.1f} ms over "
                f"{len(aps.latencies_ms):,} commands (target <= {TARGETS['p99_ms']:g} ms: "
                f"{verdict})")
    fields["load_before"] = round(load[0], 2)
    fields["load_after"] = round(load[1], 2)
    return "RESULT " + " ".join(f"{k}={v}" for k, v in fields.items())


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def run(options: PipelineOptions) -> None:
    """`aps bench pipeline`: run, print the table, end with the RESULT line."""
    unknown = [v for v in options.variants if v not in VARIANTS]
    if unknown:
        raise InfraError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    before = os.getloadavg()[0]
    say = _say
    say(f"aps bench pipeline: variants {', '.join(options.variants)}; {os.cpu_count()} cores, "
        f"load average {before:.2f} before")
    started = time.monotonic()
    workload, results = run_benchmark(options, say)
    after = os.getloadavg()[0]
    workload_note = (f"throughput backlogs: {options.observations or 'all'} observations for"
                     f" aps/ceiling, {options.naive_observations} for faust/quix; latency runs"
                     f" {options.latency_s:g} s paced")
    line = report(results, options, (before, after), say)
    say(f"commands caused by the first {options.naive_observations} observations (the naive"
        f" variants' backlog): " + ", ".join(
            f"{r.name} {_prefix_commands(r.throughput, workload, options.naive_observations):,}"
            for r in results if r.name != "ceiling"))
    say(f"load average {before:.2f} before, {after:.2f} after; {workload_note}; "
        f"finished in {time.monotonic() - started:.0f} s")
    say(line)


def with_variants(options: PipelineOptions, variants: str) -> PipelineOptions:
    """`options` running the comma-separated `variants`."""
    chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
    return replace(options, variants=chosen)
