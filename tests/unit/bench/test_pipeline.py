"""Pure parts of the pipeline benchmark's harness: the latency join and the backlog sizes."""

from __future__ import annotations

from streams.bench.pipeline import PipelineOptions, consensus_prices, tick_latencies
from streams.bench.status import Status, read_status
from streams.bench.workload import build_observations, tick_key
from streams.codecs import encode
from streams.oracle.consensus import ConsensusEngine
from streams.oracle.feeds import load_feeds


def test_a_command_joins_the_observation_that_caused_its_price() -> None:
    event_times = [1_000, 1_400, 2_000, 2_600]
    sent_at = [50_000, 50_010, 50_020, 50_030]
    # created_at equal to an observation's event time, and a review between two of them
    commands = [(1_400, 50_025), (2_600, 50_100), (1_700, 50_040)]
    assert tick_latencies(event_times, sent_at, commands) == [15.0, 20.0, 70.0]


def test_commands_after_the_last_observation_are_left_out() -> None:
    assert tick_latencies([1_000], [10], [(1_001, 20)]) == []


def test_backlogs() -> None:
    options = PipelineOptions(observations=500, naive_observations=20,
                              ceiling_observations=7_000)
    assert options.backlog("aps", 10_000) == 500
    assert options.backlog("aps", 300) == 300
    assert options.backlog("faust", 10_000) == 20
    assert options.backlog("quix", 10_000) == 20
    assert options.backlog("ceiling", 100) == 7_000
    assert PipelineOptions(observations=0).backlog("aps", 321) == 321


def test_expected_prices_come_from_the_same_engine() -> None:
    feeds = load_feeds("bench/feeds-10-assets.toml")
    observations = build_observations(feeds, 20, seed=3)
    engine = ConsensusEngine(feeds)
    expected = sum(len(engine.observe(o).prices) for o in observations)
    ticks = [(tick_key(o), encode(o)) for o in observations]
    assert consensus_prices(feeds, ticks) == expected > 0


def test_status_file_round_trip(tmp_path) -> None:
    status = Status(tmp_path / "status.json")
    status.add("ticks", 3)
    status.first("first_tick_at")
    status.last("last_revaluation_at")
    status.write()
    written = read_status(tmp_path / "status.json")
    assert written is not None
    assert written["counters"] == {"ticks": 3}
    assert set(written["instants"]) == {"first_tick_at", "last_revaluation_at"}
    assert written["peak_rss"] > 0
    assert read_status(tmp_path / "missing.json") is None
