"""Exact normalization and validation of Chainlink and Pyth payloads (real numbers inlined)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from streams.domain import ChainlinkRound, PythPriceUpdate
from streams.errors import DomainError
from streams.oracle import reasons
from streams.oracle.normalize import (
    ExactPrice,
    compose_round_id,
    normalize_chainlink,
    normalize_pyth,
    split_round_id,
    to_float,
)

# Real ETH/USD rounds, Ethereum mainnet proxy 0x5f4e..., from getRoundData
# (/work/shared/data/oracle/chainlink/ETH-USD_mainnet_0x5f4e.csv, rows 0 and 11106).
ETH_USD_LATEST = ChainlinkRound("110680464442257320802", "229750276106", 1706558123, 1706558123,
                                "110680464442257320802")
ETH_USD_ROUND_ZERO = ChainlinkRound("110680464442257309696", "0", 0, 0, "110680464442257309696")
# Real Pyth BTC/USD update from a Hermes stream event (parsed[0].price and ema_price,
# /work/shared/data/oracle/pyth/hermes_v2_stream_btcusd_events.jsonl).
BTC_USD_HERMES = PythPriceUpdate(price=6163260000000, conf=3268548079, expo=-8,
                                 publish_time=1714748300, ema_price=6130098800000,
                                 ema_conf=3587162000)


def test_round_id_carries_the_phase_in_its_high_bits() -> None:
    fields = normalize_chainlink(ETH_USD_LATEST)
    assert (fields.phase, fields.aggregator_round) == (6, 11106)
    assert split_round_id(fields.round_id) == (6, 11106)
    assert compose_round_id(6, 11106) == 110680464442257320802
    # a new phase restarts the aggregator's count but still orders after the old phase
    assert compose_round_id(7, 1) > compose_round_id(6, 11106)


def test_chainlink_answer_is_exact() -> None:
    fields = normalize_chainlink(ETH_USD_LATEST)
    exact = ExactPrice(fields.answer, -8)
    assert exact.to_decimal() == Decimal("2297.50276106")
    assert exact.to_fraction() == Fraction(229750276106, 10**8)
    assert exact.to_float() == 2297.50276106


def test_pyth_price_is_exact() -> None:
    fields = normalize_pyth(BTC_USD_HERMES)
    assert ExactPrice(fields.price, fields.expo).to_decimal() == Decimal("61632.6")
    assert ExactPrice(fields.conf, fields.expo).to_decimal() == Decimal("32.68548079")


def test_to_float_is_correctly_rounded_where_naive_scaling_drifts() -> None:
    # 0.3 is not 3 * 0.1 in binary floating point; the exact division gets it right
    assert 3 * 10.0**-1 != 0.3
    assert to_float(3, -1) == 0.3
    # an 18-decimals answer (stETH/ETH feed style) far beyond 2**53
    assert to_float(999692734093987600, -18) == float(Fraction(999692734093987600, 10**18))
    assert to_float(12, 3) == 12000.0


def test_the_all_zero_round_zero_is_rejected() -> None:
    with pytest.raises(DomainError) as err:
        normalize_chainlink(ETH_USD_ROUND_ZERO)
    assert err.value.reason == reasons.EMPTY_ROUND


@pytest.mark.parametrize("round_, reason", [
    (ChainlinkRound("abc", "1", 1, 1, "abc"), reasons.INVALID_ROUND_ID),
    (ChainlinkRound("-5", "1", 1, 1, "-5"), reasons.INVALID_ROUND_ID),
    (ChainlinkRound("1_000", "1", 1, 1, "1_000"), reasons.INVALID_ROUND_ID),
    (ChainlinkRound(str(1 << 80), "1", 1, 1, str(1 << 80)), reasons.INVALID_ROUND_ID),
    (ChainlinkRound("5", "NaN", 1, 1, "5"), reasons.INVALID_PRICE),
    (ChainlinkRound("5", "1.5", 1, 1, "5"), reasons.INVALID_PRICE),
    (ChainlinkRound("5", str(1 << 255), 1, 1, "5"), reasons.INVALID_PRICE),
    (ChainlinkRound("5", "1", 9, 8, "5"), reasons.INVALID_TIMESTAMP),
    (ChainlinkRound("5", "1", 1, 1, "6"), reasons.INVALID_ROUND_ID),
    (ChainlinkRound("5", "1", 1, 1, "4"), reasons.CARRIED_OVER_ANSWER),
    (ChainlinkRound(str(compose_round_id(6, 0)), "1", 1, 1, str(compose_round_id(6, 0))),
     reasons.EMPTY_ROUND),
])
def test_bad_chainlink_rounds(round_: ChainlinkRound, reason: str) -> None:
    with pytest.raises(DomainError) as err:
        normalize_chainlink(round_)
    assert err.value.reason == reason


def test_negative_answers_parse_exactly_for_the_engine_to_refuse() -> None:
    fields = normalize_chainlink(ChainlinkRound("5", "-123", 1, 1, "5"))
    assert fields.answer == -123


@pytest.mark.parametrize("changes, reason", [
    ({"price": 0}, reasons.NON_POSITIVE_PRICE),
    ({"price": -5}, reasons.NON_POSITIVE_PRICE),
    ({"price": float("nan")}, reasons.INVALID_PRICE),
    ({"expo": -40}, reasons.ABSURD_EXPONENT),
    ({"expo": 3}, reasons.ABSURD_EXPONENT),
    ({"conf": -1}, reasons.INVALID_CONFIDENCE),
    ({"publish_time": 0}, reasons.INVALID_TIMESTAMP),
])
def test_bad_pyth_updates(changes: dict[str, object], reason: str) -> None:
    fields = {name: getattr(BTC_USD_HERMES, name) for name in BTC_USD_HERMES.__slots__}
    update = PythPriceUpdate(**{**fields, **changes})  # type: ignore[arg-type]
    with pytest.raises(DomainError) as err:
        normalize_pyth(update)
    assert err.value.reason == reason
