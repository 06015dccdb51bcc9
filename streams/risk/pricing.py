"""Black-Scholes-Merton and Black-76 prices and Greeks, vectorized over numpy arrays.

Conventions (raw partial derivatives):
- delta = dV/dS (BSM) or dV/dF (Black-76); gamma = d2V/dS2 (or d2V/dF2);
- vega = dV/dsigma per 1.00 of volatility;
- theta = dV/dt per year of calendar time (t moves toward expiry, so theta = -dV/dT);
- rho = dV/dr per 1.00 of rate (Black-76 holds the forward fixed, so rho = -T V).

Both models are one formula on the forward F (BSM: F = S exp((r-q)T)):
V = df * w * (F N(w d1) - K N(w d2)), df = exp(-rT), w = +1 call / -1 put.

Limits are defined instead of NaN: at or past expiry (T <= 0) or with zero volatility
(sigma * sqrt(T) <= 1e-12) the option is worth its discounted intrinsic value on the forward;
delta is a step (w * exp(-qT), with half of it exactly at the money, the sigma -> 0 limit),
gamma is 0, vega is 0 except exactly at the money with T > 0 (where the one-sided derivative
df F sqrt(T) / sqrt(2 pi) exists), and theta keeps only its carry terms. Inputs that have no
meaning (non-positive S/F or K, negative sigma, NaN or infinity anywhere) raise
`InvalidOptionInput` naming the first bad row, as do finite inputs whose results overflow
double precision: no NaN or infinity ever leaves this module.

Speed: the arrays are processed in cache-sized chunks with in-place numpy operations, so a
call costs two normal CDFs, three exponentials, one log and one square root per option.
Results do not depend on the chunking (every operation is elementwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from streams.errors import DomainError

_INV_SQRT_2PI = 0.3989422804014327
# below this total volatility (sigma * sqrt(T)) the lognormal density is numerically a step
_MIN_TOTAL_VOL = 1e-12
# options per chunk: long enough to amortize the per-call overhead of numpy,
# short enough for the work arrays to stay in cache
_CHUNK = 32768

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
# a flattened input: a 1-D array of the broadcast size, or one number shared by every row
_Column = Any


class InvalidOptionInput(DomainError):  # noqa: N818 (public name, kept for callers)
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


def bsm(S: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
        sigma: ArrayLike, is_call: ArrayLike) -> Greeks:
    """Black-Scholes-Merton with continuous carry/dividend yield q, for calls and puts."""
    return _evaluate(S, K, T, r, q, sigma, is_call, is_black76=False)


def black76(F: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, sigma: ArrayLike,
            is_call: ArrayLike) -> Greeks:
    """Black-76 for options on futures/perps: the forward F is the underlying."""
    return _evaluate(F, K, T, r, 0.0, sigma, is_call, is_black76=True)


def option_greeks(underlying: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike,
                  q: ArrayLike, sigma: ArrayLike, is_call: ArrayLike,
                  is_black76: ArrayLike) -> Greeks:
    """Mixed BSM / Black-76 book in one pass; rows with `is_black76` treat `underlying` as F.

    `q` is ignored on Black-76 rows. Every argument broadcasts against the others.
    """
    return _evaluate(underlying, K, T, r, q, sigma, is_call, is_black76)


def invalid_option_rows(underlying: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike,
                        q: ArrayLike, sigma: ArrayLike) -> BoolArray:
    """Boolean mask (broadcast shape) of rows that `option_greeks` would refuse as input."""
    U, K_, T_, r_, q_, s_ = (np.asarray(x, dtype=np.float64) for x in
                             (underlying, K, T, r, q, sigma))
    with np.errstate(invalid="ignore"):
        valid = (np.isfinite(U) & np.isfinite(K_) & np.isfinite(T_) & np.isfinite(r_)
                 & np.isfinite(q_) & np.isfinite(s_) & (U > 0) & (K_ > 0) & (s_ >= 0))
    shape = np.broadcast_shapes(U.shape, K_.shape, T_.shape, r_.shape, q_.shape, s_.shape)
    return np.broadcast_to(~valid, shape)


def _evaluate(underlying: ArrayLike, K: ArrayLike, T: ArrayLike, r: ArrayLike, q: ArrayLike,
              sigma: ArrayLike, is_call: ArrayLike, is_black76: ArrayLike) -> Greeks:
    floats = [np.asarray(x, dtype=np.float64) for x in (underlying, K, T, r, q, sigma)]
    flags = [np.asarray(is_call, dtype=bool), np.asarray(is_black76, dtype=bool)]
    shape = np.broadcast_shapes(*(a.shape for a in (*floats, *flags)))
    size = int(np.prod(shape))
    columns = [_flatten(a, shape) for a in (*floats, *flags)]
    out = np.empty((6, size), dtype=np.float64)
    with np.errstate(all="ignore"):
        for start in range(0, size, _CHUNK):
            stop = min(start + _CHUNK, size)
            U, K_, T_, r_, q_, sigma_, call, b76 = (c if np.ndim(c) == 0 else c[start:stop]
                                                    for c in columns)
            if not _chunk_inputs_valid(U, K_, T_, r_, q_, sigma_):
                _raise_invalid_input(*floats)
            _price_chunk(U, K_, T_, r_, q_, sigma_, call, b76, out[:, start:stop])
            if not _all_finite(out[:, start:stop]):
                _raise_overflow(out, start, stop)
    price, delta, gamma, vega, theta, rho = (row.reshape(shape) for row in out)
    return Greeks(price=price, delta=delta, gamma=gamma, vega=vega, theta=theta, rho=rho)


def _flatten(a: NDArray[Any], shape: tuple[int, ...]) -> _Column:
    """One number if `a` is the same for every row, else a 1-D array of the broadcast size."""
    if a.size == 1:
        return a.reshape(()).item()
    return np.broadcast_to(a, shape).reshape(-1)


def _chunk_inputs_valid(U: _Column, K: _Column, T: _Column, r: _Column, q: _Column,
                        sigma: _Column) -> bool:
    # min/max propagate NaN, so these reductions also catch NaN and both infinities
    return bool(np.min(U) > 0 and np.max(U) < np.inf and np.min(K) > 0 and np.max(K) < np.inf
                and np.min(sigma) >= 0 and np.max(sigma) < np.inf
                and np.isfinite(np.min(T)) and np.isfinite(np.max(T))
                and np.isfinite(np.min(r)) and np.isfinite(np.max(r))
                and np.isfinite(np.min(q)) and np.isfinite(np.max(q)))


def _raise_invalid_input(*inputs: FloatArray) -> None:
    bad = np.flatnonzero(invalid_option_rows(*inputs))
    raise InvalidOptionInput(
        f"{bad.size} input(s) outside the model domain (S/F > 0, K > 0, sigma >= 0, all finite),"
        f" first at index {int(bad[0])}"
    )


def _all_finite(block: FloatArray) -> bool:
    # one sum per Greek: any NaN or infinity makes it non-finite; a finite block whose sum
    # overflows is rare and re-checked element by element
    if np.isfinite(block.sum(axis=1)).all():
        return True
    return bool(np.isfinite(block).all())


def _raise_overflow(out: FloatArray, start: int, stop: int) -> None:
    bad = start + int(np.flatnonzero(~np.isfinite(out[:, start:stop]).all(axis=0))[0])
    raise InvalidOptionInput(f"inputs overflow double precision (non-finite result) at index {bad}")


def _price_chunk(U: _Column, K: _Column, T: _Column, r: _Column, q: _Column, sigma: _Column,
                 is_call: _Column, is_black76: _Column, out: FloatArray) -> None:
    """Fill `out` (6 x n: price, delta, gamma, vega, theta, rho) for one chunk of options."""
    price, delta, gamma, vega, theta, rho = out
    T = np.maximum(T, 0.0, out=np.empty(price.shape))  # a full-length array from here on
    sqrt_t = np.sqrt(T)
    vol = sigma * sqrt_t
    df = np.multiply(r, T)
    df *= -1.0
    np.exp(df, out=df)
    q_spot = _spot_yield(r, q, is_black76)
    b = np.subtract(r, q_spot)  # cost of carry of the spot, 0 on Black-76 rows
    if not np.any(b):
        forward, spot_df = U, df
    elif _is_zero(q_spot):
        forward, spot_df = U / df, 1.0
    else:
        spot_df = np.multiply(q_spot, T)
        spot_df *= -1.0
        np.exp(spot_df, out=spot_df)  # exp(-qT): the discount applied to the spot
        forward = U * spot_df
        forward /= df
        if np.ndim(is_black76) != 0:  # F exactly, so mixed books match black76() bit for bit
            np.copyto(forward, U, where=is_black76)
    w = 2.0 * is_call - 1.0  # +1 call, -1 put

    d1 = np.divide(forward, K, out=np.empty(price.shape))
    np.log(d1, out=d1)
    d1 /= vol
    d1 += 0.5 * vol
    pdf = d1 * d1
    pdf *= -0.5
    np.exp(pdf, out=pdf)
    pdf *= _INV_SQRT_2PI
    nd2 = d1 - vol
    nd2 *= w
    ndtr(nd2, out=nd2)
    nd1 = d1 * w
    ndtr(nd1, out=nd1)

    np.multiply(spot_df, nd1, out=delta)
    delta *= w
    k_leg = np.multiply(df, K)  # df * w * K * N(w d2), the strike leg of the price
    k_leg *= nd2
    k_leg *= w
    np.multiply(U, delta, out=price)
    price -= k_leg
    np.maximum(price, 0.0, out=price)  # rounding of two nearly equal legs, never below zero
    np.multiply(spot_df, U, out=vega)
    vega *= pdf
    np.divide(vega, vol, out=gamma)
    gamma /= U
    gamma /= U  # gamma = exp(-qT) pdf / (S vol)
    vega *= sqrt_t
    # theta = r V - (time decay) - b S delta, time decay = vega sigma / (2T)
    np.multiply(r, price, out=theta)
    time_decay = vega * sigma
    time_decay /= 2.0 * T
    theta -= time_decay
    theta -= np.multiply(b, U) * delta
    np.multiply(T, k_leg, out=rho)
    if np.ndim(is_black76) != 0 or is_black76:
        np.copyto(rho, -np.multiply(T, price), where=is_black76)

    dead = vol <= _MIN_TOTAL_VOL
    if np.any(dead):
        rows = np.flatnonzero(np.broadcast_to(dead, price.shape))
        _apply_limits(rows, out, U=U, K=K, T=T, r=r, b=b, df=df, spot_df=spot_df, w=w,
                      forward=forward, sqrt_t=sqrt_t, is_black76=is_black76)


def _spot_yield(r: _Column, q: _Column, is_black76: _Column) -> _Column:
    """Yield q of the spot; r on Black-76 rows, whose underlying F grows at no carry."""
    if np.ndim(is_black76) == 0:
        return r if is_black76 else q
    return np.where(is_black76, r, q)


def _is_zero(column: _Column) -> bool:
    return not np.any(column)


def _apply_limits(rows: NDArray[np.intp], out: FloatArray, **columns: _Column) -> None:
    """Overwrite rows with no time value (T <= 0 or sigma = 0) by their defined limits."""
    price, delta, gamma, vega, theta, rho = out
    c = {name: (v if np.ndim(v) == 0 else np.broadcast_to(v, price.shape)[rows])
         for name, v in columns.items()}
    w, spot_df, U = c["w"], c["spot_df"], c["U"]
    log_fk = np.log(c["forward"] / c["K"])
    at_money = log_fk == 0.0
    step = np.where(at_money, 0.5, (w * log_fk > 0).astype(np.float64))
    moneyness = w * (c["forward"] - c["K"])
    price[rows] = c["df"] * np.maximum(moneyness, 0.0)
    delta[rows] = spot_df * w * step
    gamma[rows] = 0.0
    vega[rows] = np.where(at_money, spot_df * U * c["sqrt_t"] * _INV_SQRT_2PI, 0.0)
    # expired options (T <= 0) no longer decay; with zero volatility only carry is left
    theta[rows] = np.where(c["T"] > 0, c["r"] * price[rows] - c["b"] * U * delta[rows], 0.0)
    k_leg = c["df"] * w * c["K"] * step
    rho[rows] = np.where(c["is_black76"], -c["T"] * price[rows], c["T"] * k_leg)
