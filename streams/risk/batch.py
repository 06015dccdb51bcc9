"""The policy for many accounts at once: `decide` with its projections vectorized.

`decide_many` gives, for every account it is handed, exactly the `Outcome` that
`streams.risk.policy.decide` gives (same commands, pending entries, fired labels and
refusals, in the same order). It runs the same rule code (`_Evaluation`'s methods) with two
changes that make it cheap:

- The projections (the margin model applied to an account's holdings for some quantities,
  `Projection.risk`) are computed for all accounts together, stage by stage, in numpy:
  stage 1 the risk before any plan (margin ladder), stage 2 the ladder's cuts (contributor
  ranking and the bisection of `_cut`, vectorized over the accounts that reduce), stage 3
  the risk the delta band sees, stage 4 the risk the gamma bound sees. Each performs the
  floating-point operations of the one-underlying projection in the same order (products
  and sums in holding order, started from +0.0, numpy's min/max), so the figures are
  bit-identical to what `decide` computes one account at a time.
- A rule is not run at all for an account where an exact test on those figures shows it
  plans nothing and records no refusal (no ladder step breached, delta inside the band,
  gamma inside its bound); volatility scaling is skipped only where a test loosened by
  `_SLACK` shows it cannot act.

Only accounts the vectorized projection covers are taken: every holding on the updated
asset, an OK price, no unhealthy chain, no command in flight on a position the account does
not hold, at most `MAX_HOLDINGS` holdings. The engine runs `decide` on the others. Each
stage checks that the quantities it valued are those the rule sees; if a rule ever saw
others it would be valued by the scalar projection instead (counted in
`BatchStats.scalar_risks`, which the tests require to stay 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from streams.domain import CommandReason, Instrument, InstrumentKind, PriceStatus
from streams.risk.margin import RATIO_CAP, FloatArray, MarginParams, StressGrid
from streams.risk.policy import (
    AccountView,
    Holding,
    MarketView,
    Outcome,
    PolicyConfig,
    ProjectedRisk,
    Projection,
    _build,
    _Evaluation,
    _merge,
    _rate_limit,
    _size,
)
from streams.risk.stress import DELTA, FIRST_SCENARIO, GAMMA, VEGA

MAX_HOLDINGS = 12
# fewer accounts reducing at one update than this are cut one by one (scalar projection):
# each vectorized bisection step costs numpy's per-call overhead, about 20 scalar ones
MIN_REDUCING = 6
_BISECT_STEPS = 20
# loosening of the volatility-scaling pre-test (its sums are not the policy's fsum)
_SLACK = 1e-9


@dataclass
class BatchStats:
    """What `decide_many` did: accounts, accounts whose ladder cuts were vectorized,
    vectorized risk rows, and risks it had to value one at a time because a rule saw
    quantities no stage had valued (should stay 0)."""

    accounts: int = 0
    reduced: int = 0
    risk_rows: int = 0
    scalar_risks: int = 0


class _Slab:
    """The holdings of a set of accounts as padded arrays (accounts x holdings)."""

    def __init__(self, accounts: Sequence[AccountView], spot: float, kc: FloatArray,
                 params: MarginParams, grid: StressGrid) -> None:
        n = len(accounts)
        width = max((len(a.holdings) for a in accounts), default=1)
        self.width = width
        columns = FIRST_SCENARIO + grid.size
        self.units = np.zeros((n, width, columns))
        self.option = np.zeros((n, width), dtype=bool)
        self.linear = np.zeros((n, width), dtype=bool)
        self.q = np.zeros((n, width))
        self.ref = np.zeros((n, width))
        # gathered in lists and written once (element writes into numpy are slow)
        at_a: list[int] = []
        at_h: list[int] = []
        quantity: list[float] = []
        opt_a: list[int] = []
        opt_h: list[int] = []
        units: list[FloatArray] = []
        for a, view in enumerate(accounts):
            for h, holding in enumerate(view.holdings):
                at_a.append(a)
                at_h.append(h)
                quantity.append(holding.quantity)
                if holding.unit is not None:
                    opt_a.append(a)
                    opt_h.append(h)
                    units.append(holding.unit)
        self.q[at_a, at_h] = quantity
        self.linear[at_a, at_h] = True
        self.ref[at_a, at_h] = spot
        if units:
            table = np.array(units)
            self.units[opt_a, opt_h] = table
            self.option[opt_a, opt_h] = True
            self.linear[opt_a, opt_h] = False
            self.ref[opt_a, opt_h] = table[:, 0]
        self.spot = spot
        self.kc = kc
        self.moves = spot * grid.moves[None, :] + kc[:, None] * grid.edges[None, :]
        self.lin_mm = params.linear_mm_rate
        self.floor = params.option_floor_rate
        self.edge_scenarios = grid.edge_scenarios
        self.rows = 0

    def take(self, accounts: np.ndarray) -> _Slab:
        """The slab of `accounts` only (row j = accounts[j]): gathered once for a stage
        that values them many times."""
        sub = object.__new__(_Slab)
        sub.width = self.width
        sub.units = self.units[accounts]
        sub.option = self.option[accounts]
        sub.linear = self.linear[accounts]
        sub.q = self.q[accounts]
        sub.ref = self.ref[accounts]
        sub.spot = self.spot
        sub.kc = self.kc[accounts]
        sub.moves = self.moves[accounts]
        sub.lin_mm = self.lin_mm
        sub.floor = self.floor
        sub.edge_scenarios = self.edge_scenarios
        sub.rows = 0
        return sub

    def risk(self, accounts: np.ndarray | None, q: FloatArray, equity: FloatArray
             ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        """(adverse-edge equity, maintenance, ratio, stress loss, delta, gamma) of each
        request: account `accounts[j]` (row j itself if None) with quantities `q[j]` and
        mark equity `equity[j]`.

        The operations of `Projection._risk_one_group`, in its order, one request per row.
        """
        m = len(q)
        self.rows += m
        if accounts is None:
            units, option, linear = self.units, self.option, self.linear
            moves, kc = self.moves, self.kc
        else:
            units, option, linear = (self.units[accounts], self.option[accounts],
                                     self.linear[accounts])
            moves, kc = self.moves[accounts], self.kc[accounts]
        pnl = np.zeros((m, units.shape[2] - FIRST_SCENARIO))
        opt_delta = np.zeros(m)
        gamma = np.zeros(m)
        short = np.zeros(m)
        net = np.zeros(m)
        gross = np.zeros(m)
        for h in range(q.shape[1]):
            qh = q[:, h]
            qo = np.where(option[:, h], qh, 0.0)
            pnl += qo[:, None] * units[:, h, FIRST_SCENARIO:]
            opt_delta += qo * units[:, h, DELTA]
            gamma += qo * units[:, h, GAMMA]
            short += np.where(option[:, h] & (qh < 0), -qh, 0.0)
            ql = np.where(linear[:, h], qh, 0.0)
            net += ql
            gross += np.abs(ql)
        hedge = np.minimum(np.maximum(net, np.minimum(0.0, -opt_delta)),
                           np.maximum(0.0, -opt_delta))
        option_loss = np.maximum(0.0, -(moves * hedge[:, None] + pnl).min(axis=1))
        work = moves * net[:, None] + pnl
        stress = np.maximum(0.0, -work.min(axis=1))
        edge = np.maximum(0.0, -work[:, self.edge_scenarios].min(axis=1))
        option_mm = np.maximum(self.floor * short * self.spot, option_loss)
        maintenance = 0.0 + (self.lin_mm * (gross * (self.spot + kc))
                             + option_mm)
        eq = equity - (0.0 + edge)
        positive = maintenance > 0.0
        with np.errstate(over="ignore"):
            ratio = np.clip(eq / np.where(positive, maintenance, 1.0), -RATIO_CAP, RATIO_CAP)
        ratio = np.where(positive, ratio, RATIO_CAP)
        return eq, maintenance, ratio, 0.0 + stress, opt_delta + net, gamma


@dataclass(frozen=True, slots=True)
class _OneAsset:
    """What the rules read of a Projection: its underlyings (here only the updated one)."""

    assets: list[str]


class _Batched(_Evaluation):
    """`_Evaluation` whose projections come from the vectorized stages."""

    def __init__(self, view: AccountView, market: MarketView, config: PolicyConfig,
                 params: Callable[[str], MarginParams], grid: StressGrid,
                 trigger: str, q: FloatArray, stats: BatchStats) -> None:
        # the attributes _Evaluation.__init__ sets, without building a Projection
        self.view = view
        self.market = market
        self.config = config
        self.now = market.trigger.event_time
        self.rules = view.rules
        self.limits = view.rules.limits
        self.holdings = view.holdings  # type: ignore[assignment]
        self.trigger_assets = [trigger]
        self.q = q  # a row of the slab: plans update it in place
        self.extra = view.pending_top_up
        self.reserves = {}  # set by the margin stage, the only one reading it
        self.plans = []
        self.refusals = []
        self._params = params
        self._grid = grid
        self._stats = stats
        self._given: ProjectedRisk | None = None
        self._given_key: tuple[bytes, float] | None = None
        self._scalar: Projection | None = None
        self.projection = _OneAsset([trigger])  # type: ignore[assignment]
        self.reduce_request: tuple[float, float, str, dict[str, float], bool] | None = None

    def give(self, risk: ProjectedRisk) -> None:
        """The projection of the current quantities and extra equity, from a stage."""
        self._given = risk
        self._given_key = (self.q.tobytes(), self.extra)

    def risk(self) -> ProjectedRisk:
        """The stage's projection (the scalar one if the quantities are not those valued)."""
        if self._given is not None and self._given_key == (self.q.tobytes(), self.extra):
            return self._given
        if not isinstance(self.projection, Projection):
            self._stats.scalar_risks += 1  # a rule saw quantities no stage valued
        risk = self._projection().risk(self.q, self.view.equity_mark + self.extra)
        self.give(risk)
        return risk

    def _reduce(self, fraction: float, target: float, label: str,
                trigger: dict[str, float], severe: bool) -> None:
        # done for all reducing accounts together (_reduce_all)
        self.reduce_request = (fraction, target, label, trigger, severe)

    def reduce_alone(self) -> None:
        """The ladder's cuts of this account by `_Evaluation._reduce` itself, on the scalar
        projection (for a stage with too few reducing accounts to vectorize)."""
        assert self.reduce_request is not None
        self.projection = self._projection()
        _Evaluation._reduce(self, *self.reduce_request)

    def _projection(self) -> Projection:
        if self._scalar is None:
            self._scalar = Projection(self.holdings, self.market.quotes, self.view.k,
                                      self._params, self._grid)
        return self._scalar


def _given(ev: _Batched, out: tuple[FloatArray, ...], j: int) -> None:
    eq, mm, ratio, stress, delta, gamma = out
    ev.give(ProjectedRisk(float(eq[j]), float(mm[j]), float(ratio[j]), float(stress[j]),
                          (float(delta[j]),), (float(gamma[j]),)))


def decide_many(accounts: Sequence[AccountView], market: MarketView, config: PolicyConfig,
                params: Callable[[str], MarginParams], grid: StressGrid, trigger: str,
                stats: BatchStats | None = None,
                min_reducing: int = MIN_REDUCING) -> list[Outcome]:
    """`decide(view, market, config, params, grid, [trigger])` for every view in
    `accounts` (each must satisfy `covered`), in order. The ladder's cuts are vectorized
    when at least `min_reducing` accounts reduce."""
    stats = stats if stats is not None else BatchStats()
    if not accounts:
        return []
    stats.accounts += len(accounts)
    quote = market.trigger
    kc = np.array([view.k * quote.confidence for view in accounts])
    slab = _Slab(accounts, quote.price, kc, params(trigger), grid)
    evs = [_Batched(view, market, config, params, grid, trigger, slab.q[a], stats)
           for a, view in enumerate(accounts)]
    everyone = np.arange(len(evs))
    _margin_stage(evs, slab, everyone, min_reducing)
    _delta_stage(evs, slab)
    _volatility_stage(evs, slab, trigger)
    stats.risk_rows += slab.rows
    out = []
    for ev in evs:
        if not ev.plans:  # nothing to merge, size, limit or build
            out.append(Outcome([], [], [], ev.refusals))
            continue
        allowed = _rate_limit(ev, _size(ev, _merge(ev)))
        out.append(_build(ev, allowed))
    return out


def covered(view: AccountView, trigger: str, market: MarketView) -> bool:
    """Whether `decide_many` can take this account (see the module docstring)."""
    if market.trigger.status is not PriceStatus.OK or market.unhealthy_chains:
        return False
    if not view.holdings or len(view.holdings) > MAX_HOLDINGS:
        return False
    return all(h.exists and h.instrument.underlying == trigger for h in view.holdings)


def with_hedge(view: AccountView, config: PolicyConfig, trigger: str) -> AccountView:
    """The view with the hedge holding `_Evaluation._add_hedges` would append."""
    rule = view.rules.delta_band
    if rule is None:
        return view
    chain = (rule.hedge_chain if rule.hedge_chain else None) or view.first_chain \
        or config.default_chain
    for h in view.holdings:
        inst = h.instrument
        if inst.kind is InstrumentKind.PERP and inst.underlying == trigger and inst.chain == chain:
            return view
    instrument = Instrument(f"{trigger}-PERP", InstrumentKind.PERP, trigger, chain)
    hedge = Holding(f"hedge:{trigger}-PERP@{chain}", instrument, 0.0, 0.0, 0.0, None,
                    exists=False)
    return _replace_holdings(view, (*view.holdings, hedge))


def _replace_holdings(view: AccountView, holdings: tuple[Holding, ...]) -> AccountView:
    return AccountView(
        account_id=view.account_id, version=view.version, rules=view.rules,
        rules_hash=view.rules_hash, holdings=holdings, equity_mark=view.equity_mark,
        pending_top_up=view.pending_top_up, reserves=view.reserves, k=view.k,
        first_chain=view.first_chain, last_fired=view.last_fired,
        recent_commands=view.recent_commands, config_hash=view.config_hash)


# --- stage 1 and 2: the margin ladder -------------------------------------------------------

def _equity(evs: Sequence[_Batched], which: np.ndarray) -> FloatArray:
    return np.array([evs[int(a)].view.equity_mark + evs[int(a)].extra for a in which])


def _margin_stage(evs: list[_Batched], slab: _Slab, which: np.ndarray,
                  min_reducing: int) -> None:
    with_ladder = np.array([ev.rules.margin_ladder is not None for ev in evs])
    which = which[with_ladder[which]]
    if not len(which):
        return
    out = slab.risk(which, slab.q[which], _equity(evs, which))
    ratio = out[2]
    top = np.array([max(s.margin_ratio for s in evs[int(a)].rules.margin_ladder.steps)  # type: ignore[union-attr]
                    for a in which])
    reducing = []
    for j in np.flatnonzero(ratio < top):
        ev = evs[int(which[j])]
        ev.reserves = {c: max(r, 0.0) for c, r in ev.view.reserves.items()}
        _given(ev, out, int(j))
        ev.margin()
        if ev.reduce_request is not None:
            reducing.append(int(which[j]))
    if len(reducing) >= min_reducing:
        evs[0]._stats.reduced += len(reducing)
        _reduce_all(evs, slab, np.array(reducing, dtype=np.int64))
    else:
        for a in reducing:
            evs[a].reduce_alone()


def _slippage(evs: Sequence[_Batched], which: np.ndarray) -> FloatArray:
    """Per account the slippage bound, bps, of the expected cost of a cut (`_cost`)."""
    return np.array([evs[int(a)].limits.slippage_bps for a in which])


def _after(slab: _Slab, which: np.ndarray | None, q: FloatArray, mask: FloatArray,
           change: FloatArray, equity: FloatArray, bps: FloatArray
           ) -> tuple[FloatArray, ...]:
    """`_risk_after(indices, change)` per account (slab row `which[j]`, or j if None): the
    holdings in `mask` changed by `change` times themselves, their expected slippage taken
    from equity."""
    trial = q.copy()
    cost = np.zeros(len(q))
    ref = slab.ref if which is None else slab.ref[which]
    for h in range(q.shape[1]):
        dq = change * q[:, h]
        trial[:, h] = np.where(mask[:, h], q[:, h] + dq, q[:, h])
        cost = cost + np.where(mask[:, h], np.abs(dq) * ref[:, h] * bps / 1e4, 0.0)
    return slab.risk(which, trial, equity - cost)


def _reduce_all(evs: list[_Batched], slab: _Slab, which: np.ndarray) -> None:
    """`_Evaluation._reduce` for every account in `which` (their requests), vectorized:
    contributors ranked by stress saved, cut one after the other (each by the smallest
    share that reaches the target), then everything by the same share."""
    requests = [evs[int(a)].reduce_request for a in which]
    fraction = np.array([r[0] for r in requests])  # type: ignore[index]
    target = np.array([r[1] for r in requests])  # type: ignore[index]
    bps = _slippage(evs, which)
    width = slab.width
    sub = slab.take(which)
    q = sub.q
    equity = _equity(evs, which)
    base = sub.risk(None, q, equity)
    # every single-holding cut by the step's fraction, in one pass
    n = len(which)
    rep = np.repeat(np.arange(n), width)
    eye = np.tile(np.eye(width, dtype=bool), (n, 1))
    after = _after(sub, rep, q[rep], eye, -fraction[rep], equity[rep], bps[rep])
    slab.rows += sub.rows
    saved = (base[3][rep] - after[3]).reshape(n, width)
    better = (after[2].reshape(n, width) > base[2][:, None]) & (saved > 0)
    tradable = q != 0.0
    ranked: list[list[int]] = []
    for j in range(n):
        ev = evs[int(which[j])]
        cand = [(-float(saved[j, h]), ev.holdings[h].position_id, h)
                for h in np.flatnonzero(better[j] & tradable[j][:width])]
        ranked.append([h for *_, h in sorted(cand)])
    done = np.zeros(n, dtype=bool)
    counts = np.array([len(r) for r in ranked], dtype=np.int64)
    for k in range(width):
        active = np.flatnonzero(~done & (counts > k))
        if not len(active):
            break
        mask = np.zeros((len(active), width), dtype=bool)
        mask[np.arange(len(active)), [ranked[j][k] for j in active.tolist()]] = True
        reached = _cut_all(evs, slab, which[active], mask, fraction[active], target[active],
                           bps[active])
        done[active[reached]] = True
    rest = np.flatnonzero(~done)
    if len(rest):
        mask = np.zeros((len(rest), width), dtype=bool)
        for r, j in enumerate(rest):
            ev = evs[int(which[j])]
            for h in range(len(ev.holdings)):
                mask[r, h] = ev._tradable_for_reduction(h)
        has = mask.any(axis=1)
        rest, mask = rest[has], mask[has]
        if len(rest):
            _cut_all(evs, slab, which[rest], mask, fraction[rest], target[rest], bps[rest])


def _cut_all(evs: list[_Batched], slab: _Slab, which: np.ndarray, mask: np.ndarray,
             fraction: FloatArray, target: FloatArray, bps: FloatArray) -> np.ndarray:
    """`_Evaluation._cut(indices in mask, fraction, target, ...)` for every account in
    `which`; returns where the target was reached."""
    sub = slab.take(which)
    q = sub.q
    equity = _equity(evs, which)
    m = len(which)
    local = np.arange(m)
    both = _after(sub, np.concatenate([local, local]), np.concatenate([q, q]),
                  np.concatenate([mask, mask]), np.concatenate([np.zeros(m), -fraction]),
                  np.concatenate([equity, equity]), np.concatenate([bps, bps]))
    current, reached = both[2][:m], both[2][m:]
    improves = reached > current
    share = fraction.copy()
    bisect = improves & (reached >= target)
    if bisect.any():
        sel = np.flatnonzero(bisect)
        part = sub.take(sel)
        lo, hi = np.zeros(len(sel)), fraction[sel].copy()
        q_sel, mask_sel, equity_sel, bps_sel = q[sel], mask[sel], equity[sel], bps[sel]
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            ratio = _after(part, None, q_sel, mask_sel, -mid, equity_sel, bps_sel)[2]
            up = ratio >= target[sel]
            hi = np.where(up, mid, hi)
            lo = np.where(up, lo, mid)
        share[sel] = hi
        sub.rows += part.rows
    slab.rows += sub.rows
    for j in np.flatnonzero(improves):
        ev = evs[int(which[j])]
        assert ev.reduce_request is not None
        _, _, label, trigger, severe = ev.reduce_request
        s = float(share[j])
        for i in np.flatnonzero(mask[j]):
            i = int(i)
            dq = -s * ev.q[i]
            ev.extra -= ev._cost(i, dq)
            ev.plan_trade(i, dq, CommandReason.MARGIN_REDUCE, label, trigger, severe)
    return improves & (reached >= target)


# --- stage 3: the delta band ----------------------------------------------------------------

def _delta_stage(evs: list[_Batched], slab: _Slab) -> None:
    which = np.array([a for a, ev in enumerate(evs) if ev.rules.delta_band is not None],
                     dtype=np.int64)
    if not len(which):
        return
    out = slab.risk(which, slab.q[which], _equity(evs, which))
    delta = out[4]
    for j, a in enumerate(which):
        ev = evs[int(a)]
        rule = ev.rules.delta_band
        assert rule is not None
        if abs(float(delta[j]) - rule.target) <= rule.band * (1.0 + rule.hysteresis):
            continue
        _given(ev, out, j)
        ev.delta()


# --- stage 4: volatility scaling and the gamma bound ----------------------------------------

def _volatility_stage(evs: list[_Batched], slab: _Slab, trigger: str) -> None:
    which = np.array([a for a, ev in enumerate(evs)
                      if ev.rules.vol_scaling is not None and slab.option[a].any()],
                     dtype=np.int64)
    if not len(which):
        return
    realized: dict[int, float | None] = {}
    scale_maybe = _scale_may_act(evs, slab, which, trigger, realized)
    for j, a in enumerate(which):
        if scale_maybe[j]:
            ev = evs[int(a)]
            ev._scale(trigger, _options(ev, trigger))
    out = slab.risk(which, slab.q[which], _equity(evs, which))
    gamma = out[5]
    for j, a in enumerate(which):
        ev = evs[int(a)]
        rule = ev.rules.vol_scaling
        assert rule is not None
        if abs(float(gamma[j])) <= rule.max_gamma:
            continue
        _given(ev, out, j)
        ev._bound_gamma(trigger, _options(ev, trigger))


def _options(ev: _Batched, asset: str) -> list[int]:
    return [i for i, h in enumerate(ev.holdings)
            if h.unit is not None and h.instrument.underlying == asset]


def _scale_may_act(evs: list[_Batched], slab: _Slab, which: np.ndarray, trigger: str,
                   realized: dict[int, float | None]) -> np.ndarray:
    """Where `_scale` could plan or refuse something (loosely: a superset)."""
    option = slab.option[which]
    q = slab.q[which]
    base = np.zeros(q.shape)
    vol = np.zeros(q.shape)
    for j, a in enumerate(which):
        for h, holding in enumerate(evs[int(a)].holdings):
            if holding.unit is not None:
                base[j, h] = holding.base
                vol[j, h] = holding.vol
    base_sum = np.where(option, np.abs(base), 0.0).sum(axis=1)
    weights = np.where(option, np.abs(q) * slab.units[which][:, :, VEGA], 0.0)
    total = weights.sum(axis=1)
    implied = np.where(total > 0, (weights * vol).sum(axis=1) / np.where(total > 0, total, 1.0),
                       0.0)
    rv = np.zeros(len(which))
    target = np.zeros(len(which))
    floor = np.zeros(len(which))
    for j, a in enumerate(which):
        rule = evs[int(a)].rules.vol_scaling
        assert rule is not None
        if rule.window not in realized:
            realized[rule.window] = evs[int(a)].market.realized_vol(trigger, rule.window)
        rv[j] = realized[rule.window] or 0.0
        target[j] = rule.vol_target
        floor[j] = rule.min_scale
    v = np.maximum(implied, rv)
    tolerance = evs[0].config.vol_scale_tolerance
    wanted = np.minimum(1.0, np.maximum(floor, target / np.where(v > 0, v, 1.0)))
    scale = np.abs(np.where(option, q, 0.0)).sum(axis=1) / np.where(base_sum > 0, base_sum, 1.0)
    loose = tolerance * (1 - _SLACK)
    shrink = scale - wanted > loose - _SLACK * (1 + np.abs(wanted))
    grow = (target * (1 + _SLACK) >= v * (1.0 + tolerance)) & (scale < 1.0 - loose + _SLACK)
    return (base_sum > 0) & (v > 0) & (shrink | grow)
