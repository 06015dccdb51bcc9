"""Pure parts of `aps history account` and `aps history plot`."""

from __future__ import annotations

import pytest

from streams.archive.plotdata import bucket_ms, tick_price
from streams.archive.plots import ratio_limits
from streams.archive.timeline import TimeRange, ladder_steps, net_deltas
from streams.clock import parse_event_time
from streams.domain import OracleSource
from streams.errors import ConfigError
from streams.oracle.feeds import FeedSpec

T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
CHAINLINK = FeedSpec("ethereum", OracleSource.CHAINLINK, "0xabc", "ETH", -8, 3600.0, 1.0, 50.0,
                     "chainlink@ethereum")


def test_event_times_parse_from_iso_and_epoch_ms() -> None:
    assert parse_event_time(str(T0)) == T0
    assert parse_event_time("2023-11-14T22:13:20Z") == T0
    assert parse_event_time("2023-11-14 22:13:20.250") == T0 + 250  # no zone: UTC
    assert parse_event_time("2023-11-14T23:13:20+01:00") == T0
    with pytest.raises(ConfigError, match="neither epoch milliseconds nor an ISO 8601"):
        parse_event_time("yesterday")


def test_a_time_range_is_half_open() -> None:
    when = TimeRange(T0, T0 + 10)
    assert T0 in when and T0 + 9 in when and T0 + 10 not in when and T0 - 1 not in when
    assert when.sql() == (" AND event_time >= {start:Int64} AND event_time < {end:Int64}",
                          {"start": T0, "end": T0 + 10})
    assert TimeRange().sql() == ("", {})


def test_net_deltas_and_ladder_come_from_the_record() -> None:
    state = {"valuation": {"exposures": [{"underlying": "ETH", "delta": 2.5},
                                         {"underlying": "BTC", "delta": "-Infinity"}]},
             "rules": {"margin_ladder": {"steps": [
                 {"margin_ratio": 1.3, "action": "TOP_UP", "fraction": 0.5}]}}}
    assert net_deltas(state) == {"ETH": 2.5, "BTC": float("-inf")}
    assert net_deltas({"valuation": None}) == {}
    assert ladder_steps(state["rules"]) == [(1.3, "TOP_UP", 0.5)]
    assert ladder_steps(None) == [] and ladder_steps({"margin_ladder": None}) == []


def test_tick_prices_use_pyth_expo_or_the_feed_decimals() -> None:
    assert tick_price("300012345678", None, CHAINLINK) == 3000.12345678
    assert tick_price("300050000000", -8, CHAINLINK) == 3000.5  # a Pyth expo wins
    assert tick_price("-5", None, CHAINLINK) is None  # not a price
    assert tick_price("garbage", None, CHAINLINK) is None


def test_buckets_are_round_and_at_most_120() -> None:
    assert bucket_ms(TimeRange(T0, T0 + 300_000)) == 5_000
    assert bucket_ms(TimeRange(T0, T0 + 60_000)) == 1_000
    assert bucket_ms(TimeRange(T0, T0 + 86_400_000)) == 900_000


def test_ratio_limits_keep_the_ladder_in_view() -> None:
    low, high = ratio_limits([50.0, 3.0], [3.33, 1.78])
    assert high == pytest.approx(3.33 * 1.5) and low < 0  # 50 is off the scale
    low, high = ratio_limits([-1.2, 0.5], [])
    assert low < -1.2 and 1.0 < high <= 1.5
