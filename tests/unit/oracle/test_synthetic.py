"""The synthetic generator publishes like the real oracles, deterministically."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

import pytest

from streams.domain import ChainlinkRound, OracleObservation, OracleSource, PythPriceUpdate
from streams.oracle.feeds import load_feeds
from streams.oracle.normalize import split_round_id
from streams.oracle.synthetic import (
    DEFAULT_PROFILES,
    SequencerOutage,
    Silence,
    Spike,
    observations_from_paths,
    random_walk_paths,
)
from streams.paths import INFRA_DIR
from tests.unit.oracle.helpers import SEQUENCER, T0

REGISTRY = load_feeds(INFRA_DIR / "feeds.toml")
HOURS = 2
PATHS = random_walk_paths({"BTC": 64_000.0, "ETH": 3_200.0, "SOL": 150.0}, T0, HOURS * 3600,
                          seed=5, annual_vol=1.5)


@pytest.fixture(scope="module")
def observations() -> list[OracleObservation]:
    return observations_from_paths(PATHS, REGISTRY, seed=1)


def by_feed(observations: list[OracleObservation]) -> dict[tuple[str, str], list]:
    feeds: dict[tuple[str, str], list] = defaultdict(list)
    for obs in observations:
        feeds[(obs.chain, obs.feed_id)].append(obs)
    return feeds


def test_deterministic_for_a_seed() -> None:
    short = {asset: path[:600] for asset, path in PATHS.items()}
    first = observations_from_paths(short, REGISTRY, seed=1)
    assert first == observations_from_paths(short, REGISTRY, seed=1)
    assert first != observations_from_paths(short, REGISTRY, seed=2)
    assert random_walk_paths({"ETH": 1.0}, T0, 60, seed=4) == \
        random_walk_paths({"ETH": 1.0}, T0, 60, seed=4)


def test_sorted_by_receipt_and_every_feed_publishes(observations: list[OracleObservation]) -> None:
    times = [o.received_at for o in observations]
    assert times == sorted(times)
    assert {(f.chain, f.feed_id) for f in REGISTRY.feeds} | {("arbitrum", SEQUENCER)} == \
        set(by_feed(observations))


def test_chainlink_rounds_follow_deviation_and_heartbeat(
        observations: list[OracleObservation]) -> None:
    for spec in REGISTRY.feeds:
        if spec.source is not OracleSource.CHAINLINK:
            continue
        rounds = [o for o in observations if o.feed_id == spec.feed_id and o.chain == spec.chain]
        bodies = [o.body for o in rounds]
        assert all(isinstance(b, ChainlinkRound) for b in bodies)
        ids = [split_round_id(int(b.round_id)) for b in bodies]
        phases = {phase for phase, _ in ids}
        assert len(phases) == 1 and min(phases) >= 1
        assert [n for _, n in ids] == list(range(ids[0][1], ids[0][1] + len(ids)))
        assert all(b.answered_in_round == b.round_id and b.started_at == b.updated_at
                   for b in bodies)
        assert [o.received_at for o in rounds] == sorted(o.received_at for o in rounds)
        inclusion = DEFAULT_PROFILES[spec.chain].inclusion_ms[1] / 1000
        for previous, current in pairwise(bodies):
            gap = current.updated_at - previous.updated_at
            move = abs(int(current.answer) / int(previous.answer) - 1) * 1e4
            assert gap <= spec.heartbeat_s + inclusion + 2
            # a round before the heartbeat needs a deviation (up to noise and inclusion lag)
            if gap < spec.heartbeat_s - inclusion - 2:
                assert move >= spec.deviation_bps * 0.3


def test_pyth_updates_carry_confidence_ema_and_rising_publish_times(
        observations: list[OracleObservation]) -> None:
    for spec in REGISTRY.feeds:
        if spec.source is not OracleSource.PYTH:
            continue
        updates = [o.body for o in observations if o.feed_id == spec.feed_id
                   and o.chain == spec.chain]
        assert all(isinstance(u, PythPriceUpdate) for u in updates)
        assert len(updates) > 0.9 * HOURS * 3600  # about one per second
        publish = sorted(u.publish_time for u in updates)
        assert len(set(publish)) == len(publish)
        assert all(u.expo == spec.exponent and u.ema_price > 0 for u in updates)
        assert all(2.5 <= u.conf / u.price * 1e4 <= 12.5 for u in updates)


def test_faults_distort_the_chosen_feeds_only() -> None:
    start, end = T0 + 600_000, T0 + 660_000
    faults = [Spike("solana", start, end, 1.3, OracleSource.PYTH, "BTC"),
              Silence("ethereum", T0, T0 + 7200_000, OracleSource.CHAINLINK, "ETH"),
              SequencerOutage("arbitrum", T0 + 3600_000, T0 + 4200_000)]
    observations = observations_from_paths(PATHS, REGISTRY, seed=1, faults=faults)
    feeds = by_feed(observations)
    btc, eth, _ = (REGISTRY.feeds_for(a) for a in ("BTC", "ETH", "SOL"))
    solana_btc = next(f for f in btc if f.chain == "solana")
    arbitrum_btc = next(f for f in btc if f.chain == "arbitrum" and f.source is OracleSource.PYTH)
    true_at = dict(PATHS["BTC"])

    def ratio(obs: OracleObservation) -> float:
        return obs.body.price / 1e8 / true_at[obs.received_at // 1000 * 1000 - 1000]  # type: ignore[union-attr]

    spiked = [ratio(o) for o in feeds[("solana", solana_btc.feed_id)]
              if start + 2000 < o.received_at < end]
    assert spiked and all(1.29 < r < 1.31 for r in spiked)
    honest = [ratio(o) for o in feeds[("arbitrum", arbitrum_btc.feed_id)]
              if start + 2000 < o.received_at < end]
    assert honest and all(0.99 < r < 1.01 for r in honest)
    eth_mainnet = next(f for f in eth if f.chain == "ethereum")
    assert all(o.body.updated_at * 1000 >= T0 + 7200_000  # type: ignore[union-attr]
               for o in feeds[("ethereum", eth_mainnet.feed_id)])
    arbitrum = [o for o in observations if o.chain == "arbitrum" and o.feed_id != SEQUENCER]
    assert not any(T0 + 3600_000 + 5000 < o.received_at < T0 + 4200_000 for o in arbitrum)
    statuses = [(o.body.answer, o.body.started_at) for o in feeds[("arbitrum", SEQUENCER)]]  # type: ignore[union-attr]
    assert statuses == [("0", (T0 - 86_400_000) // 1000), ("1", (T0 + 3600_000) // 1000),
                        ("0", (T0 + 4200_000) // 1000)]
