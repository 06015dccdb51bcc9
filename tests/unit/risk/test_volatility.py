"""Realized volatility from irregularly spaced trusted prices."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.risk.volatility import YEAR_MS, append_return, log_return, realized_vol


def test_equal_steps_give_the_textbook_estimate() -> None:
    returns = [0.01, -0.02, 0.015, -0.005]
    step_ms = 60_000
    expected = math.sqrt(sum(r * r for r in returns) / len(returns) * YEAR_MS / step_ms)
    assert realized_vol(returns, [step_ms] * 4, window=4) == pytest.approx(expected, rel=1e-12)


def test_only_the_last_window_returns_count() -> None:
    returns = [0.5, 0.01, 0.01]
    assert realized_vol(returns, [1000] * 3, window=2) == pytest.approx(
        realized_vol([0.01, 0.01], [1000] * 2, window=2))


def test_a_gap_is_measured_over_its_whole_length() -> None:
    calm = realized_vol([0.01, 0.01], [1000, 1000], window=2)
    gapped = realized_vol([0.01, 0.01], [1000, 9000], window=2)
    assert calm is not None and gapped is not None
    assert gapped == pytest.approx(calm / math.sqrt(5.0))


def test_too_few_observations_or_no_elapsed_time_give_none() -> None:
    assert realized_vol([0.01], [1000], window=30, min_observations=2) is None
    assert realized_vol([0.01, 0.02], [0, 0], window=30) is None
    with pytest.raises(ValueError):
        realized_vol([0.01], [1000], window=0)


def test_window_keeps_its_capacity() -> None:
    r, dt = [], []
    for i in range(10):
        r, dt = append_return(r, dt, float(i), 1000 + i, capacity=4)
    assert r == [6.0, 7.0, 8.0, 9.0]
    assert dt == [1006, 1007, 1008, 1009]


@given(st.lists(st.floats(-0.2, 0.2), min_size=2, max_size=40),
       st.floats(0.1, 10.0))
def test_scaling_returns_scales_the_estimate(returns: list[float], factor: float) -> None:
    intervals = [1000] * len(returns)
    base = realized_vol(returns, intervals, window=len(returns))
    scaled = realized_vol([factor * r for r in returns], intervals, window=len(returns))
    assert base is not None and scaled is not None
    assert scaled == pytest.approx(factor * base, rel=1e-9, abs=1e-12)


def test_log_return() -> None:
    assert log_return(100.0, 110.0) == pytest.approx(math.log(1.1))
