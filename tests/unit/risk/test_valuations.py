"""Option unit tables shared by the engines of one process change no decision."""

from __future__ import annotations

import numpy as np
import pytest

from streams.domain import ConsensusPrice, ExecutionStatus, PriceStatus, RiskInput, ScalingCommand
from streams.risk.bookgen import account_states, generate_accounts
from streams.risk.engine import PartitionEngine
from streams.risk.margin import StressGrid
from streams.risk.stress import option_unit_table
from streams.risk.valuations import QUOTES_PER_ASSET, QuoteKey, SharedValuations
from tests.unit.risk.engine_helpers import Feeder
from tests.unit.risk.test_engine_fast import crash_feed

PARTITIONS = 3


def _split(events: list, partition: int) -> list:
    return [e for e in events if hash_id(e.account_id) % PARTITIONS == partition]


def hash_id(account_id: str) -> int:
    return int(account_id.rsplit("-", 1)[1])


def run_partitions(engines: list[PartitionEngine], events: list, prices: list,
                   reports: str) -> list[list[list[ScalingCommand]]]:
    """Like test_engine_fast.run, for one engine per partition fed price by price (every
    price goes to every engine in turn, as in a worker); reports at the next price."""
    feeds = [Feeder(engine) for engine in engines]
    for p, feed in enumerate(feeds):
        for event in _split(events, p):
            feed.apply(feed.entry("account.events", event))
    queues: list[list[ScalingCommand]] = [[] for _ in engines]
    out: list[list[list[ScalingCommand]]] = [[] for _ in engines]
    for asset, t, price, conf, status, unhealthy in prices:
        for p, feed in enumerate(feeds):
            due = [c for c in queues[p] if c.provenance.asset == asset]
            queues[p] = [c for c in queues[p] if c.provenance.asset != asset]
            for command in due:
                rejected = reports == "mixed" and int(command.command_id, 16) % 3 == 0
                feed.report(command, ExecutionStatus.REJECTED if rejected else
                            ExecutionStatus.FILLED,
                            price=command.trigger.get("reference_price"), time_ms=t)
            commands = feed.price(asset, price, t, confidence=conf, status=status,
                                  unhealthy=unhealthy)
            out[p].append(commands)
            queues[p] += commands
    return out


@pytest.mark.parametrize("reports", ["filled", "mixed"])
def test_engines_sharing_valuations_decide_exactly_as_engines_alone(reports: str) -> None:
    events, prices = crash_feed(60, 13)
    shared = SharedValuations()
    sharing = [PartitionEngine(valuations=shared) for _ in range(PARTITIONS)]
    alone = [PartitionEngine() for _ in range(PARTITIONS)]
    got = run_partitions(sharing, events, prices, reports)
    want = run_partitions(alone, events, prices, reports)
    assert sum(len(c) for part in want for c in part) > 50, "the crash must make them act"
    assert got == want
    for a, b in zip(sharing, alone, strict=True):
        assert list(a.accounts()) == list(b.accounts())
    assert shared.stats.hits > 0


def test_engines_receiving_the_same_prices_reuse_each_others_rows() -> None:
    book = generate_accounts({"BTC": 60_000.0}, 600, seed=3)
    shared = SharedValuations()
    engines = [PartitionEngine(states=account_states(book[p::PARTITIONS]), valuations=shared)
               for p in range(PARTITIONS)]
    body = ConsensusPrice("BTC", 1_000, 59_000.0, 5.0, PriceStatus.OK, 0.0, [], [], [], 1)
    for engine in engines:
        engine.apply(RiskInput("oracle.prices", 0, 1, body))
    distinct = [len(engine.book.caches[0].keys) for engine in engines]
    # the partitions hold mostly the same listed options: most rows are computed once
    assert shared.stats.computed < sum(distinct) * 0.6
    assert shared.stats.hits + shared.stats.computed == sum(distinct)
    assert shared.assets() == ["BTC"]


def _keys(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.random(n) < 0.5, rng.random(n) < 0.5,
                            rng.uniform(40_000, 80_000, n).round(-2),
                            rng.integers(1, 90, n) * 86_400_000, rng.uniform(0.3, 1.2, n),
                            rng.choice([0.0, 1.0, 2.0], n)]).astype(np.float64)


def test_a_shared_row_is_bit_identical_to_the_row_of_a_table_of_its_own() -> None:
    grid = StressGrid()
    quote = QuoteKey("BTC", 61_234.5, 12.5, 3_600_000, 0.01, grid)
    shared = SharedValuations()
    first, second = _keys(40, 1), _keys(25, 2)
    second[:10] = first[5:15]  # rows another engine computed already
    shared.unit_table(quote, first)
    got = shared.unit_table(quote, second)
    own = option_unit_table(
        spot=quote.price, kc=second[:, 5] * quote.confidence, strike=second[:, 2],
        expiry_ms=second[:, 3], vol=second[:, 4], is_call=second[:, 0] > 0.5,
        is_black76=second[:, 1] > 0.5, now_ms=quote.event_time, rate=quote.rate, grid=grid)
    assert got.tobytes() == own.tobytes()
    assert shared.stats.hits == 10 and shared.stats.computed == 55


def test_the_latest_quotes_of_an_asset_are_kept_and_no_more() -> None:
    grid = StressGrid()
    shared = SharedValuations()
    keys = _keys(5, 3)
    shared.unit_table(QuoteKey("BTC", 60_000.0, 1.0, 1_000, 0.0, grid), keys)
    shared.unit_table(QuoteKey("BTC", 60_001.0, 1.0, 2_000, 0.0, grid), keys)
    # a new quote computes again (a different quote never reuses a row), in one call for the
    # rows asked for under the previous quote, which the lookup then finds
    assert shared.stats.computed == 10 and shared.stats.hits == 5
    # an engine behind the others asks for an earlier quote: still kept
    shared.unit_table(QuoteKey("BTC", 60_000.0, 1.0, 1_000, 0.0, grid), keys)
    assert shared.stats.computed == 10 and shared.stats.hits == 10
    # a different grid or rate is a different quote too
    shared.unit_table(QuoteKey("BTC", 60_000.0, 1.0, 1_000, 0.01, grid), keys)
    shared.unit_table(QuoteKey("BTC", 60_000.0, 1.0, 1_000, 0.01, StressGrid(vol_shift=0.1)),
                      keys)
    assert shared.stats.computed == 20 and len(shared.assets()) == 1
    for i in range(2 * QUOTES_PER_ASSET):
        shared.unit_table(QuoteKey("BTC", 50_000.0 + i, 1.0, 5_000 + i, 0.0, grid), keys)
    assert shared.quotes("BTC") == QUOTES_PER_ASSET
