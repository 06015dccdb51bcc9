"""Margin model: initial and maintenance requirements, margin ratio and the stress view.

Everything is computed per *group* (one account's positions on one underlying) from a few
per-group sums, so the same functions serve the vectorized book (thousands of groups in one
call) and the policy's projections of one account (a handful of groups).

The model (docs/risk.md, "Margin model"):

- Equity = posted collateral + sum of q * (mark - entry_price) over all positions (every
  instrument is margined futures-style: an option's entry price is a PnL reference, not a
  cash flow). The margin ratio uses the *adverse-edge* equity: per underlying, the worse of
  the group's value at price - k*confidence and price + k*confidence (never a credit).
- Linear positions (spot, perp, future): MM = linear_mm_rate * |q| * (S + k*c),
  IM = linear_im_rate * |q| * (S + k*c).
- Options: portfolio style. The stress grid moves the price by -R..+R in `spot_steps`
  steps per side, pushed further out by the adverse k*confidence (plus the band's two
  edges and the mark itself), and the volatility by -y, 0, +y points. The options' loss
  is the worst grid loss of the options *together with the part of the linear position
  that hedges their delta* (the rest of the linear position is directional and already
  charged above), floored at option_floor_rate * |q| * S for short options. MM adds that
  to the linear MM; IM adds option_im_factor times it.
- Margin ratio = adverse-edge equity / MM (liquidation below 1; RATIO_CAP without MM).
- Stress view: per underlying, the worst grid loss of everything held on it (options and
  the whole linear position); the account's stress loss adds the underlyings (no
  diversification credit between assets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
# margin ratio of an account without maintenance requirement (schema default of min ratio)
RATIO_CAP = 1e308


@dataclass(frozen=True, slots=True)
class MarginParams:
    """Margin rates of one underlying."""

    linear_mm_rate: float = 0.01
    linear_im_rate: float = 0.02
    option_floor_rate: float = 0.01
    option_im_factor: float = 1.5

    def __post_init__(self) -> None:
        if not 0 < self.linear_mm_rate <= self.linear_im_rate:
            raise ValueError("need 0 < linear_mm_rate <= linear_im_rate")
        if self.option_floor_rate < 0 or self.option_im_factor < 1:
            raise ValueError("need option_floor_rate >= 0 and option_im_factor >= 1")


@dataclass(frozen=True)
class StressGrid:
    """Scenarios of the stress view: price moves x volatility shifts.

    Price levels: -R, ..., -R/steps, 0-, 0, 0+, +R/steps, ..., +R. The levels 0- and 0+ are
    the adverse edges of the oracle band (price -/+ k*confidence), 0 is the mark itself, and
    every other level is pushed outwards by k*confidence as well. Volatility levels:
    -vol_shift, 0, +vol_shift (absolute points, floored at min_vol). Scenario j = level * 3
    + volatility level.
    """

    spot_range: float = 0.15
    spot_steps: int = 3
    vol_shift: float = 0.15
    min_vol: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.spot_range < 1 or self.spot_steps < 1:
            raise ValueError("need 0 < spot_range < 1 and spot_steps >= 1")
        if self.vol_shift < 0 or self.min_vol <= 0:
            raise ValueError("need vol_shift >= 0 and min_vol > 0")

    @cached_property
    def level_moves(self) -> FloatArray:
        """Relative price move of each price level."""
        side = self.spot_range * np.arange(1, self.spot_steps + 1) / self.spot_steps
        return np.concatenate([-side[::-1], [0.0, 0.0, 0.0], side])

    @cached_property
    def level_edges(self) -> FloatArray:
        """Direction (-1/0/+1) in which each price level is pushed by k*confidence."""
        n = self.spot_steps
        return np.concatenate([-np.ones(n + 1), [0.0], np.ones(n + 1)])

    @cached_property
    def vol_shifts(self) -> FloatArray:
        """Volatility shift of each volatility level."""
        return np.array([-self.vol_shift, 0.0, self.vol_shift])

    @property
    def size(self) -> int:
        """Number of scenarios."""
        return len(self.level_moves) * len(self.vol_shifts)

    @cached_property
    def moves(self) -> FloatArray:
        """Relative price move per scenario."""
        return np.repeat(self.level_moves, len(self.vol_shifts))

    @cached_property
    def edges(self) -> FloatArray:
        """Confidence push direction per scenario."""
        return np.repeat(self.level_edges, len(self.vol_shifts))

    @cached_property
    def shifts(self) -> FloatArray:
        """Volatility shift per scenario."""
        return np.tile(self.vol_shifts, len(self.level_moves))

    @cached_property
    def edge_scenarios(self) -> NDArray[np.intp]:
        """The two scenarios at the band's edges with no volatility shift."""
        edge_levels = (self.spot_steps, self.spot_steps + 2)
        return np.array([lvl * len(self.vol_shifts) + 1 for lvl in edge_levels])


def scenario_moves(spot: ArrayLike, kc: ArrayLike, grid: StressGrid) -> FloatArray:
    """Absolute price move of every scenario, shape (groups, scenarios)."""
    spot_ = np.asarray(spot, dtype=np.float64).reshape(-1, 1)
    kc_ = np.asarray(kc, dtype=np.float64).reshape(-1, 1)
    return spot_ * grid.moves + kc_ * grid.edges


@dataclass(frozen=True, slots=True)
class GroupRisk:
    """Margin figures of a set of groups (one entry per group)."""

    maintenance: FloatArray
    initial: FloatArray
    stress_loss: FloatArray
    edge_loss: FloatArray


def group_margin(*, spot: ArrayLike, kc: ArrayLike, option_pnl: FloatArray,
                 option_delta: ArrayLike, linear_net: ArrayLike, linear_gross: ArrayLike,
                 short_options: ArrayLike, linear_mm_rate: ArrayLike,
                 linear_im_rate: ArrayLike, option_floor_rate: ArrayLike,
                 option_im_factor: ArrayLike, grid: StressGrid) -> GroupRisk:
    """Maintenance, initial, stress loss and adverse-edge loss of each group.

    `option_pnl[g, j]` is the options' PnL in scenario j (sum of q * (V_j - mark)),
    `option_delta` their delta, `linear_net`/`linear_gross` the signed and absolute linear
    quantity, `short_options` the absolute quantity of short options. `kc` is k times the
    oracle confidence in price units. Rates broadcast (one per group or one for all).
    """
    spot_ = np.asarray(spot, dtype=np.float64)
    kc_ = np.asarray(kc, dtype=np.float64)
    net = np.asarray(linear_net, dtype=np.float64)
    odelta = np.asarray(option_delta, dtype=np.float64)
    moves = scenario_moves(spot_, kc_, grid)
    # the part of the linear position that offsets the options' delta is portfolio-margined
    # with them; the rest is directional and pays the linear rate only
    hedge = np.minimum(np.maximum(net, np.minimum(0.0, -odelta)), np.maximum(0.0, -odelta))
    work = np.multiply(moves, hedge[:, None])
    work += option_pnl
    option_loss = np.maximum(0.0, -work.min(axis=1))
    np.multiply(moves, net[:, None], out=work)
    work += option_pnl
    stress = np.maximum(0.0, -work.min(axis=1))
    edge = np.maximum(0.0, -work[:, grid.edge_scenarios].min(axis=1))
    option_mm = np.maximum(np.asarray(option_floor_rate) * np.asarray(short_options) * spot_,
                           option_loss)
    linear_notional = np.asarray(linear_gross, dtype=np.float64) * (spot_ + kc_)
    return GroupRisk(
        maintenance=np.asarray(linear_mm_rate) * linear_notional + option_mm,
        initial=np.asarray(linear_im_rate) * linear_notional
        + np.asarray(option_im_factor) * option_mm,
        stress_loss=stress,
        edge_loss=edge,
    )


def margin_ratio(equity: ArrayLike, maintenance: ArrayLike) -> FloatArray:
    """equity / maintenance, RATIO_CAP where there is no maintenance requirement."""
    eq = np.asarray(equity, dtype=np.float64)
    mm = np.asarray(maintenance, dtype=np.float64)
    safe = np.where(mm > 0.0, mm, 1.0)
    with np.errstate(over="ignore"):
        ratio = np.clip(eq / safe, -RATIO_CAP, RATIO_CAP)
    return np.where(mm > 0.0, ratio, RATIO_CAP)


def scalar_ratio(equity: float, maintenance: float) -> float:
    """`margin_ratio` of one account, without numpy."""
    if maintenance <= 0.0:
        return RATIO_CAP
    try:
        ratio = equity / maintenance
    except OverflowError:  # pragma: no cover - only with absurd magnitudes
        ratio = math.copysign(RATIO_CAP, equity)
    return max(-RATIO_CAP, min(RATIO_CAP, ratio))
