"""The risk stage persists a partition's market state per asset and restores it whole."""

from __future__ import annotations

from streams.app.risk_agent import market_key, restore_market
from streams.codecs import encode
from streams.domain import MarketState
from tests.unit.risk.engine_helpers import Feeder


def test_market_deltas_written_per_asset_restore_the_whole_state() -> None:
    feed = Feeder()
    table: dict[bytes, bytes] = {}

    def persist() -> None:
        delta = feed.engine.take_market_state()
        assert delta is not None
        for entry in delta.assets:
            table[market_key(2, entry.asset)] = encode(MarketState(0, [entry]))
        table[market_key(2)] = encode(MarketState(delta.watermark, [], delta.held_reports))

    feed.price("BTC", 100.0, 1_000)
    feed.price("ETH", 10.0, 1_500)
    persist()
    feed.price("BTC", 101.0, 2_000)
    persist()
    table[market_key(3, "BTC")] = encode(MarketState(0, []))  # another partition's key
    assert restore_market(table, 2) == feed.engine.market_state()
    assert restore_market(table, 1) is None
