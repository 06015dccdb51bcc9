"""Implied volatility: round trips, py_vollib (Jäckel's "Let's be rational") as an oracle,
explicit outcomes for prices without a volatility, and the extremes (deep wings, short
expiries, huge volatilities)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import DomainError
from streams.risk.iv import (
    ImpliedVolError,
    IVStatus,
    implied_vol,
    implied_vol_scalar,
    solve_implied_vol,
)
from streams.risk.pricing import bsm, option_greeks

with warnings.catch_warnings():  # py_vollib 1.0.12 is a shim that re-exports `vollib`
    warnings.simplefilter("ignore", DeprecationWarning)
    from vollib.black_scholes_merton import black_scholes_merton as vollib_bsm
    from vollib.black_scholes_merton.implied_volatility import (
        implied_volatility as vollib_implied_volatility,
    )


def _book(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    S = 100.0 * np.exp(rng.uniform(-1.0, 1.0, n))
    return {
        "S": S,
        "K": S * np.exp(rng.uniform(-3.0, 3.0, n)),
        "T": np.exp(rng.uniform(np.log(1e-5), np.log(10.0), n)),
        "r": rng.uniform(-0.02, 0.2, n),
        "q": rng.uniform(0.0, 0.1, n),
        "sigma": np.exp(rng.uniform(np.log(0.01), np.log(5.0), n)),
        "call": rng.random(n) < 0.5,
        "b76": rng.random(n) < 0.3,
    }


def test_hull_example_round_trip() -> None:
    price = float(bsm(42.0, 40.0, 0.5, 0.10, 0.0, 0.20, True).price)
    assert implied_vol_scalar(price, 42.0, 40.0, 0.5, 0.10) == pytest.approx(0.20, rel=1e-13)
    put = float(bsm(42.0, 40.0, 0.5, 0.10, 0.0, 0.20, False).price)
    assert implied_vol_scalar(put, 42.0, 40.0, 0.5, 0.10, is_call=False) == pytest.approx(
        0.20, rel=1e-13)


def test_round_trip_over_a_wide_random_book() -> None:
    b = _book(40_000, seed=21)
    g = option_greeks(b["S"], b["K"], b["T"], b["r"], b["q"], b["sigma"], b["call"], b["b76"])
    result = solve_implied_vol(g.price, b["S"], b["K"], b["T"], b["r"], b["q"], b["call"],
                               b["b76"])
    assert np.all(result.status == IVStatus.OK)
    assert np.all(np.isfinite(result.sigma))
    # how much the price says about sigma: d ln V / d ln sigma
    information = g.vega * b["sigma"] / np.maximum(g.price, 1e-300)
    relative_error = np.abs(result.sigma - b["sigma"]) / b["sigma"]
    informative = (information > 1e-3) & (g.price > 1e-250)
    assert informative.sum() > 10_000
    assert relative_error[informative].max() < 1e-9
    # where the price carries no information (lost in the intrinsic value, or underflowed)
    # the solved sigma still reproduces the price
    again = option_greeks(b["S"], b["K"], b["T"], b["r"], b["q"], result.sigma, b["call"],
                          b["b76"])
    mismatch = np.abs(again.price - g.price) - (1e-7 * g.price + 1e-13 * (b["S"] + b["K"]))
    assert mismatch.max() <= 0.0


def test_agrees_with_py_vollib_lets_be_rational() -> None:
    rng = np.random.default_rng(22)
    n = 400
    S = 100.0 * np.exp(rng.uniform(-1.0, 1.0, n))
    K = S * np.exp(rng.uniform(-1.5, 1.5, n))
    T = np.exp(rng.uniform(np.log(1e-3), np.log(5.0), n))
    r, q = rng.uniform(-0.02, 0.2, n), rng.uniform(0.0, 0.1, n)
    sigma = np.exp(rng.uniform(np.log(0.02), np.log(3.0), n))
    flags = np.where(rng.random(n) < 0.5, "c", "p")
    # prices from vollib (Jäckel's accurate normalized Black), sigma back from both solvers
    prices = np.array([vollib_bsm(*args) for args in zip(flags, S, K, T, r, sigma, q,
                                                          strict=True)])
    theirs = np.array([_vollib_implied_vol(*args) for args in zip(prices, S, K, T, r, q, flags,
                                                                  strict=True)])
    ours = implied_vol(prices, S, K, T, r, q, flags == "c")
    vega = bsm(S, K, T, r, q, sigma, flags == "c").vega
    informative = (vega * sigma > 1e-4 * prices) & (prices > 0) & np.isfinite(theirs)
    assert informative.sum() > 200
    np.testing.assert_allclose(ours[informative], theirs[informative], rtol=1e-9)
    np.testing.assert_allclose(ours[informative], sigma[informative], rtol=1e-9)


def _vollib_implied_vol(price: float, S: float, K: float, T: float, r: float, q: float,
                        flag: str) -> float:
    try:
        return float(vollib_implied_volatility(price, S, K, T, r, q, flag))
    except Exception:  # vollib refuses some of its own prices as "below intrinsic"
        return float("nan")


def test_extremes_deep_wings_short_expiries_huge_volatility() -> None:
    cases = [  # S, K, T, sigma, is_call
        (100.0, 100.0, 1e-10, 0.5, True),  # ~3 seconds to expiry, at the money
        (100.0, 101.0, 1e-4, 0.05, True),  # price ~1e-100: deep in the wing
        (100.0, 1e-4, 2.0, 1.5, False),  # far out of the money put
        (100.0, 1e4, 2.0, 1.5, True),  # far out of the money call
        (100.0, 100.0, 1.0, 6.0, True),  # 600% volatility: the price is near its bound
        (100.0, 50.0, 1.0, 8.0, False),
    ]
    S, K, T, sigma, call = (np.array(column) for column in zip(*cases, strict=True))
    prices = bsm(S, K, T, 0.01, 0.0, sigma, call).price
    assert prices.min() > 0.0 and prices.min() < 1e-90
    np.testing.assert_allclose(implied_vol(prices, S, K, T, 0.01, 0.0, call), sigma, rtol=1e-8)


def test_tiny_prices_still_have_a_volatility() -> None:
    # 1e-300 for a call struck at 10x spot: no underflow in the solver's log-space objective
    sigma = implied_vol_scalar(1e-300, 100.0, 1000.0, 1.0, 0.0)
    assert 0.0 < sigma < 0.1
    log_price = np.log(float(bsm(100.0, 1000.0, 1.0, 0.0, 0.0, sigma, True).price))
    assert log_price == pytest.approx(np.log(1e-300), rel=1e-6)


@pytest.mark.parametrize(("price", "T", "is_call", "status"), [
    (1.0, 1.0, True, IVStatus.BELOW_INTRINSIC),  # call intrinsic ~ 10.9
    (-0.1, 1.0, False, IVStatus.INVALID_INPUT),
    (np.nan, 1.0, True, IVStatus.INVALID_INPUT),
    (110.0, 1.0, True, IVStatus.ABOVE_UPPER_BOUND),  # a call is worth less than S e^{-qT}
    (100.0, 1.0, False, IVStatus.ABOVE_UPPER_BOUND),  # a put is worth less than K e^{-rT}
    (12.0, 0.0, True, IVStatus.EXPIRED),
    (12.0, -1.0, True, IVStatus.EXPIRED),
])
def test_prices_without_a_volatility_are_reported(price: float, T: float, is_call: bool,
                                                  status: IVStatus) -> None:
    result = solve_implied_vol([price, 12.0], 110.0, 100.0, T, 0.01, 0.0, is_call)
    assert result.status[0] == status
    assert np.isnan(result.sigma[0])
    with pytest.raises(ImpliedVolError, match="first at index 0") as raised:
        implied_vol([price], 110.0, 100.0, T, 0.01, 0.0, is_call)
    assert isinstance(raised.value, DomainError)
    assert raised.value.reason == status.name.lower()


def test_intrinsic_value_gives_zero_volatility() -> None:
    S, K, T, r = 110.0, 100.0, 0.5, 0.03
    intrinsic = float(bsm(S, K, T, r, 0.0, 0.0, True).price)
    sigmas = implied_vol([intrinsic, 0.0], S, [K, 200.0], T, r, 0.0, True)
    np.testing.assert_array_equal(sigmas, [0.0, 0.0])


def test_invalid_underlying_or_strike_is_reported_per_row() -> None:
    result = solve_implied_vol(1.0, [100.0, 0.0, 100.0], [100.0, 100.0, -5.0], 1.0, 0.0, 0.0,
                               True)
    np.testing.assert_array_equal(result.status, [IVStatus.OK, IVStatus.INVALID_INPUT,
                                                  IVStatus.INVALID_INPUT])
    np.testing.assert_array_equal(result.ok, [True, False, False])


def test_shapes_follow_broadcasting() -> None:
    prices = np.array([[5.0, 6.0], [7.0, 8.0]])
    result = solve_implied_vol(prices, 100.0, 100.0, 1.0, 0.0, 0.0, True)
    assert result.sigma.shape == (2, 2)
    assert np.all(np.diff(result.sigma.reshape(-1)) > 0)  # higher price, higher volatility


@settings(max_examples=200, deadline=None)
@given(moneyness=st.floats(min_value=-1.0, max_value=1.0),
       T=st.floats(min_value=1e-3, max_value=5.0),
       sigma=st.floats(min_value=0.01, max_value=3.0),
       r=st.floats(min_value=-0.05, max_value=0.2),
       is_call=st.booleans(), is_black76=st.booleans())
def test_round_trip_property(moneyness: float, T: float, sigma: float, r: float, is_call: bool,
                             is_black76: bool) -> None:
    S, q = 100.0, 0.01
    K = S * np.exp(moneyness)
    g = option_greeks(S, K, T, r, q, sigma, is_call, is_black76)
    price = float(g.price)
    if price < 1e-250 or float(g.vega) * sigma < 1e-3 * price:
        # underflowed, or the price says next to nothing about sigma
        return
    solved = implied_vol_scalar(price, S, K, T, r, q, is_call, is_black76)
    assert solved == pytest.approx(sigma, rel=1e-9)
