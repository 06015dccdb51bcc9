"""Property tests: the consensus price stays within its sources; order within an instant is
irrelevant; arbitrary input never crashes the engine."""

from __future__ import annotations

import random
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.domain import ChainlinkRound, OracleObservation, OracleSource, PythPriceUpdate
from streams.oracle import reasons
from streams.oracle.aggregate import weighted_median
from streams.oracle.consensus import ConsensusEngine, _weighted_median
from streams.oracle.feeds import FeedSpec, load_feeds
from streams.oracle.normalize import compose_round_id
from streams.paths import INFRA_DIR
from tests.unit.oracle.helpers import SEQUENCER, T0, sequencer

REGISTRY = load_feeds(INFRA_DIR / "feeds.toml")
PRICE_FEEDS = REGISTRY.feeds
BASE = {"BTC": 64_000.0, "ETH": 3_200.0, "SOL": 150.0}

values = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False)
weights = st.floats(min_value=0.01, max_value=100.0, allow_nan=False)


def test_weighted_median_examples() -> None:
    assert weighted_median([1.0, 2.0], [1.0, 1.0]) == 1.5       # weight exactly halved
    assert weighted_median([3.0, 1.0, 2.0], [5.0, 1.0, 1.0]) == 3.0
    assert weighted_median([10.0, 1.0, 2.0], [1.0, 1.0, 1.0]) == 2.0


@given(st.lists(st.tuples(values, weights), min_size=1, max_size=12), st.randoms())
def test_weighted_median_is_within_range_and_order_free(pairs: list[tuple[float, float]],
                                                        rng: random.Random) -> None:
    xs, ws = [p[0] for p in pairs], [p[1] for p in pairs]
    median = weighted_median(xs, ws)
    assert min(xs) <= median <= max(xs)
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    assert weighted_median([p[0] for p in shuffled], [p[1] for p in shuffled]) == median
    feeds = [SimpleNamespace(price=x, weight=w) for x, w in sorted(pairs)]
    assert _weighted_median(feeds) == median  # type: ignore[arg-type]


def observation(spec: FeedSpec, at: int, price: float, conf_bps: float, round_no: int
                ) -> OracleObservation:
    """`spec`'s observation of `price` at `at`, in its oracle's shape."""
    mantissa = max(1, round(price * 10 ** -spec.exponent))
    if spec.source is OracleSource.CHAINLINK:
        round_id = str(compose_round_id(2, round_no))
        body: ChainlinkRound | PythPriceUpdate = ChainlinkRound(
            round_id, str(mantissa), at // 1000, at // 1000, round_id)
    else:
        conf = round(mantissa * conf_bps / 1e4)
        body = PythPriceUpdate(mantissa, conf, spec.exponent, at // 1000, mantissa, conf)
    return OracleObservation(spec.chain, spec.source, spec.feed_id, at, body)


def mantissa_of(obs: OracleObservation) -> int:
    body = obs.body
    return int(body.answer) if isinstance(body, ChainlinkRound) else body.price


def warmed_engine() -> ConsensusEngine:
    engine = ConsensusEngine(REGISTRY)
    engine.observe(sequencer(T0 - 2000, 0, (T0 - 86_400_000) // 1000, round_no=10))
    for spec in PRICE_FEEDS:
        engine.observe(observation(spec, T0 - 1000, BASE[spec.asset], 5.0, round_no=1))
    return engine


ticks = st.lists(
    st.tuples(st.integers(0, len(PRICE_FEEDS) - 1),           # which feed
              st.floats(min_value=0.5, max_value=2.0),        # price / base
              st.floats(min_value=0.0, max_value=400.0),      # Pyth conf, bps
              st.integers(0, 1500)),                          # ms since the previous tick
    min_size=1, max_size=40)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(ticks)
def test_consensus_price_lies_within_the_sources_it_used(
        steps: list[tuple[int, float, float, int]]) -> None:
    engine = warmed_engine()
    latest = {(s.asset, s.label): BASE[s.asset] for s in PRICE_FEEDS}
    at, rounds = T0, {}
    for index, factor, conf_bps, gap in steps:
        spec = PRICE_FEEDS[index]
        at += gap
        rounds[index] = rounds.get(index, 1) + 1
        obs = observation(spec, at, BASE[spec.asset] * factor, conf_bps, rounds[index])
        outcome = engine.observe(obs)
        before = dict(latest)
        if outcome.accepted:
            # the engine's own exact scaling (one correctly rounded division), so a source's
            # value and a consensus of that one value are the same float
            latest[(spec.asset, spec.label)] = mantissa_of(obs) / 10**-spec.exponent
        for position, price in enumerate(outcome.prices):
            # staleness reviews come first and see the state before this observation
            own = outcome.accepted and position == len(outcome.prices) - 1
            used = [(latest if own else before)[(price.asset, label)]
                    for label in price.sources_used]
            if used:
                assert min(used) <= price.price <= max(used)
            assert price.dispersion_bps >= 0 and price.confidence >= 0


instant = st.lists(
    st.tuples(st.floats(min_value=0.7, max_value=1.4), st.floats(min_value=0.0, max_value=300.0)),
    min_size=len(PRICE_FEEDS), max_size=len(PRICE_FEEDS))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(instant, st.sets(st.integers(0, len(PRICE_FEEDS) - 1), min_size=1),
       st.sampled_from([None, 0, 1]), st.randoms())
def test_order_within_one_event_time_instant_does_not_matter(
        quotes: list[tuple[float, float]], chosen: set[int], sequencer_status: int | None,
        rng: random.Random) -> None:
    at = T0 + 30_000  # late enough for a staleness review of the warm-up values
    batch = [observation(PRICE_FEEDS[i], at, BASE[PRICE_FEEDS[i].asset] * quotes[i][0],
                         quotes[i][1], round_no=2) for i in sorted(chosen)]
    if sequencer_status is not None:
        batch.append(sequencer(at, sequencer_status, at // 1000 - 5, round_no=11))
    shuffled = list(batch)
    rng.shuffle(shuffled)
    results = []
    for order in (batch, shuffled):
        engine = warmed_engine()
        outcomes = [engine.observe(obs) for obs in order]
        final = {p.asset: p for o in outcomes for p in o.prices}
        refusals = sorted(o.refusal.reason for o in outcomes if o.refusal)
        state = engine.snapshot()
        # Every accepted observation emits at once, so outputs *within* the instant reflect
        # the part of it seen so far (their per-status tallies may differ); what the instant
        # ends with (each asset's last output, its sequence, the state) may not.
        tallies = {k: v for k, v in state.counters.items()
                   if not k.startswith(("prices.", "excluded."))}
        results.append((final, refusals, state.clock, state.feeds, state.assets, tallies))
    assert results[0] == results[1]


chains = st.sampled_from(["ethereum", "arbitrum", "solana", "", "base", "ETHEREUM"])
feed_ids = st.sampled_from([f.feed_id for f in PRICE_FEEDS] + [SEQUENCER, "", "0x00"])
digits = st.one_of(st.integers(-10**30, 10**30).map(str), st.text(max_size=8),
                   st.sampled_from(["NaN", "1e5", " 1", "0x10", "٣", "-0", str(1 << 80)]))
big = st.integers(-(1 << 70), 1 << 70)
bodies = st.one_of(
    st.builds(ChainlinkRound, digits, digits, big, big, digits),
    st.builds(PythPriceUpdate, big, big, st.integers(-50, 50), big, big, big))
garbage = st.builds(OracleObservation, chains, st.sampled_from(list(OracleSource)), feed_ids,
                    st.integers(-(1 << 62), 1 << 62), bodies)


@settings(max_examples=300)
@given(st.lists(garbage, max_size=20))
def test_arbitrary_input_never_crashes_and_every_refusal_has_a_known_reason(
        observations: list[OracleObservation]) -> None:
    engine = warmed_engine()
    for obs in observations:
        outcome = engine.observe(obs)
        refusal = outcome.refusal
        assert outcome.accepted or refusal is not None
        if refusal is not None:
            assert refusal.reason in reasons.REJECTION_REASONS | reasons.DROP_REASONS
            assert outcome.prices == []
    counters = engine.counters
    refused = sum(v for k, v in counters.items() if k.startswith(("rejected.", "dropped.")))
    assert counters["observations"] == counters["accepted"] + refused
