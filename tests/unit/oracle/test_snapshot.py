"""The engine's snapshot (aps.ConsensusState) lets a restarted worker continue exactly."""

from __future__ import annotations

import json

import avro.schema
import pytest

from streams.codecs import decode, encode
from streams.domain import ConsensusState, OracleObservation, OracleSource
from streams.oracle.consensus import ConsensusEngine, Outcome
from streams.oracle.feeds import load_feeds, loads_feeds
from streams.oracle.synthetic import (
    SequencerOutage,
    Silence,
    Spike,
    observations_from_paths,
    random_walk_paths,
)
from streams.paths import INFRA_DIR, SCHEMA_DIR
from tests.unit.oracle.helpers import T0, THREE_SOURCES_TOML, warm

REGISTRY = load_feeds(INFRA_DIR / "feeds.toml")
MINUTE = 60_000
FAULTS = [Spike("solana", T0 + 5 * MINUTE, T0 + 6 * MINUTE, 1.3, OracleSource.PYTH, "SOL"),
          Silence("ethereum", T0, T0 + 90 * MINUTE, OracleSource.CHAINLINK, "BTC"),
          SequencerOutage("arbitrum", T0 + 10 * MINUTE, T0 + 12 * MINUTE)]
PATHS = random_walk_paths({"BTC": 64_000.0, "ETH": 3_200.0, "SOL": 150.0}, T0, 80 * 60, seed=9)
STREAM: list[OracleObservation] = observations_from_paths(PATHS, REGISTRY, seed=9, faults=FAULTS)


def test_schema_is_valid_avro_for_the_reference_implementation() -> None:
    text = (SCHEMA_DIR / "aps.ConsensusState.avsc").read_text()
    parsed = avro.schema.parse(text)
    assert parsed.fullname == "aps.ConsensusState"
    assert json.loads(text)["name"] == "ConsensusState"


def test_snapshot_round_trips_through_avro_with_stable_bytes() -> None:
    first, second = ConsensusEngine(REGISTRY), ConsensusEngine(REGISTRY)
    for obs in STREAM[:5000]:
        first.observe(obs)
        second.observe(obs)
    payload = encode(first.snapshot())
    assert payload == encode(second.snapshot())
    restored = decode(payload, ConsensusState)
    assert restored == first.snapshot()
    assert restored.counters == first.counters
    assert any(f.round_id for f in restored.feeds) and any(not f.round_id for f in restored.feeds)


@pytest.fixture(scope="module")
def uninterrupted() -> tuple[list[Outcome], ConsensusState]:
    engine = ConsensusEngine(REGISTRY)
    return [engine.observe(obs) for obs in STREAM], engine.snapshot()


@pytest.mark.parametrize("split", [1, 777, 2500, len(STREAM) // 2, len(STREAM) - 3])
def test_a_restored_engine_continues_exactly(
        split: int, uninterrupted: tuple[list[Outcome], ConsensusState]) -> None:
    expected, final_state = uninterrupted
    before_restart = ConsensusEngine(REGISTRY)
    for obs in STREAM[:split]:
        before_restart.observe(obs)
    saved = decode(encode(before_restart.snapshot()), ConsensusState)
    restarted = ConsensusEngine(REGISTRY, snapshot=saved)
    assert restarted.clock == before_restart.clock
    continued = [restarted.observe(obs) for obs in STREAM[split:]]
    assert continued == expected[split:]
    assert restarted.snapshot() == final_state


def test_the_stream_exercises_reviews_outages_and_outliers() -> None:
    engine = ConsensusEngine(REGISTRY)
    for obs in STREAM:
        engine.observe(obs)
    counters = engine.counters
    assert counters["reviews"] >= 1
    assert counters["excluded.outlier"] > 0
    assert counters["excluded.sequencer_down"] > 0 and counters["excluded.sequencer_grace"] > 0


def test_a_snapshot_survives_a_feed_removed_from_the_configuration() -> None:
    full = ConsensusEngine(loads_feeds(THREE_SOURCES_TOML))
    warm(full)
    smaller = THREE_SOURCES_TOML[:THREE_SOURCES_TOML.rindex("[[feeds]]")]
    restored = ConsensusEngine(loads_feeds(smaller), snapshot=full.snapshot())
    assert len(restored.snapshot().feeds) == len(full.snapshot().feeds) - 1
