"""Per-unit option valuations on the stress grid.

A price update revalues every *distinct* option (same model, type, strike, expiry, mark
volatility and confidence multiplier) once, then the book multiplies by quantities: a real
book holds a few hundred listed instruments across thousands of accounts. The table has one
row per distinct option and the columns below; the scenario columns hold V_j - mark, the
PnL of one unit long in scenario j of the grid (streams.risk.margin.StressGrid).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from streams.risk.margin import FloatArray, StressGrid
from streams.risk.pricing import option_greeks
from streams.risk.volatility import YEAR_MS

MARK, DELTA, GAMMA, VEGA, THETA = range(5)
FIRST_SCENARIO = 5
# a scenario price never reaches zero, even with a band wider than the price
_MIN_PRICE_FRACTION = 1e-9


def unit_columns(grid: StressGrid) -> int:
    """Width of a unit table for `grid`."""
    return FIRST_SCENARIO + grid.size


def years_to_expiry(expiry_ms: ArrayLike, now_ms: int) -> FloatArray:
    """Time to expiry in years (negative past expiry; pricing treats it as expired)."""
    return (np.asarray(expiry_ms, dtype=np.float64) - float(now_ms)) / YEAR_MS


def option_unit_table(*, spot: float, kc: ArrayLike, strike: ArrayLike, expiry_ms: ArrayLike,
                      vol: ArrayLike, is_call: ArrayLike, is_black76: ArrayLike, now_ms: int,
                      rate: float, grid: StressGrid) -> FloatArray:
    """Mark, Greeks and scenario PnL of one unit of each option, shape (n, 5 + scenarios).

    The consensus price is both the BSM spot and the Black-76 forward; q = 0. `kc` is the
    adverse push of every scenario price (k * confidence) for each row.
    """
    K = np.asarray(strike, dtype=np.float64)
    n = K.shape[0]
    out = np.empty((n, unit_columns(grid)))
    if n == 0:
        return out
    T = years_to_expiry(expiry_ms, now_ms)
    sigma = np.asarray(vol, dtype=np.float64)
    call = np.asarray(is_call, dtype=bool)
    b76 = np.asarray(is_black76, dtype=bool)
    base = option_greeks(np.full(n, spot), K, T, rate, 0.0, sigma, call, b76)
    out[:, MARK] = base.price
    out[:, DELTA] = base.delta
    out[:, GAMMA] = base.gamma
    out[:, VEGA] = base.vega
    out[:, THETA] = base.theta

    kc_ = np.broadcast_to(np.asarray(kc, dtype=np.float64), (n,))
    prices = spot * (1.0 + grid.moves)[None, :] + kc_[:, None] * grid.edges[None, :]
    prices = np.maximum(prices, spot * _MIN_PRICE_FRACTION)
    floor = np.minimum(sigma, grid.min_vol)[:, None]
    vols = np.maximum(sigma[:, None] + grid.shifts[None, :], floor)
    shape = prices.shape
    scen = option_greeks(prices.ravel(), np.repeat(K, grid.size), np.repeat(T, grid.size),
                         rate, 0.0, vols.ravel(), np.repeat(call, grid.size),
                         np.repeat(b76, grid.size))
    out[:, FIRST_SCENARIO:] = scen.price.reshape(shape) - base.price[:, None]
    return out


def distinct_rows(keys: FloatArray) -> tuple[FloatArray, NDArray[np.intp]]:
    """Distinct rows of `keys` in lexicographic order, and each input row's index into them.

    The order depends only on the values, never on the order rows were added, so sums
    over the table come out bit-identical after a restart.
    """
    if keys.shape[0] == 0:
        return keys, np.zeros(0, dtype=np.intp)
    # np.lexsort sorts by the last key first: reverse the columns for lexicographic order
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    starts = np.empty(len(ordered), dtype=bool)
    starts[0] = True
    starts[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    inverse = np.empty(len(ordered), dtype=np.intp)
    inverse[order] = np.cumsum(starts) - 1
    return ordered[starts], inverse
