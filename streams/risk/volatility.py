"""Realized volatility from the trusted price stream.

Consensus prices arrive at irregular event times, so returns are not equally spaced. The
estimator divides the sum of squared log returns by the event time they span, which is the
maximum-likelihood variance rate of a driftless Brownian log price observed at arbitrary
times, and annualizes it with a 365-day year (crypto trades every day):

    sigma^2 = sum(r_i^2) / sum(dt_i),   dt in years.

A gap in the stream (a halted feed) then lowers no estimate: the return across the gap is
measured over the whole gap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

YEAR_MS = 365.0 * 24 * 3600 * 1000


def log_return(previous: float, current: float) -> float:
    """Log return between two positive prices."""
    return math.log(current / previous)


def realized_vol(returns: Sequence[float], intervals_ms: Sequence[int], window: int,
                 min_observations: int = 2) -> float | None:
    """Annualized realized volatility over the last `window` returns, or None if too few.

    `returns` and `intervals_ms` are aligned, oldest first. Returns over a zero interval
    (two prices at the same event time) count their variance but add no time; if the
    window spans no time at all the estimate is None.
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    n = min(window, len(returns), len(intervals_ms))
    if n < max(min_observations, 1):
        return None
    tail_r = returns[len(returns) - n:]
    tail_dt = intervals_ms[len(intervals_ms) - n:]
    span_years = math.fsum(tail_dt) / YEAR_MS
    if span_years <= 0.0:
        return None
    return math.sqrt(math.fsum(r * r for r in tail_r) / span_years)


def append_return(returns: list[float], intervals_ms: list[int], r: float, dt_ms: int,
                  capacity: int) -> tuple[list[float], list[int]]:
    """The window after appending one return, keeping the newest `capacity` entries."""
    new_r = [*returns, r][-capacity:]
    new_dt = [*intervals_ms, dt_ms][-capacity:]
    return new_r, new_dt
