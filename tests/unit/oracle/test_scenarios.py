"""Attack and failure scenarios on synthetic streams in the oracles' native shapes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from streams.domain import ConsensusPrice, OracleObservation, OracleSource, PriceStatus
from streams.oracle import reasons
from streams.oracle.consensus import ConsensusEngine, Outcome
from streams.oracle.feeds import FeedRegistry, FeedSpec, load_feeds
from streams.oracle.normalize import to_float
from streams.oracle.synthetic import (
    ClockSkew,
    Fault,
    PhaseChange,
    SequencerOutage,
    Silence,
    Spike,
    observations_from_paths,
    random_walk_paths,
)
from streams.paths import INFRA_DIR
from tests.unit.oracle.helpers import T0, three_sources

MINUTE = 60_000


def stream(registry: FeedRegistry, minutes: int, faults: Sequence[Fault] = (), seed: int = 3,
           asset: str = "ETH") -> list[OracleObservation]:
    start = {"BTC": 64_000.0, "ETH": 3_200.0, "SOL": 150.0}
    paths = random_walk_paths({a: start[a] for a in registry.assets}, T0, minutes * 60, seed)
    return observations_from_paths(paths, registry, seed, faults=faults)


def run(registry: FeedRegistry, observations: list[OracleObservation]
        ) -> tuple[ConsensusEngine, list[Outcome]]:
    engine = ConsensusEngine(registry)
    return engine, [engine.observe(obs) for obs in observations]


def prices_of(outcomes: list[Outcome], asset: str) -> list[ConsensusPrice]:
    return [p for o in outcomes for p in o.prices if p.asset == asset]


def value_of(obs: OracleObservation) -> float:
    body = obs.body
    if obs.source is OracleSource.PYTH:
        return to_float(body.price, body.expo)  # type: ignore[union-attr]
    return to_float(int(body.answer), -8)  # type: ignore[union-attr]


@pytest.mark.parametrize("registry_name, spiking, honest_status", [
    ("shipped", "pyth@arbitrum", PriceStatus.OK),
    ("shipped", "chainlink@arbitrum", PriceStatus.OK),
    ("three", "pyth@solana", PriceStatus.DEGRADED),
])
def test_one_feed_spiking_30_percent_for_a_minute_cannot_move_consensus(
        registry_name: str, spiking: str, honest_status: PriceStatus) -> None:
    registry = load_feeds(INFRA_DIR / "feeds.toml") if registry_name == "shipped" \
        else three_sources()
    source, chain = spiking.split("@")
    start, end = T0 + 10 * MINUTE, T0 + 11 * MINUTE
    spike = Spike(chain, start, end, 1.30, OracleSource(source.upper()), "ETH")
    observations = stream(registry, 20, [spike])
    engine, outcomes = run(registry, observations)
    honest: dict[str, float] = {}
    during: list[ConsensusPrice] = []
    for obs, outcome in zip(observations, outcomes, strict=True):
        spec = registry.lookup(obs.chain, obs.source, obs.feed_id)
        if outcome.accepted and isinstance(spec, FeedSpec) and spec.asset == "ETH" \
                and spec.label != spiking:
            honest[spec.label] = value_of(obs)
        for price in outcome.prices:
            if price.asset != "ETH" or len(honest) < 2:
                continue
            # never outside the honest sources' range, spike or not
            assert min(honest.values()) <= price.price <= max(honest.values())
            if start + 30_000 <= price.event_time < end:
                during.append(price)
    assert during, "the spike window produced consensus outputs"
    for price in during:
        if spiking in [e.source for e in price.sources_excluded]:
            assert (spiking, reasons.OUTLIER) in [(e.source, e.reason)
                                                  for e in price.sources_excluded]
        assert spiking not in price.sources_used
        assert price.status is honest_status
    assert engine.counters.get("rejected.future_timestamp", 0) == 0
    assert engine.counters["excluded.outlier"] >= len(during) // 2


def test_two_of_three_sources_going_stale_degrades_then_halts() -> None:
    registry = three_sources()
    silence_at = T0 + 10 * MINUTE
    faults = [Silence("solana", silence_at, T0 + 999 * MINUTE),
              Silence("ethereum", silence_at, T0 + 999 * MINUTE)]
    engine, outcomes = run(registry, stream(registry, 150, faults))
    eth = prices_of(outcomes, "ETH")
    before = [p for p in eth if T0 + MINUTE < p.event_time < silence_at]
    assert before and all(p.status is PriceStatus.OK for p in before)
    after = [p for p in eth if p.event_time > silence_at + 30_000]
    statuses = [p.status for p in after]
    assert PriceStatus.OK not in statuses
    first_halt = statuses.index(PriceStatus.HALTED)
    assert set(statuses[:first_halt]) == {PriceStatus.DEGRADED}
    assert set(statuses[first_halt:]) == {PriceStatus.HALTED}
    assert after[-1].sources_used == ["chainlink@arbitrum"]
    assert {(e.source, e.reason) for e in after[-1].sources_excluded} == {
        ("chainlink@ethereum", reasons.STALE), ("pyth@solana", reasons.STALE)}
    assert engine.counters["reviews"] >= 1


def test_a_replayed_old_round_is_dead_lettered_and_changes_no_output() -> None:
    registry = three_sources()
    observations = stream(registry, 30)
    old = next(o for o in observations if o.source is OracleSource.CHAINLINK
               and o.chain == "arbitrum" and o.received_at > T0 + 5 * MINUTE)
    replay = OracleObservation(old.chain, old.source, old.feed_id, T0 + 20 * MINUTE, old.body)
    at = next(i for i, o in enumerate(observations) if o.received_at > replay.received_at)
    _, clean = run(registry, observations)
    _, attacked = run(registry, [*observations[:at], replay, *observations[at:]])
    refused = attacked.pop(at)
    assert refused.rejection is not None
    assert refused.rejection.reason == reasons.ROUND_BACKWARDS
    assert refused.prices == []
    assert attacked == clean


@pytest.mark.parametrize("offset_ms, refusal, status", [
    (5_000, None, PriceStatus.OK),                                       # ahead, within 10 s
    (60_000, ("rejection", reasons.FUTURE_TIMESTAMP), PriceStatus.DEGRADED),
    (-8_000, None, PriceStatus.OK),                                      # behind, within
    (-60_000, ("dropped", reasons.STALE), PriceStatus.DEGRADED),
])
def test_clock_skew_between_chains(offset_ms: int, refusal: tuple[str, str] | None,
                                   status: PriceStatus) -> None:
    registry = three_sources()
    observations = stream(registry, 15, [ClockSkew("solana", offset_ms)])
    engine, outcomes = run(registry, observations)
    solana = [o for obs, o in zip(observations, outcomes, strict=True) if obs.chain == "solana"]
    if refusal is None:
        assert all(o.accepted or o.dropped for o in solana)
        assert not any(k.startswith("rejected.") for k in engine.counters)
    else:
        kind, reason = refusal
        assert all(getattr(o, kind) is not None and getattr(o, kind).reason == reason
                   for o in solana)
    late = [p for p in prices_of(outcomes, "ETH") if p.event_time > T0 + 2 * MINUTE]
    assert late and all(p.status is status for p in late)


def test_sequencer_outage_then_grace_period_then_recovery() -> None:
    registry = load_feeds(INFRA_DIR / "feeds.toml")
    down, up = T0 + 10 * MINUTE, T0 + 20 * MINUTE
    outage_stream = stream(registry, 100, [SequencerOutage("arbitrum", down, up)])
    engine, outcomes = run(registry, outage_stream)
    btc = prices_of(outcomes, "BTC")
    outage = [p for p in btc if down + 2_000 < p.event_time < up + 60 * MINUTE]
    assert outage and all(p.unhealthy_chains == ["arbitrum"] for p in outage)
    assert all(p.status is PriceStatus.DEGRADED for p in outage)
    assert all(set(p.sources_used) == {"chainlink@ethereum", "pyth@solana"} for p in outage)
    grace = {e.reason for p in outage if p.event_time > up + 2_000 for e in p.sources_excluded}
    assert grace == {reasons.SEQUENCER_GRACE}
    recovered = [p for p in btc if p.event_time >= up + 60 * MINUTE]
    assert recovered and recovered[0].event_time == up // 1000 * 1000 + 60 * MINUTE
    assert all(p.unhealthy_chains == [] and p.status is PriceStatus.OK for p in recovered)
    # the initial "up for a day" round changes nothing; down and up again do
    assert engine.counters["health_changes.arbitrum"] == 2


def test_an_aggregator_phase_change_is_accepted_mid_stream() -> None:
    registry = three_sources()
    engine, _ = run(registry, stream(registry, 20, [PhaseChange("arbitrum", T0 + 5 * MINUTE)]))
    assert engine.counters["phase_changes"] == 1
    assert not any(k.startswith("rejected.") for k in engine.counters)


def test_same_stream_same_outputs() -> None:
    registry = load_feeds(INFRA_DIR / "feeds.toml")
    observations = stream(registry, 10, [Spike("solana", T0 + MINUTE, T0 + 2 * MINUTE, 0.5)])
    first, second = run(registry, observations), run(registry, observations)
    assert first[1] == second[1]
    assert first[0].snapshot() == second[0].snapshot()
