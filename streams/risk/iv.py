"""Implied volatility of European options (BSM and Black-76), vectorized over numpy arrays.

Method. Every option is first reduced to Jäckel's normalized out-of-the-money Black call:
with forward F, discount df = exp(-rT), x = ln(F/K) and total volatility s = sigma sqrt(T),
the time value of any call or put divided by df sqrt(FK) is
b(x, s) = exp(x/2) N(x/s + s/2) - exp(-x/2) N(x/s - s/2) with x = -|x| <= 0
(put-call parity turns an in-the-money option into the out-of-the-money one with the same
time value). b rises from 0 to exp(x/2) as s goes from 0 to infinity, so s is the root of
one monotone function inside a bracket computed in closed form from two bounds of b:
b(s) <= exp(x/2) N(d1) gives a lower end, exp(x/2) - b(s) <= 2 cosh(x/2) N(-d1) an upper end.

The root is found by Chandrupatla's bracketing method (scipy.optimize.elementwise.find_root,
guaranteed to converge inside a valid bracket) on a log-transformed objective that keeps full
relative precision at both ends: ln b(s) - ln beta when the target beta is at most half its
upper bound, ln(b_max - beta) - ln(b_max - b(s)) above. ln b is evaluated without underflow
through the scaled complementary error function erfcx in the wings (deep out of the money or
very short expiries), and b_max - b(s) through log_ndtr, so prices down to 1e-300 still have
a volatility.

Accuracy. The root is resolved to 4 machine epsilons of s (relative). Where the price
carries information about sigma, the solved sigma reprices the input to ~1e-13 relative in
the tests; the sigma error is then bounded by that price error divided by vega. Deep in the
money, the time value is what is left after subtracting the intrinsic value, so it keeps only
the digits the price has beyond the intrinsic value: this is a limit of the input, not of the
method.

Outcomes are explicit per row (`IVStatus`): a price at the intrinsic value has sigma 0; a price
below it, at or above the no-arbitrage upper bound (df F for a call, df K for a put), an option
at or past expiry, or non-finite / non-positive inputs have no implied volatility.
`solve_implied_vol` reports them per row; `implied_vol` raises on the first one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize.elementwise import find_root
from scipy.special import erf, erfcx, log_ndtr, ndtr, ndtri

from streams.errors import DomainError

FloatArray = NDArray[np.float64]

_SQRT_2PI = 2.5066282746310002
_SQRT_HALF = 0.7071067811865476
_LN_HALF = -0.6931471805599453
_EPS = float(np.finfo(np.float64).eps)
_MAX_ITERATIONS = 100
_MAX_EXPANSIONS = 64
# a price within this many epsilons (of its forward and strike legs) of the intrinsic value
# is the intrinsic value: sigma 0
_INTRINSIC_ULPS = 8.0


class IVStatus(IntEnum):
    """Outcome of an implied-volatility solve, one per row."""

    OK = 0
    INVALID_INPUT = 1
    EXPIRED = 2
    BELOW_INTRINSIC = 3
    ABOVE_UPPER_BOUND = 4
    NOT_CONVERGED = 5


IV_STATUS_MESSAGES: dict[IVStatus, str] = {
    IVStatus.OK: "ok",
    IVStatus.INVALID_INPUT: "invalid input: price must be >= 0, S/F and K > 0, all finite",
    IVStatus.EXPIRED: "no implied volatility at or past expiry (T <= 0)",
    IVStatus.BELOW_INTRINSIC: "price below the intrinsic value (no volatility reproduces it)",
    IVStatus.ABOVE_UPPER_BOUND: (
        "price at or above the upper bound (call: df*F, put: df*K; no finite volatility)"
    ),
    IVStatus.NOT_CONVERGED: "the root finder did not converge",
}


class ImpliedVolError(DomainError):
    """A row has no implied volatility; `reason` is the lower-case `IVStatus` name."""

    def __init__(self, status: IVStatus, detail: str) -> None:
        super().__init__(status.name.lower(), detail)
        self.status = status


@dataclass(frozen=True, slots=True)
class ImpliedVolResult:
    """Implied volatilities with a status per row; sigma is NaN wherever status is not OK."""

    sigma: FloatArray
    status: NDArray[np.int8]

    @property
    def ok(self) -> NDArray[np.bool_]:
        """Rows that have an implied volatility."""
        return np.asarray(self.status == IVStatus.OK, dtype=np.bool_)


def solve_implied_vol(price: ArrayLike, underlying: ArrayLike, K: ArrayLike, T: ArrayLike,
                      r: ArrayLike, q: ArrayLike, is_call: ArrayLike,
                      is_black76: ArrayLike = False) -> ImpliedVolResult:
    """Implied volatility of each row, with its `IVStatus`; never raises on bad rows.

    Arguments mirror `streams.risk.pricing.option_greeks` with `price` in place of sigma:
    `underlying` is S (BSM, carry r - q) or F on rows with `is_black76` (q ignored there).
    """
    cols = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                 for a in (price, underlying, K, T, r, q)),
                               np.asarray(is_call, dtype=bool), np.asarray(is_black76, dtype=bool))
    shape = cols[0].shape
    P, U, K_, T_, r_, q_ = (np.ravel(c) for c in cols[:6])
    call, b76 = np.ravel(cols[6]), np.ravel(cols[7])
    sigma = np.full(P.shape, np.nan)
    status = np.full(P.shape, IVStatus.OK, dtype=np.int8)

    with np.errstate(all="ignore"):
        valid = (np.isfinite(P) & np.isfinite(U) & np.isfinite(K_) & np.isfinite(T_)
                 & np.isfinite(r_) & np.isfinite(q_) & (P >= 0) & (U > 0) & (K_ > 0))
        status[~valid] = IVStatus.INVALID_INPUT
        status[valid & (T_ <= 0)] = IVStatus.EXPIRED
        rows = np.flatnonzero(status == IVStatus.OK)
        T_r = T_[rows]
        forward = np.where(b76[rows], U[rows], U[rows] * np.exp((r_[rows] - q_[rows]) * T_r))
        x, beta, intrinsic = _normalize(P[rows], forward, K_[rows], np.exp(-r_[rows] * T_r))
        row_status, s = _solve_time_value(beta, x, intrinsic, np.where(call[rows], 1.0, -1.0))
        status[rows] = row_status
        sigma[rows] = np.where(row_status == IVStatus.OK, s / np.sqrt(T_r), np.nan)
    return ImpliedVolResult(sigma=sigma.reshape(shape), status=status.reshape(shape))


def implied_vol(price: ArrayLike, underlying: ArrayLike, K: ArrayLike, T: ArrayLike,
                r: ArrayLike, q: ArrayLike, is_call: ArrayLike,
                is_black76: ArrayLike = False) -> FloatArray:
    """Implied volatilities; raises `ImpliedVolError` naming the first row that has none."""
    result = solve_implied_vol(price, underlying, K, T, r, q, is_call, is_black76)
    failed = np.flatnonzero(result.status.reshape(-1) != IVStatus.OK)
    if failed.size:
        first = IVStatus(int(result.status.reshape(-1)[failed[0]]))
        raise ImpliedVolError(first, f"{failed.size} row(s) without an implied volatility, first"
                                     f" at index {int(failed[0])}: {IV_STATUS_MESSAGES[first]}")
    return result.sigma


def implied_vol_scalar(price: float, underlying: float, K: float, T: float, r: float,
                       q: float = 0.0, is_call: bool = True, is_black76: bool = False) -> float:
    """Scalar convenience wrapper of `implied_vol`."""
    return float(implied_vol(price, underlying, K, T, r, q, is_call, is_black76))


def _normalize(price: FloatArray, forward: FloatArray, K: FloatArray,
               df: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """x = ln(F/K), beta = price / (df sqrt(FK)), normalized intrinsic |F - K| / sqrt(FK)."""
    diff = forward - K
    # log1p of the exact difference keeps x accurate near the money
    x = np.where(np.abs(diff) < 0.5 * K, np.log1p(diff / K), np.log(forward / K))
    sqrt_fk = np.sqrt(forward) * np.sqrt(K)
    return x, price / (df * sqrt_fk), np.abs(diff) / sqrt_fk


def _solve_time_value(beta: FloatArray, x: FloatArray, intrinsic: FloatArray,
                      theta: FloatArray) -> tuple[NDArray[np.int8], FloatArray]:
    """Status and total volatility s for normalized prices beta of calls (theta=1) / puts."""
    status = np.full(beta.shape, IVStatus.OK, dtype=np.int8)
    s = np.zeros(beta.shape)
    in_the_money = theta * x > 0
    time_value = beta - np.where(in_the_money, intrinsic, 0.0)
    x_otm = -np.abs(x)
    beta_max = np.exp(0.5 * x_otm)
    # a price is the difference of a forward leg and a strike leg (normalized: exp(x/2) and
    # exp(-x/2)), so an option at its intrinsic value may land a few ulps of them below it
    tolerance = np.where(in_the_money, _INTRINSIC_ULPS * _EPS * 2.0 * np.cosh(0.5 * x), 0.0)
    finite = np.isfinite(beta) & np.isfinite(x) & np.isfinite(time_value)
    status[~finite] = IVStatus.INVALID_INPUT
    status[finite & (time_value < -tolerance)] = IVStatus.BELOW_INTRINSIC
    # at the upper bound within the same rounding there is no finite volatility either
    status[finite & (time_value >= beta_max * (1.0 - _INTRINSIC_ULPS * _EPS) - tolerance)] = (
        IVStatus.ABOVE_UPPER_BOUND)
    # a time value lost in the rounding of the intrinsic value has sigma 0
    solve = np.flatnonzero((status == IVStatus.OK) & (time_value > tolerance))
    solved, converged = _solve_otm_call(time_value[solve], x_otm[solve])
    s[solve] = solved
    status[solve[~converged]] = IVStatus.NOT_CONVERGED
    return status, s


def _solve_otm_call(beta: FloatArray, x: FloatArray) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Root s > 0 of b(x, s) = beta for x <= 0 and 0 < beta < exp(x/2)."""
    s = np.zeros(beta.shape)
    converged = np.zeros(beta.shape, dtype=bool)
    beta_max = np.exp(0.5 * x)
    lower, upper = _bracket(beta, x, beta_max)
    high = beta > 0.5 * beta_max
    # (rows, objective, its target, whether the objective's variable is ln s rather than s)
    regions: list[tuple[NDArray[np.bool_], Callable[..., Any], FloatArray, bool]] = [
        (~high, _lower_objective, np.log(beta), True),
        (high, _upper_objective, np.log(beta_max - beta), False),
    ]
    for mask, objective, log_target, solve_in_log in regions:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            continue
        lo, hi = lower[idx], upper[idx]
        if solve_in_log:
            lo, hi = np.log(lo), np.log(hi)
        result = find_root(objective, (lo, hi), args=(x[idx], log_target[idx]),
                           maxiter=_MAX_ITERATIONS)
        s[idx] = np.exp(result.x) if solve_in_log else result.x
        converged[idx] = result.success
    return s, converged


def _bracket(beta: FloatArray, x: FloatArray,
             beta_max: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Bracket [lower, upper] of the root from closed-form bounds, widened by a factor 2.

    Lower: b(s) <= exp(x/2) N(d1) and b(s) <= s / sqrt(2 pi). Upper: exp(x/2) - b(s) <=
    2 cosh(x/2) N(-d1). Each bound is solved for s (d1 = x/s + s/2 is a quadratic in s); the
    factor 2 absorbs rounding where a bound is tight. The upper bound degenerates for small
    prices near the money, so it is then pushed up by factors of 4 until b(upper) >= beta.
    """
    qn = ndtri(beta / beta_max)
    root = np.sqrt(qn * qn - 2.0 * x)
    # the two forms of q + sqrt(q^2 - 2x), each free of cancellation on its side
    lower = np.where(qn < 0, -2.0 * x / (root - qn), qn + root)
    lower = np.maximum(lower, beta * _SQRT_2PI)
    pn = ndtri((beta_max - beta) / (2.0 * np.cosh(0.5 * x)))
    upper = np.maximum(2.0 * (np.sqrt(pn * pn - 2.0 * x) - pn), 4.0 * lower)
    log_beta = np.log(beta)
    pending = np.arange(beta.size)
    for _ in range(_MAX_EXPANSIONS):
        pending = pending[_log_otm_call(x[pending], upper[pending]) < log_beta[pending]]
        if pending.size == 0:
            break
        upper[pending] *= 4.0
    return 0.5 * lower, upper


def _lower_objective(log_s: FloatArray, x: FloatArray, log_beta: FloatArray) -> FloatArray:
    # 1/ln b against ln s is close to linear in the wings, where ln b ~ -x^2 / (2 s^2)
    return 1.0 / log_beta - 1.0 / _log_otm_call(x, np.exp(log_s))


def _upper_objective(s: FloatArray, x: FloatArray, log_gap: FloatArray) -> FloatArray:
    d1 = x / s + 0.5 * s
    # exp(x/2) - b(s) = exp(x/2) N(-d1) + exp(-x/2) N(d2), a sum of positive terms
    log_gap_s = np.logaddexp(0.5 * x + log_ndtr(-d1), -0.5 * x + log_ndtr(d1 - s))
    return log_gap - log_gap_s


def _log_otm_call(x: FloatArray, s: FloatArray) -> FloatArray:
    """ln b(x, s) for x <= 0, s > 0, to near full relative precision, without underflow."""
    x, s = np.broadcast_arrays(x, s)
    d1 = x / s + 0.5 * s
    out = np.empty(d1.shape)
    wing = d1 < 0
    out[wing] = _log_wing(x[wing], s[wing], d1[wing])
    body = ~wing
    out[body] = _log_body(x[body], s[body], d1[body])
    return out


def _log_wing(x: FloatArray, s: FloatArray, d1: FloatArray) -> FloatArray:
    """d1 < 0: b = exp(-x^2/(2 s^2) - s^2/8) (erfcx(-d1/sqrt2) - erfcx(-d2/sqrt2)) / 2."""
    scaled = erfcx(-_SQRT_HALF * d1) - erfcx(-_SQRT_HALF * (d1 - s))
    return -0.5 * (x / s) ** 2 - 0.125 * s * s + np.log(scaled) + _LN_HALF


def _log_body(x: FloatArray, s: FloatArray, d1: FloatArray) -> FloatArray:
    """d1 >= 0: two exact forms of b; take the one whose terms cancel least."""
    up, down = np.exp(0.5 * x), np.exp(-0.5 * x)
    d2 = d1 - s
    forward_leg = up * ndtr(d1)
    direct = forward_leg - down * ndtr(d2)
    erf_up, erf_down = up * erf(_SQRT_HALF * d1), down * erf(_SQRT_HALF * d2)
    half_x = np.sinh(0.5 * x)
    via_erf = half_x + 0.5 * (erf_up - erf_down)
    erf_terms = np.maximum(np.abs(half_x), 0.5 * np.maximum(np.abs(erf_up), np.abs(erf_down)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.where(erf_terms < forward_leg, via_erf, direct))
