"""Margin model: linear and portfolio-style option requirements, stress grid, adverse edge."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.risk.margin import RATIO_CAP, StressGrid, group_margin, margin_ratio
from streams.risk.pricing import bsm
from streams.risk.stress import FIRST_SCENARIO, MARK, option_unit_table

GRID = StressGrid()
RATES = {"linear_mm_rate": 0.01, "linear_im_rate": 0.02, "option_floor_rate": 0.01,
         "option_im_factor": 1.5}


def margin(spot: float, kc: float, option_pnl: np.ndarray | None = None, option_delta=0.0,
           net=0.0, gross=None, short=0.0):
    pnl = np.zeros((1, GRID.size)) if option_pnl is None else option_pnl.reshape(1, -1)
    return group_margin(spot=[spot], kc=[kc], option_pnl=pnl, option_delta=[option_delta],
                        linear_net=[net], linear_gross=[abs(net) if gross is None else gross],
                        short_options=[short], grid=GRID, **RATES)


def test_grid_has_the_mark_both_band_edges_and_three_vol_levels() -> None:
    assert GRID.size == (2 * GRID.spot_steps + 3) * 3
    assert list(GRID.level_moves[[0, -1]]) == [-0.15, 0.15]
    centre = slice(GRID.spot_steps, GRID.spot_steps + 3)
    assert list(GRID.level_moves[centre]) == [0.0, 0.0, 0.0]
    assert list(GRID.level_edges[centre]) == [-1.0, 0.0, 1.0]
    edges = GRID.edge_scenarios
    assert list(GRID.shifts[edges]) == [0.0, 0.0]
    assert list(GRID.edges[edges]) == [-1.0, 1.0]


def test_linear_margin_is_a_rate_of_notional_at_the_adverse_edge() -> None:
    risk = margin(spot=100.0, kc=2.0, net=10.0)
    assert risk.maintenance[0] == pytest.approx(0.01 * 10 * 102.0)
    assert risk.initial[0] == pytest.approx(0.02 * 10 * 102.0)
    # the whole linear position is in the stress view: -15% and the band's edge
    assert risk.stress_loss[0] == pytest.approx(10 * (0.15 * 100 + 2.0))
    assert risk.edge_loss[0] == pytest.approx(10 * 2.0)


def unit(strike: float, call: bool, spot: float = 100.0, kc: float = 0.0,
         vol: float = 0.6) -> np.ndarray:
    return option_unit_table(spot=spot, kc=[kc], strike=[strike], expiry_ms=[30 * 86_400_000],
                             vol=[vol], is_call=[call], is_black76=[False], now_ms=0, rate=0.0,
                             grid=GRID)[0]


def test_unit_table_scenarios_are_repriced_options() -> None:
    row = unit(95.0, call=False, kc=1.0)
    T = 30 / 365
    mark = bsm(100.0, 95.0, T, 0.0, 0.0, 0.6, False).price
    assert row[MARK] == pytest.approx(float(mark))
    for j in range(GRID.size):
        price = 100.0 * (1 + GRID.moves[j]) + 1.0 * GRID.edges[j]
        vol = max(0.6 + GRID.shifts[j], GRID.min_vol)
        expected = float(bsm(price, 95.0, T, 0.0, 0.0, vol, False).price) - float(mark)
        assert row[FIRST_SCENARIO + j] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_short_put_margin_is_its_worst_grid_loss() -> None:
    row = unit(95.0, call=False)
    q = -10.0
    pnl = q * row[FIRST_SCENARIO:]
    risk = margin(100.0, 0.0, pnl, option_delta=q * -0.3, short=10.0)
    assert risk.maintenance[0] == pytest.approx(-pnl.min())
    assert risk.initial[0] == pytest.approx(1.5 * -pnl.min())


def test_a_delta_hedge_is_margined_with_the_options_and_the_rest_pays_the_linear_rate() -> None:
    row = unit(100.0, call=False)
    q = -10.0
    pnl = q * row[FIRST_SCENARIO:]
    option_delta = q * -0.47
    unhedged = margin(100.0, 0.0, pnl, option_delta=option_delta, short=10.0)
    hedged = margin(100.0, 0.0, pnl, option_delta=option_delta, net=-4.7, short=10.0)
    overhedged = margin(100.0, 0.0, pnl, option_delta=option_delta, net=-20.0, short=10.0)
    linear_only = 0.01 * 4.7 * 100.0
    assert hedged.maintenance[0] < unhedged.maintenance[0]
    assert hedged.maintenance[0] > linear_only
    # beyond the options' delta, the extra short is directional: linear rate only
    extra = 0.01 * (20.0 - 4.7) * 100.0
    assert overhedged.maintenance[0] == pytest.approx(hedged.maintenance[0] + extra)


def test_a_long_perp_next_to_unrelated_options_pays_only_the_linear_rate() -> None:
    risk = margin(100.0, 0.0, net=5.0)
    assert risk.maintenance[0] == pytest.approx(5.0)


def test_short_option_floor() -> None:
    tiny = np.full(GRID.size, -0.01)
    risk = margin(100.0, 0.0, tiny, short=10.0)
    assert risk.maintenance[0] == pytest.approx(0.01 * 10 * 100.0)


def test_margin_ratio_without_requirement_is_capped() -> None:
    assert list(margin_ratio([5.0, 5.0], [0.0, 2.0])) == [RATIO_CAP, 2.5]


@settings(max_examples=50, deadline=None)
@given(q=st.floats(-50, 50).filter(lambda x: abs(x) > 1e-3), net=st.floats(-50, 50),
       factor=st.floats(0.1, 5.0), strike=st.floats(70, 130), call=st.booleans())
def test_requirements_scale_with_the_book(q: float, net: float, factor: float, strike: float,
                                          call: bool) -> None:
    row = unit(strike, call)
    def risk(scale: float):
        return margin(100.0, 0.5, scale * q * row[FIRST_SCENARIO:],
                      option_delta=scale * q * 0.5, net=scale * net,
                      short=scale * max(-q, 0.0))
    base, scaled = risk(1.0), risk(factor)
    for name in ("maintenance", "initial", "stress_loss", "edge_loss"):
        assert getattr(scaled, name)[0] == pytest.approx(factor * getattr(base, name)[0],
                                                         rel=1e-9, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(net=st.floats(-50, 50), q=st.floats(-20, 0), kc1=st.floats(0, 5), extra=st.floats(0, 5))
def test_a_wider_band_never_lowers_a_requirement(net: float, q: float, kc1: float,
                                                 extra: float) -> None:
    """For books without long options (value concave in the price), pushing the grid out
    can only find worse scenarios. (A long-gamma book gains from a wider move; its
    vol-only scenarios at the mark stay in the grid whatever the band.)"""
    low = margin(100.0, kc1, q * unit(100.0, True, kc=kc1)[FIRST_SCENARIO:], 0.5 * q, net,
                 short=max(-q, 0))
    high_kc = kc1 + extra
    high = margin(100.0, high_kc, q * unit(100.0, True, kc=high_kc)[FIRST_SCENARIO:], 0.5 * q,
                  net, short=max(-q, 0))
    assert high.stress_loss[0] >= low.stress_loss[0] - 1e-9
    assert high.edge_loss[0] >= low.edge_loss[0] - 1e-9
    assert high.maintenance[0] >= low.maintenance[0] - 1e-9


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 1.0]), st.sampled_from([90.0, 100.0]),
                          st.sampled_from([0.5, 0.6])), min_size=1, max_size=30))
def test_distinct_rows_are_sorted_and_indexed(rows: list[tuple[float, float, float]]) -> None:
    from streams.risk.stress import distinct_rows

    keys = np.array(rows)
    uniq, inverse = distinct_rows(keys)
    expected, expected_inverse = np.unique(keys, axis=0, return_inverse=True)
    assert np.array_equal(uniq, expected)
    assert np.array_equal(inverse, expected_inverse.reshape(-1))
    assert np.array_equal(uniq[inverse], keys)
