"""`aps bench oracle`: observations per second through the consensus stage on one core.

The stream is synthetic but shaped like production: every feed of the configured registry
(infra/feeds.toml by default) publishes from seeded random-walk price paths the way its
oracle does (Pyth about once a second, Chainlink on deviation or heartbeat, sequencer
status rounds), with a +30 % spike on one feed, a silent feed, an L2 sequencer outage and
re-delivered duplicates mixed in. The timed loop is exactly what the worker runs per
observation: ``ConsensusEngine.observe``. For scale, the same run also times the Avro
codec work the worker does around it (decode the observation, encode the prices).
"""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from streams.codecs import decode, encode
from streams.config import load_settings
from streams.domain import OracleObservation, OracleSource
from streams.oracle.consensus import ConsensusEngine
from streams.oracle.feeds import FeedRegistry, load_feeds
from streams.oracle.synthetic import (
    SequencerOutage,
    Silence,
    Spike,
    observations_from_paths,
    random_walk_paths,
)

TARGET_PER_S = 100_000
START_MS = 1_714_748_300_000
START_PRICES = {"BTC": 64_000.0, "ETH": 3_200.0, "SOL": 150.0}
DUPLICATE_EVERY = 97
TIMED_RUNS = 3
CODEC_SAMPLE = 50_000


def run(observations: int = 300_000) -> None:
    """Print throughput figures of the consensus stage; the last line is the RESULT line."""
    with _one_core() as cpu:
        registry = load_feeds(load_settings().feeds_file)
        started = time.perf_counter()
        stream = build_stream(registry, observations)
        generated_s = time.perf_counter() - started
        _print_stream(registry, stream, generated_s, cpu)
        _warm_up(registry, stream)
        rates, engine = _timed_runs(registry, stream)
        best = max(rates)
        _print_outputs(engine)
        codec_rate = _codec_rate(registry, stream[:CODEC_SAMPLE])
        print(f"consensus only:  {best:,.0f} observations/s best of {TIMED_RUNS} "
              f"(median {statistics.median(rates):,.0f}); {1e6 / best:.2f} us per observation")
        print(f"avro codec only: {codec_rate:,.0f} observations/s (decode observation + encode "
              f"its prices, {min(CODEC_SAMPLE, len(stream)):,} observations)")
        print(f"consensus vs codec: consensus costs {codec_rate / best:.2f}x the codec work "
              f"per observation")
        verdict = "meets" if best >= TARGET_PER_S else "MISSES"
        print(f"target {TARGET_PER_S:,} observations/s on one core: {verdict} "
              f"({best / TARGET_PER_S:.2f}x)")
        print(f"RESULT observations_per_s={best:.0f} target={TARGET_PER_S} "
              f"codec_observations_per_s={codec_rate:.0f}")


def build_stream(registry: FeedRegistry, observations: int, seed: int = 11
                 ) -> list[OracleObservation]:
    """Exactly `observations` synthetic observations (faults and duplicates included)."""
    duration_s = max(600, observations // 5)
    while True:
        stream = _generate(registry, duration_s, seed)
        if len(stream) >= observations:
            return stream[:observations]
        duration_s *= 2


def _generate(registry: FeedRegistry, duration_s: int, seed: int) -> list[OracleObservation]:
    assets = {a: START_PRICES.get(a, 100.0) for a in registry.assets}
    paths = random_walk_paths(assets, START_MS, duration_s, seed=seed)
    third = duration_s * 1000 // 3
    faults = [Spike("arbitrum", START_MS + third, START_MS + third + 60_000, 1.30,
                    OracleSource.PYTH, "BTC"),
              Silence("ethereum", START_MS + third, START_MS + third + 7_200_000,
                      OracleSource.CHAINLINK, "ETH"),
              SequencerOutage("arbitrum", START_MS + third // 2, START_MS + third // 2 + 600_000)]
    base = observations_from_paths(paths, registry, seed, faults=faults)
    stream: list[OracleObservation] = []
    for index, obs in enumerate(base):
        stream.append(obs)
        if index % DUPLICATE_EVERY == 0:
            stream.append(obs)  # a relayer delivering the same update twice
    return stream


@contextmanager
def _one_core() -> Iterator[int | None]:
    """Pin the process to one CPU while benchmarking (Linux), then restore."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    previous = os.sched_getaffinity(0)
    cpu = min(previous)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, previous)


def _print_stream(registry: FeedRegistry, stream: list[OracleObservation], generated_s: float,
                  cpu: int | None) -> None:
    kinds = Counter(f"{o.source.value.lower()}@{o.chain}" for o in stream)
    span_h = (stream[-1].received_at - stream[0].received_at) / 3_600_000 if stream else 0.0
    print(f"oracle consensus benchmark: {len(registry.feeds)} feeds, "
          f"{len(registry.assets)} assets, {len(registry.sequencers)} sequencer feed(s); "
          f"pinned to CPU {cpu}")
    print(f"stream: {len(stream):,} observations over {span_h:.1f} h of event time "
          f"(generated in {generated_s:.1f} s): "
          + ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items())))


def _warm_up(registry: FeedRegistry, stream: list[OracleObservation]) -> None:
    engine = ConsensusEngine(registry)
    for obs in stream[:20_000]:
        engine.observe(obs)


def _timed_runs(registry: FeedRegistry, stream: list[OracleObservation]
                ) -> tuple[list[float], ConsensusEngine]:
    rates = []
    engine = ConsensusEngine(registry)
    for _ in range(TIMED_RUNS):
        engine = ConsensusEngine(registry)
        observe = engine.observe
        started = time.perf_counter()
        for obs in stream:
            observe(obs)
        rates.append(len(stream) / (time.perf_counter() - started))
    return rates, engine


def _print_outputs(engine: ConsensusEngine) -> None:
    counters = engine.counters
    refusals = {k: v for k, v in counters.items() if k.startswith(("rejected.", "dropped."))}
    statuses = {k.removeprefix("prices."): v for k, v in counters.items()
                if k.startswith("prices.")}
    print(f"outputs: {counters.get('prices', 0):,} consensus prices {statuses}; "
          f"{counters.get('reviews', 0):,} from staleness/grace reviews; refusals {refusals}")


def _codec_rate(registry: FeedRegistry, sample: list[OracleObservation]) -> float:
    """Observations/s of the worker's Avro work alone: decode each, encode its prices."""
    engine = ConsensusEngine(registry)
    payloads = [encode(obs) for obs in sample]
    prices = [engine.observe(obs).prices for obs in sample]
    started = time.perf_counter()
    for payload, produced in zip(payloads, prices, strict=True):
        decode(payload, OracleObservation)
        for price in produced:
            encode(price)
    return len(sample) / (time.perf_counter() - started)
