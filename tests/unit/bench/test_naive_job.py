"""The naive job (variants b and c of `aps bench pipeline`) computes what the APS engine does.

The comparison of the benchmark is only fair if the per-account Python loop values the
same book with the same formulas: same equity, adverse-edge equity, maintenance margin and
margin ratio as `PartitionEngine`, account by account.
"""

from __future__ import annotations

import math

import pytest

from streams.bench.naive_job import (
    DEFAULT_K,
    DEFAULT_VOL,
    Fanout,
    NaiveConfig,
    Quote,
    apply_event,
    decide,
    new_account,
    revalue,
)
from streams.bench.workload import CHAINS, START_MS, build_book, build_observations, tick_key
from streams.codecs import decode, encode
from streams.config import DEV_COMMAND_KEY
from streams.domain import (
    CommandReason,
    ConsensusPrice,
    PriceStatus,
    RiskInput,
    ScalingCommand,
)
from streams.oracle.feeds import load_feeds
from streams.risk.bookgen import account_events, generate_accounts
from streams.risk.engine import EngineConfig, PartitionEngine

PRICES = {"BTC": 64_000.0, "ETH": 3_200.0}


def _naive_book(events: list) -> dict[str, dict]:
    states: dict[str, dict] = {}
    for event in events:
        state = states.setdefault(event.account_id, new_account(event.account_id))
        apply_event(state, event)
    return states


def _price(asset: str, price: float, conf: float, seq: int, t: int) -> ConsensusPrice:
    return ConsensusPrice(asset, t, price, conf, PriceStatus.OK, 0.0, ["x"], [], [], seq)


def test_defaults_match_the_engine() -> None:
    config = EngineConfig()
    assert config.default_vol == DEFAULT_VOL
    assert config.default_confidence_k == DEFAULT_K
    assert NaiveConfig.default().params == config.margin
    assert config.rate == 0.0  # the naive job prices with r = q = 0


@pytest.mark.parametrize("positions", [1, 2, 3, 5, None])
def test_margin_matches_the_engine(positions: int | None) -> None:
    book = generate_accounts(PRICES, 60, seed=3, start_ms=START_MS,
                             positions_per_account=positions)
    events = account_events(book, START_MS)
    engine = PartitionEngine()
    for offset, event in enumerate(events):
        engine.apply(RiskInput("account.events", 0, offset, event))
    naive = _naive_book(events)
    config = NaiveConfig.default()
    t = START_MS + 3_600_000
    moves = [("BTC", 61_500.0, 12.0), ("ETH", 2_950.0, 1.5), ("BTC", 60_100.0, 30.0)]
    for seq, (asset, price, conf) in enumerate(moves, start=1):
        engine.apply(RiskInput("oracle.prices", 0, seq, _price(asset, price, conf, seq, t)))
        quote = Quote(asset, price, conf, PriceStatus.OK, t, seq)
        for state in naive.values():
            if any(p["asset"] == asset for p in state["positions"].values()):
                figures = revalue(state, quote, config)
                expected = engine.figures(state["id"])
                assert expected is not None
                assert figures.maintenance == pytest.approx(expected.maintenance, rel=1e-9)
                assert figures.equity == pytest.approx(expected.equity, rel=1e-9, abs=1e-6)
                assert figures.equity_adverse == pytest.approx(expected.equity_adverse,
                                                               rel=1e-9, abs=1e-6)
                assert figures.ratio == pytest.approx(expected.margin_ratio, rel=1e-9)


def test_a_crash_fires_the_ladder_and_the_delta_band() -> None:
    book = generate_accounts(PRICES, 200, seed=5, start_ms=START_MS)
    naive = _naive_book(account_events(book, START_MS))
    config = NaiveConfig.default()
    reasons: set[CommandReason] = set()
    for state in naive.values():
        for asset in {p["asset"] for p in state["positions"].values()}:
            quote = Quote(asset, PRICES[asset] * 0.85, 5.0, PriceStatus.OK, START_MS + 60_000, 1)
            for command in decide(state, quote, revalue(state, quote, config), DEV_COMMAND_KEY):
                reasons.add(command.reason)
                assert command.signature
                assert decode(encode(command), ScalingCommand) == command
                assert command.created_at == quote.event_time
    assert {CommandReason.MARGIN_TOP_UP, CommandReason.MARGIN_REDUCE,
            CommandReason.DELTA_REBALANCE} <= reasons


def test_cooldown_holds_back_a_second_command() -> None:
    book = generate_accounts({"BTC": 64_000.0}, 50, seed=9, start_ms=START_MS,
                             positions_per_account=1)
    naive = _naive_book(account_events(book, START_MS))
    config = NaiveConfig.default()
    first = second = 0
    for state in naive.values():
        for n, t in enumerate((START_MS + 1_000, START_MS + 2_000)):
            quote = Quote("BTC", 60_500.0, 1.0, PriceStatus.OK, t, n + 1)
            count = len(decide(state, quote, revalue(state, quote, config), DEV_COMMAND_KEY))
            first, second = (first + count, second) if n == 0 else (first, second + count)
    assert first > 0
    assert second < first


def test_fanout_addresses_holders_of_the_asset() -> None:
    feeds = load_feeds("bench/feeds-10-assets.toml")
    observations = build_observations(feeds, 30, seed=7)
    book = build_book(40, seed=7)
    fanout = Fanout(feeds)
    for account in book:
        fanout.expose(account.account_id, {p.instrument.underlying for p in account.positions})
    addressed = 0
    for observation in observations:
        assert tick_key(observation)
        for quote, accounts in fanout.observe(encode(observation)):
            holders = {a.account_id for a in book
                       if any(p.instrument.underlying == quote.asset for p in a.positions)}
            assert set(accounts) == holders
            assert math.isfinite(quote.price)
            addressed += len(accounts)
    assert fanout.observations == len(observations)
    assert fanout.prices > 0
    assert addressed > 0
    assert len({a.collateral[0].chain for a in book}) == len(CHAINS)


def test_the_book_has_1_to_5_positions_and_unique_ids() -> None:
    book = build_book(200, seed=7)
    assert len({a.account_id for a in book}) == len(book) == 200
    assert {len(a.positions) for a in book} == {1, 2, 3, 4, 5}
    for account in book:
        assert len({p.position_id for p in account.positions}) == len(account.positions)
        assert all(p.position_id.startswith(account.account_id) for p in account.positions)
