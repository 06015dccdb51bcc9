"""Black-Scholes-Merton and Black-76 prices and Greeks, vectorized over numpy arrays.

Conventions (raw partial derivatives):
- delta = dV/dS (BSM) or dV/dF (Black-76); gamma = d2V/dS2 (or d2V/dF2);
- vega = dV/dsigma per 1.00 of volatility;
- theta = dV/dt per year of calendar time (t moves toward expiry, so theta = -dV/dT);
- rho = dV/dr per 1.00 of rate (Black-76 holds the forward fixed, so rho = -T V).

Limits are defined instead of NaN: at or past expiry (T <= 0) or with zero volatility the
option is worth its discounted intrinsic value on the forward, and Greeks are those of that
limit (delta a step, gamma and vega zero). Inputs that have no meaning (non-positive spot or
strike, negative volatility, NaN or infinity) raise `InvalidOptionInput` naming the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from streams.errors import DomainError

_INV_SQRT_2PI = 0.3989422804014327
# below this total volatility (sigma * sqrt(T)) the lognormal density is numerically a step
_MIN_TOTAL_VOL = 1e-12

FloatArray = NDArray[np.float64]


class InvalidOptionInput(DomainError):
    """Inputs outside the model's domain (non-positive S/F or K, negative sigma, NaN)."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid_option_input", detail)


@dataclass(frozen=True, slots=True)
class Greeks:
    """Price and first/second-order sensitivities, one entry per option."""

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    rho: FloatArray


def _validate(underlying: FloatArray, K: FloatArray, T: FloatArray, r: FloatArray,
              q: FloatArray, sigma: FloatArray) -> None:
    finite = (np.isfinite(underlying) & np.isfinite(K) & np.isfinite(T) & np.isfinite(r)
              & np.isfinite(q) & np.isfinite(sigma))
    valid = finite & (underlying > 0) & (K > 0) & (sigma >= 0)
    if not valid.all():
        bad = np.flatnonzero(~np.broadcast_to(valid, np.broadcast(underlying, K, T, sigma).shape))
        raise InvalidOptionInput(
            f"{bad.size} input(s) outside the model domain (S/F > 0, K > 0, sigma >= 0, finite),"
            f" first at index {int(bad[0])}"
        )


def _greeks(forward: FloatArray, K: FloatArray, T: FloatArray, r: FloatArray,
            sigma: FloatArray, is_call: NDArray[np.bool_], carry_df: FloatArray,
            black76: bool | NDArray[np.bool_]) -> Greeks:
    """Core on the forward: V = df * [w F N(w d1) - w K N(w d2)], df = exp(-rT).

    `carry_df` is dF/dS (exp(-qT)·exp(rT) for BSM, 1 for Black-76), used to turn
    forward sensitivities into spot sensitivities.
    """
    Tpos = np.maximum(T, 0.0)
    sqrt_t = np.sqrt(Tpos)
    total_vol = sigma * sqrt_t
    live = total_vol > _MIN_TOTAL_VOL
    safe_vol = np.where(live, total_vol, 1.0)
    log_fk = np.log(forward / K)
    d1 = np.where(live, log_fk / safe_vol + 0.5 * safe_vol, np.where(log_fk >= 0, np.inf, -np.inf))
    d2 = d1 - np.where(live, total_vol, 0.0)
    w = np.where(is_call, 1.0, -1.0)
    df = np.exp(-r * Tpos)
    nd1 = ndtr(w * d1)
    nd2 = ndtr(w * d2)
    # at-the-money with no time value: the limit of N(d1) is 1/2 only with volatility
    pdf_d1 = np.where(live, _INV_SQRT_2PI * np.exp(-0.5 * np.where(live, d1, 0.0) ** 2), 0.0)

    undiscounted = w * (forward * nd1 - K * nd2)
    price = df * undiscounted
    fwd_delta = df * w * nd1
    fwd_gamma = np.where(live, df * pdf_d1 / (forward * safe_vol), 0.0)
    vega = df * forward * pdf_d1 * sqrt_t
    safe_sqrt_t = np.where(live, sqrt_t, 1.0)
    time_decay = np.where(live, df * forward * pdf_d1 * sigma / (2.0 * safe_sqrt_t), 0.0)

    delta = fwd_delta * carry_df
    gamma = fwd_gamma * carry_df * carry_df
    # BSM: forward = S exp((r-q)T), so dV/dT at fixed S adds the forward's carry drift.
    r_minus_q = np.log(carry_df) / np.where(Tpos > 0, Tpos, 1.0)  # 0 for Black-76
    theta = r * price - time_decay - fwd_delta * forward * r_minus_q
    rho_bsm = Tpos * df * w * K * nd2
    rho = np.where(black76, -Tpos * price, rho_bsm)
    return Greeks(price=price, delta=delta, gamma=gamma, vega=vega, theta=theta, rho=rho)


def bsm(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
        sigma: ArrayLike, is_call: ArrayLike) -> Greeks:
    """Black-Scholes-Merton with continuous carry/dividend yield q, for calls and puts."""
    S_, K_, T_, r_, q_, sig_ = (np.asarray(x, dtype=np.float64) for x in (S, K, T, r, q, sigma))
    _validate(S_, K_, T_, r_, q_, sig_)
    Tpos = np.maximum(T_, 0.0)
    carry = np.exp((r_ - q_) * Tpos)
    return _greeks(S_ * carry, K_, T_, r_, sig_, np.asarray(is_call, dtype=bool), carry, False)


def black76(F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
            is_call: ArrayLike) -> Greeks:
    """Black-76 for options on futures/perps: the forward F is the underlying."""
    F_, K_, T_, r_, sig_ = (np.asarray(x, dtype=np.float64) for x in (F, K, T, r, sigma))
    _validate(F_, K_, T_, r_, np.zeros(1), sig_)
    one = np.ones_like(F_)
    return _greeks(F_, K_, T_, r_, sig_, np.asarray(is_call, dtype=bool), one, True)


def option_greeks(underlying: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike,
                  q: ArrayLike, sigma: ArrayLike, is_call: ArrayLike,
                  is_black76: ArrayLike) -> Greeks:
    """Mixed BSM / Black-76 book in one pass; rows with `is_black76` treat `underlying` as F."""
    U, K_, T_, r_, q_, sig_ = (np.asarray(x, dtype=np.float64) for x in
                               (underlying, K, T, r, q, sigma))
    b76 = np.asarray(is_black76, dtype=bool)
    _validate(U, K_, T_, r_, q_, sig_)
    Tpos = np.maximum(T_, 0.0)
    carry = np.where(b76, 1.0, np.exp((r_ - q_) * Tpos))
    return _greeks(U * carry, K_, T_, r_, sig_, np.asarray(is_call, dtype=bool), carry, b76)
