"""The consensus engine on hand-built observations: aggregation, freshness, ordering, health."""

from __future__ import annotations

import pytest

from streams.domain import (
    ChainlinkRound,
    ConsensusPrice,
    OracleObservation,
    OracleSource,
    PriceStatus,
    PythPriceUpdate,
)
from streams.oracle import reasons
from streams.oracle.consensus import ConsensusEngine, Outcome
from streams.oracle.feeds import ConsensusConfig, load_feeds, loads_feeds
from streams.paths import INFRA_DIR
from tests.unit.oracle.helpers import (
    CL_ARB,
    CL_ETH,
    PYTH_ETH,
    T0,
    T0_S,
    THREE_SOURCES_TOML,
    chainlink,
    pyth,
    sequencer,
    three_sources,
    warm,
)

PYTH_STALE_AFTER_MS = 26_000       # 10 s heartbeat * 1.1 + 5 s slack + 10 s solana skew
CL_ETH_STALE_AFTER_MS = 3_970_000  # 3600 s * 1.1 + 5 s slack + 5 s ethereum skew


def last_price(outcome: Outcome) -> ConsensusPrice:
    assert outcome.prices, outcome
    return outcome.prices[-1]


def test_three_agreeing_sources_are_ok_at_their_median() -> None:
    engine = ConsensusEngine(three_sources())
    engine.observe(chainlink(CL_ETH, T0, 2000.0))
    engine.observe(chainlink(CL_ARB, T0 + 1, 2002.0, chain="arbitrum"))
    price = last_price(engine.observe(pyth(T0 + 2, 2001.0)))
    assert price.asset == "ETH"
    assert price.status is PriceStatus.OK
    assert price.price == 2001.0
    assert price.event_time == T0 + 2
    assert price.sequence == 3
    assert price.sources_used == ["chainlink@arbitrum", "chainlink@ethereum", "pyth@solana"]
    assert price.sources_excluded == []
    assert price.dispersion_bps == pytest.approx(2 / 2001 * 1e4)
    # the band: the spread around the median, but at least the tightest source's own
    # uncertainty (here Pyth's 5 bps conf; Chainlink's is its deviation threshold)
    assert price.confidence == pytest.approx(max(1.0, 2001.0 * 5e-4))


def test_first_source_alone_is_halted_then_degraded_then_ok() -> None:
    engine = ConsensusEngine(three_sources())
    first = last_price(engine.observe(chainlink(CL_ETH, T0, 2000.0)))
    assert first.status is PriceStatus.HALTED
    assert [(e.source, e.reason) for e in first.sources_excluded] == [
        ("chainlink@arbitrum", reasons.NO_DATA), ("pyth@solana", reasons.NO_DATA)]
    second = last_price(engine.observe(pyth(T0 + 1, 2001.0)))
    assert second.status is PriceStatus.DEGRADED
    third = last_price(engine.observe(chainlink(CL_ARB, T0 + 2, 2000.5, chain="arbitrum")))
    assert third.status is PriceStatus.OK


def test_a_spiking_source_is_excluded_and_cannot_move_the_price() -> None:
    engine = ConsensusEngine(three_sources())
    warm(engine, T0, 2000.0)
    price = last_price(engine.observe(pyth(T0 + 1000, 2600.0)))  # +30 %
    assert 2000.0 <= price.price <= 2000.0
    assert [(e.source, e.reason) for e in price.sources_excluded] == [
        ("pyth@solana", reasons.OUTLIER)]
    assert price.status is PriceStatus.DEGRADED  # two sources left: no new risk
    assert engine.counters["excluded.outlier"] == 1


def test_two_sources_that_disagree_halt_without_blaming_either() -> None:
    engine = ConsensusEngine(three_sources())
    engine.observe(chainlink(CL_ETH, T0, 2000.0))
    price = last_price(engine.observe(pyth(T0 + 1, 2300.0)))
    assert price.status is PriceStatus.HALTED
    assert price.sources_used == ["chainlink@ethereum", "pyth@solana"]
    assert 2000.0 <= price.price <= 2300.0


def test_dispersion_bounds_degrade_then_halt() -> None:
    registry = loads_feeds("[consensus]\noutlier_bps = 2000.0\n" + THREE_SOURCES_TOML)
    engine = ConsensusEngine(registry)
    warm(engine, T0, 2000.0)
    wide = last_price(engine.observe(pyth(T0 + 1000, 2030.0)))   # 150 bps
    assert wide.status is PriceStatus.DEGRADED and len(wide.sources_used) == 3
    wider = last_price(engine.observe(pyth(T0 + 2000, 2080.0)))  # 400 bps
    assert wider.status is PriceStatus.HALTED and len(wider.sources_used) == 3


def test_uncertain_sources_weigh_less() -> None:
    registry = loads_feeds(THREE_SOURCES_TOML.replace("heartbeat_s = 10",
                                                      "heartbeat_s = 10\nweight = 2.5"))
    engine = ConsensusEngine(registry)
    engine.observe(chainlink(CL_ETH, T0, 2000.0))
    engine.observe(chainlink(CL_ARB, T0, 2002.0, chain="arbitrum"))
    confident = last_price(engine.observe(pyth(T0 + 1000, 2004.0, conf_bps=5.0)))
    assert confident.price == 2004.0            # weight 2.5 of 4.5 carries the median
    unsure = last_price(engine.observe(pyth(T0 + 2000, 2004.0, conf_bps=150.0)))
    assert unsure.price == 2002.0               # 150 bps conf: weight 2.5 * 50/150


def test_too_wide_pyth_confidence_does_not_count() -> None:
    engine = ConsensusEngine(three_sources())
    warm(engine, T0, 2000.0)
    price = last_price(engine.observe(pyth(T0 + 1000, 2000.0, conf_bps=300.0)))
    assert ("pyth@solana", reasons.WIDE_CONFIDENCE) in [
        (e.source, e.reason) for e in price.sources_excluded]


def test_staleness_boundary_is_exact() -> None:
    engine = ConsensusEngine(three_sources())
    warm(engine, T0, 2000.0)
    at_limit = last_price(engine.observe(
        chainlink(CL_ARB, T0 + PYTH_STALE_AFTER_MS, 2000.0, chain="arbitrum", phase=3,
                  round_no=501)))
    assert "pyth@solana" in at_limit.sources_used
    past_limit = last_price(engine.observe(
        chainlink(CL_ETH, T0 + PYTH_STALE_AFTER_MS + 1, 2000.0, round_no=101)))
    assert ("pyth@solana", reasons.STALE) in [
        (e.source, e.reason) for e in past_limit.sources_excluded]


def test_a_real_3720_s_heartbeat_gap_is_not_stale() -> None:
    # Consecutive real ETH/USD rounds 3,720 s apart for a 3,600 s heartbeat
    # (/work/shared/data/oracle/chainlink/ETH-USD_mainnet_0x5f4e.csv, roundIds ...314647/8).
    first = OracleObservation("ethereum", OracleSource.CHAINLINK, CL_ETH, 1693234535_000 + 1500,
                              ChainlinkRound("110680464442257314647", "164832000000", 1693234535,
                                             1693234535, "110680464442257314647"))
    second = OracleObservation("ethereum", OracleSource.CHAINLINK, CL_ETH,
                               1693238255_000 + 1500,
                               ChainlinkRound("110680464442257314648", "164528502000",
                                              1693238255, 1693238255, "110680464442257314648"))
    just_before = second.received_at - 1

    def run(config: ConsensusConfig | None) -> tuple[list[str], Outcome]:
        engine = ConsensusEngine(three_sources(), config=config)
        engine.observe(first)
        engine.observe(chainlink(CL_ARB, just_before, 1648.0, chain="arbitrum"))
        used = last_price(engine.observe(pyth(just_before, 1648.0))).sources_used
        return used, engine.observe(second)

    used, outcome = run(None)
    assert "chainlink@ethereum" in used
    assert outcome.accepted
    no_slack = ConsensusConfig(staleness_slack_ratio=0.0, staleness_slack_s=0.0)
    used_without_slack, _ = run(no_slack)
    assert "chainlink@ethereum" not in used_without_slack


def test_a_silent_feed_degrades_the_status_at_the_instant_it_goes_stale() -> None:
    registry = load_feeds(INFRA_DIR / "feeds.toml")
    btc_pyth = registry.feeds_for("BTC")[3]
    engine = ConsensusEngine(registry)
    for spec in registry.feeds_for("ETH"):
        engine.observe(OracleObservation(
            spec.chain, spec.source, spec.feed_id, T0,
            pyth(T0, 2000.0).body if spec.source is OracleSource.PYTH
            else chainlink(spec.feed_id, T0, 2000.0).body))
    # only BTC keeps publishing: ETH's two Pyth feeds go stale 26 s (solana) and 21 s
    # (arbitrum) after T0; the next BTC observation reveals both, at their exact instants
    outcome = engine.observe(pyth(T0 + 60_000, 64000.0, chain=btc_pyth.chain,
                                  feed_id=btc_pyth.feed_id))
    reviews = [p for p in outcome.prices if p.asset == "ETH"]
    assert [p.event_time for p in reviews] == [T0 + 21_001, T0 + 26_001]
    assert [p.status for p in reviews] == [PriceStatus.OK, PriceStatus.DEGRADED]
    assert [len(p.sources_used) for p in reviews] == [3, 2]
    assert outcome.prices[-1].asset == "BTC"
    assert engine.counters["reviews"] == 2


def test_a_replayed_old_round_is_refused_and_changes_nothing() -> None:
    engine = ConsensusEngine(three_sources())
    engine.observe(chainlink(CL_ETH, T0, 2000.0, round_no=100))
    engine.observe(chainlink(CL_ETH, T0 + 10_000, 2011.0, round_no=101))
    before = engine.snapshot()
    replay = engine.observe(chainlink(CL_ETH, T0 + 20_000, 2000.0, round_no=100,
                                      updated_at=T0_S))
    assert replay.prices == []
    assert replay.rejection is not None and replay.rejection.reason == reasons.ROUND_BACKWARDS
    assert replay.rejection.dead_letter
    duplicate = engine.observe(chainlink(CL_ETH, T0 + 20_000, 2011.0, round_no=101,
                                         updated_at=T0_S + 10))
    assert duplicate.dropped is not None and duplicate.dropped.reason == reasons.DUPLICATE
    assert not duplicate.dropped.dead_letter
    forged = engine.observe(chainlink(CL_ETH, T0 + 20_000, 2500.0, round_no=101,
                                      updated_at=T0_S + 10))
    assert forged.rejection is not None and forged.rejection.reason == reasons.CONFLICTING_ROUND
    after = engine.snapshot()
    assert after.feeds == before.feeds and after.assets == before.assets
    counters = engine.counters
    assert counters["rejected.round_backwards"] == 1
    assert counters["dropped.duplicate"] == 1
    assert counters["rejected.conflicting_round"] == 1


def test_a_phase_change_is_a_legitimate_jump() -> None:
    engine = ConsensusEngine(three_sources())
    engine.observe(chainlink(CL_ETH, T0, 2000.0, phase=6, round_no=11106))
    new_aggregator = engine.observe(chainlink(CL_ETH, T0 + 1000, 2001.0, phase=7, round_no=1))
    assert new_aggregator.accepted
    assert engine.counters["phase_changes"] == 1
    confirmed = engine.observe(chainlink(CL_ETH, T0 + 2000, 2002.0, phase=7, round_no=2))
    assert confirmed.accepted
    # once the new aggregator has published again, the old phase is over for good
    old_phase = engine.observe(chainlink(CL_ETH, T0 + 3000, 2001.0, phase=6, round_no=11107))
    assert old_phase.rejection is not None
    assert old_phase.rejection.reason == reasons.ROUND_BACKWARDS


def test_a_delayed_round_of_the_old_phase_does_not_undo_a_phase_change() -> None:
    engine = ConsensusEngine(three_sources())
    engine.observe(chainlink(CL_ETH, T0, 2000.0, phase=6, round_no=11106))
    engine.observe(chainlink(CL_ETH, T0 + 2000, 2001.0, phase=7, round_no=1))
    late = engine.observe(chainlink(CL_ETH, T0 + 2500, 2000.5, phase=6, round_no=11107,
                                    updated_at=T0_S + 1))  # published before the new phase
    assert late.rejection is not None and late.rejection.reason == reasons.ROUND_BACKWARDS


def test_a_forged_phase_change_costs_the_feed_one_round_not_the_feed() -> None:
    engine = ConsensusEngine(three_sources())
    engine.observe(chainlink(CL_ETH, T0, 2000.0, phase=6, round_no=11106))
    forged = engine.observe(chainlink(CL_ETH, T0 + 1000, 9000.0, phase=7, round_no=1))
    assert forged.accepted  # indistinguishable from a real change on its own
    real = engine.observe(chainlink(CL_ETH, T0 + 5000, 2003.0, phase=6, round_no=11107))
    assert real.accepted  # the old aggregator still publishes: the change was not real
    assert engine.counters["phase_reverts"] == 1
    later = engine.observe(chainlink(CL_ETH, T0 + 9000, 2004.0, phase=6, round_no=11108))
    assert later.accepted and last_price(later).price == pytest.approx(2004.0)


@pytest.mark.parametrize(("phase", "round_no"), [(8, 1), (7, 101), (70, 1)])
def test_a_phase_change_the_aggregator_could_not_make_is_refused(phase: int,
                                                                 round_no: int) -> None:
    engine = ConsensusEngine(three_sources())
    engine.observe(chainlink(CL_ETH, T0, 2000.0, phase=6, round_no=11106))
    jump = engine.observe(chainlink(CL_ETH, T0 + 1000, 2001.0, phase=phase, round_no=round_no))
    assert jump.rejection is not None and jump.rejection.reason == reasons.PHASE_JUMP
    assert engine.observe(chainlink(CL_ETH, T0 + 2000, 2002.0, phase=6,
                                    round_no=11107)).accepted


def test_one_feed_ten_years_ahead_cannot_move_the_clock() -> None:
    engine = ConsensusEngine(three_sources())
    warm(engine, T0)
    future = T0 + 10 * 365 * 86_400_000
    poisoned = engine.observe(chainlink(CL_ETH, future, 2000.0, round_no=101))
    assert poisoned.rejection is not None and poisoned.rejection.reason == reasons.CLOCK_JUMP
    assert engine.clock == T0
    assert engine.observe(pyth(T0 + 1000, 2001.0)).accepted
    price = last_price(engine.observe(chainlink(CL_ETH, T0 + 2000, 2002.0, round_no=101)))
    assert price.status is not PriceStatus.HALTED
    assert engine.counters["rejected.clock_jump"] == 1


def test_a_gap_every_chain_reports_moves_the_clock() -> None:
    engine = ConsensusEngine(three_sources())
    warm(engine, T0)
    later = T0 + 3 * 86_400_000  # every feed silent for three days, then back
    first = engine.observe(chainlink(CL_ETH, later, 2100.0, round_no=101))
    assert first.rejection is not None and first.rejection.reason == reasons.CLOCK_JUMP
    second = engine.observe(pyth(later + 500, 2101.0))  # another chain: corroborated
    assert second.accepted and engine.clock == later + 500
    assert engine.counters["clock_jumps"] == 1
    restored = ConsensusEngine(three_sources(), snapshot=engine.snapshot())
    assert restored.snapshot() == engine.snapshot()


def test_a_newer_round_with_an_older_timestamp_is_refused() -> None:
    engine = ConsensusEngine(three_sources())
    engine.observe(chainlink(CL_ETH, T0 + 10_000, 2000.0, round_no=100))
    outcome = engine.observe(chainlink(CL_ETH, T0 + 11_000, 2000.0, round_no=101,
                                       updated_at=T0_S))
    assert outcome.rejection is not None
    assert outcome.rejection.reason == reasons.TIMESTAMP_BACKWARDS


def test_pyth_updates_out_of_order_and_duplicates_are_dropped_and_counted() -> None:
    engine = ConsensusEngine(three_sources())
    engine.observe(pyth(T0 + 5000, 2000.0))
    again = engine.observe(pyth(T0 + 5000, 2000.0))
    older = engine.observe(pyth(T0 + 6000, 1999.0, publish_time=T0_S + 4))
    assert again.dropped is not None and again.dropped.reason == reasons.DUPLICATE
    assert older.dropped is not None and older.dropped.reason == reasons.OUT_OF_ORDER
    assert again.prices == older.prices == []
    assert engine.counters["dropped.duplicate"] == engine.counters["dropped.out_of_order"] == 1


@pytest.mark.parametrize("ahead_s, accepted", [(4, True), (5, True), (6, False), (3600, False)])
def test_chain_clock_ahead_within_and_beyond_tolerance(ahead_s: int, accepted: bool) -> None:
    engine = ConsensusEngine(three_sources())
    outcome = engine.observe(chainlink(CL_ETH, T0, 2000.0, updated_at=T0_S + ahead_s))
    assert outcome.accepted is accepted
    if not accepted:
        assert outcome.rejection is not None
        assert outcome.rejection.reason == reasons.FUTURE_TIMESTAMP


def test_a_round_already_stale_on_arrival_is_dropped() -> None:
    engine = ConsensusEngine(three_sources())
    outcome = engine.observe(chainlink(CL_ETH, T0, 2000.0,
                                       updated_at=T0_S - CL_ETH_STALE_AFTER_MS // 1000 - 1))
    assert outcome.dropped is not None and outcome.dropped.reason == reasons.STALE


@pytest.mark.parametrize("obs, reason", [
    (chainlink("0x0000000000000000000000000000000000000001", T0, 2000.0), reasons.UNKNOWN_FEED),
    (chainlink(CL_ETH, T0, 2000.0, chain="arbitrum"), reasons.UNKNOWN_FEED),
    (OracleObservation("solana", OracleSource.CHAINLINK, PYTH_ETH, T0, pyth(T0, 1.0).body),
     reasons.UNKNOWN_FEED),
    (OracleObservation("ethereum", OracleSource.CHAINLINK, CL_ETH, T0, pyth(T0, 1.0).body),
     reasons.SOURCE_MISMATCH),
    (chainlink(CL_ETH, T0, answer="0"), reasons.NON_POSITIVE_PRICE),
    (chainlink(CL_ETH, T0, answer="-200000000000"), reasons.NON_POSITIVE_PRICE),
    (chainlink(CL_ETH, T0, answer="NaN"), reasons.INVALID_PRICE),
    (chainlink(CL_ETH, T0, answer="0", round_no=0, updated_at=0, started_at=0),
     reasons.EMPTY_ROUND),
    (OracleObservation("solana", OracleSource.PYTH, PYTH_ETH, T0,
                       PythPriceUpdate(200000000000, 100000, -40, T0_S, 200000000000, 100000)),
     reasons.ABSURD_EXPONENT),
    (pyth(T0, 2000.0, expo=-18), reasons.INVALID_PRICE),  # 2000e18 exceeds int64
    (pyth(T0, -1.0), reasons.NON_POSITIVE_PRICE),
    (pyth(T0, 2000.0, publish_time=T0_S + 3600), reasons.FUTURE_TIMESTAMP),
])
def test_bad_input_is_rejected_with_a_reason(obs: OracleObservation, reason: str) -> None:
    engine = ConsensusEngine(three_sources())
    outcome = engine.observe(obs)
    assert outcome.rejection is not None and outcome.rejection.reason == reason
    assert outcome.rejection.dead_letter
    assert outcome.prices == []
    assert engine.counters == {"observations": 1, f"rejected.{reason}": 1}


def test_sequencer_down_then_grace_then_healthy() -> None:
    engine = ConsensusEngine(three_sources())
    engine.observe(sequencer(T0 - 1000, 0, T0_S - 86_400, round_no=10))
    warm(engine, T0, 2000.0)
    down_at = T0 + 5000
    down = engine.observe(sequencer(down_at, 1, down_at // 1000, round_no=11))
    (price,) = down.prices
    assert price.unhealthy_chains == ["arbitrum"]
    assert ("chainlink@arbitrum", reasons.SEQUENCER_DOWN) in [
        (e.source, e.reason) for e in price.sources_excluded]
    assert price.status is PriceStatus.DEGRADED
    up_at = T0 + 600_000
    engine.observe(chainlink(CL_ETH, up_at - 2000, 2000.0, round_no=101))
    up = engine.observe(sequencer(up_at, 0, up_at // 1000, round_no=12))
    assert [(e.source, e.reason) for e in up.prices[-1].sources_excluded] == [
        ("chainlink@arbitrum", reasons.SEQUENCER_GRACE), ("pyth@solana", reasons.STALE)]
    # keep the others fresh through the grace period; the grace end is its own review
    grace_end = up_at + 3_600_000
    engine.observe(chainlink(CL_ETH, grace_end - 1000, 2000.0, round_no=102))
    engine.observe(pyth(grace_end - 900, 2000.0))
    after = engine.observe(pyth(grace_end + 500, 2000.0))
    review, latest = after.prices
    assert review.event_time == grace_end
    assert review.unhealthy_chains == [] and review.status is PriceStatus.OK
    assert latest.sources_used == ["chainlink@arbitrum", "chainlink@ethereum", "pyth@solana"]
    assert engine.counters["health_changes.arbitrum"] == 2


def test_sequencer_rounds_are_validated_like_any_round() -> None:
    engine = ConsensusEngine(three_sources())
    bad_status = engine.observe(sequencer(T0, 2, T0_S, round_no=5))
    assert bad_status.rejection is not None
    assert bad_status.rejection.reason == reasons.INVALID_SEQUENCER_STATUS
    engine.observe(sequencer(T0, 0, T0_S - 10_000, round_no=5))
    replay = engine.observe(sequencer(T0 + 1000, 1, T0_S - 20_000, round_no=4))
    assert replay.rejection is not None and replay.rejection.reason == reasons.ROUND_BACKWARDS
    assert engine.unhealthy_chains() == []


def test_no_source_left_halts_and_carries_the_last_price() -> None:
    engine = ConsensusEngine(three_sources())
    warm(engine, T0, 2000.0)
    later = T0 + 100_000_000  # everything stale, even the 24 h Arbitrum heartbeat
    outcome = engine.observe(sequencer(later, 1, later // 1000, round_no=3))
    price = outcome.prices[-1]
    assert price.status is PriceStatus.HALTED
    assert price.sources_used == [] and price.price == 2000.0


def test_counters_account_for_every_observation() -> None:
    engine = ConsensusEngine(three_sources())
    warm(engine, T0, 2000.0)
    engine.observe(pyth(T0, 2000.0))                     # duplicate
    engine.observe(chainlink(CL_ETH, T0 + 1, answer="0", round_no=101))  # rejected
    engine.refuse_input("malformed_avro", "truncated")  # adapter-level refusal
    counters = engine.counters
    refused = sum(v for k, v in counters.items() if k.startswith(("rejected.", "dropped.")))
    assert counters["observations"] == counters["accepted"] + refused == 6
    assert counters["prices"] == counters["prices.OK"] + counters.get("prices.DEGRADED", 0) \
        + counters.get("prices.HALTED", 0)


def test_two_rounds_in_one_block_are_both_accepted() -> None:
    # Real consecutive ETH/USD rounds sharing updatedAt 1681891931 (one block), from
    # /work/shared/data/oracle/chainlink/ETH-USD_mainnet_0x5f4e.csv rows 10704 and 10703.
    engine = ConsensusEngine(three_sources())
    for round_id, answer in (("110680464442257310098", "203410490000"),
                             ("110680464442257310099", "202287610000")):
        outcome = engine.observe(OracleObservation(
            "ethereum", OracleSource.CHAINLINK, CL_ETH, 1681891931_000 + 1500,
            ChainlinkRound(round_id, answer, 1681891931, 1681891931, round_id)))
        assert outcome.accepted
    assert last_price(outcome).price == 2022.8761
