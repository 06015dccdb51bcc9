"""Scaling policy: from one account's projected risk to the commands that keep it in bounds.

`decide` looks at one account after a price update and returns the commands to send. It
works on a *projection*: quantities include every command still in flight, and each rule
sees the trades of the rules evaluated before it, so nothing fires twice for one breach.

Rules, in priority order (docs/risk.md, "Scaling policy"):

1. margin ladder: below a step's margin ratio, top up collateral from the reserve; at a
   REDUCE step, also cut positions, largest marginal maintenance first, each by at most
   the step's fraction, until the ladder's target ratio is restored;
2. delta band: outside target +/- band * (1 + hysteresis), trade the hedge perp back to
   the target;
3. volatility scaling and gamma bound: when the option book is larger than base *
   clamp(vol_target / max(realized, implied), min_scale, 1) by more than the tolerance,
   scale it down to that; restore it to the base once volatility is back under the
   target by the tolerance; cut the options that add to gamma when |gamma| exceeds
   max_gamma.

Trades of several rules on one position merge into one command (the higher priority wins
a conflict). Then limits, all in event time: cooldown per rule label, per-account rate
limit, minimum trade size, maximum notional per command. Severe breaches (margin ratio
below the ladder's last step, delta drift beyond the hard limit) bypass cooldowns and rate
limits. Degraded mode: on a DEGRADED price or an unhealthy chain only trades that reduce a
position are sent; on a HALTED price no trade at all; top-ups are always allowed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from streams.domain import (
    CommandAction,
    CommandReason,
    Instrument,
    InstrumentKind,
    LadderAction,
    MarginStep,
    PendingCommand,
    PriceStatus,
    Provenance,
    ScalingCommand,
    ScalingRules,
    Side,
)
from streams.risk.margin import (
    FloatArray,
    MarginParams,
    StressGrid,
    group_margin,
    scalar_ratio,
)
from streams.risk.stress import DELTA, FIRST_SCENARIO, GAMMA, MARK, VEGA

PRIORITY = {
    CommandReason.MARGIN_TOP_UP: 0,
    CommandReason.MARGIN_REDUCE: 1,
    CommandReason.DELTA_REBALANCE: 2,
    CommandReason.VOL_SCALE: 3,
    CommandReason.GAMMA_BOUND: 4,
}
MAX_CHUNKS = 20
_BISECT_STEPS = 20


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Engine-wide policy settings (per-account settings live in ScalingRules)."""

    vol_scale_tolerance: float = 0.1
    gamma_target_fraction: float = 0.9
    protective_slippage_bps: float = 300.0
    min_vol_observations: int = 10
    default_chain: str = "solana"


@dataclass(frozen=True, slots=True)
class QuoteView:
    """The trusted quote of one asset as the policy sees it."""

    asset: str
    price: float
    confidence: float
    status: PriceStatus
    event_time: int
    sequence: int
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MarketView:
    """Quotes, unhealthy chains and realized volatility, as of one price update."""

    quotes: Mapping[str, QuoteView]
    unhealthy_chains: frozenset[str]
    realized_vol: Callable[[str, int], float | None]
    trigger: QuoteView


@dataclass(frozen=True, slots=True)
class Holding:
    """One position of the account, with commands in flight already counted."""

    position_id: str
    instrument: Instrument
    quantity: float
    base: float
    vol: float
    unit: FloatArray | None
    exists: bool = True


@dataclass(frozen=True, slots=True)
class AccountView:
    """Everything `decide` needs about one account."""

    account_id: str
    version: int
    rules: ScalingRules
    rules_hash: str
    holdings: tuple[Holding, ...]
    equity_mark: float
    pending_top_up: float
    reserves: Mapping[str, float]
    k: float
    first_chain: str | None
    last_fired: Mapping[str, int]
    recent_commands: Sequence[int]
    # the engine's settings digest, copied into every command's provenance
    config_hash: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A rule that wanted to act and did not, with the reason (for audit and metrics).

    `code` is one of REFUSAL_CODES; `values` holds the numbers that decided it (e.g. the
    wanted notional and the limit), empty where the code has none."""

    account_id: str
    rule: str
    code: str
    event_time: int
    detail: str = ""
    values: dict[str, float] = field(default_factory=dict)


# every `Refusal.code` the policy records
REFUSAL_CODES = ("cooldown", "halted", "degraded", "unhealthy_chain", "overridden",
                 "below_min_trade", "max_notional", "rate_limited")
# the rule families of the labels (margin_ladder[1], delta_band:ETH ...), for bounded labels
RULE_KINDS = ("margin_ladder", "delta_band", "vol_scaling", "gamma_bound")


def rule_kind(rule: str) -> str:
    """The family of a rule label, e.g. ``margin_ladder`` for ``margin_ladder[1]``; of a
    merged label (``a+b``) its first rule's; ``other`` for a label of no known family."""
    first = rule.split("+", 1)[0]
    for kind in RULE_KINDS:
        if first.startswith(kind):
            return kind
    return "other"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one evaluation decided."""

    commands: list[ScalingCommand]
    pending: list[PendingCommand]
    fired: list[str]
    refusals: list[Refusal]


@dataclass
class _Plan:
    """A planned change before merging and limits."""

    holding: int | None
    quantity: float
    amount: float
    chain: str
    reason: CommandReason
    labels: list[str]
    trigger: dict[str, float]
    severe: bool = False


@dataclass(frozen=True, slots=True)
class ProjectedRisk:
    """Risk of the account for one set of quantities."""

    equity_adverse: float
    maintenance: float
    ratio: float
    stress_loss: float
    delta: Sequence[float]
    gamma: Sequence[float]


def _maximum(a: float, b: float) -> float:
    """np.maximum of two finite floats, including which zero it returns on a tie (b)."""
    return a if a > b else b


def _minimum(a: float, b: float) -> float:
    """np.minimum of two finite floats, including which zero it returns on a tie (b)."""
    return a if a < b else b


class Projection:
    """The margin model applied to one account's holdings for any quantities.

    The same functions as the book (streams.risk.margin), on a handful of rows, so the
    policy can try cuts before sending them.

    `risk_arrays` is the model in numpy (any number of underlyings). An account on one
    underlying, the usual case, is computed by `risk` with Python floats instead: numpy's
    per-call overhead dominates on one group of a few rows. That path performs the same
    floating-point operations in the same order (element-wise products and sums started
    from 0.0 in row order, like `np.add.at`/`np.bincount`/`sum`, and numpy's choice of
    zero on min/max ties), so both give bit-identical figures
    (tests/unit/risk/test_engine_fast.py checks it).
    """

    def __init__(self, holdings: Sequence[Holding], quotes: Mapping[str, QuoteView],
                 k: float, params: Callable[[str], MarginParams], grid: StressGrid) -> None:
        self.grid = grid
        self.assets = sorted({h.instrument.underlying for h in holdings})
        self._holdings = holdings
        self._spots = [quotes[a].price for a in self.assets]
        self._kcs = [k * quotes[a].confidence for a in self.assets]
        self._rates = [params(a) for a in self.assets]
        self._one_group = len(self.assets) == 1
        if self._one_group:
            self._scalar_terms()
        else:
            self._array_terms()

    def _array_terms(self) -> None:
        """What `risk_arrays` needs, as arrays."""
        holdings, grid = self._holdings, self.grid
        index = {a: i for i, a in enumerate(self.assets)}
        self.group = np.array([index[h.instrument.underlying] for h in holdings], dtype=np.intp)
        self.is_option = np.array([h.unit is not None for h in holdings], dtype=bool)
        width = FIRST_SCENARIO + grid.size
        self.units = np.zeros((len(holdings), width))
        for i, h in enumerate(holdings):
            if h.unit is not None:
                self.units[i] = h.unit
        self.spot = np.array(self._spots)
        self.kc = np.array(self._kcs)
        rates = self._rates
        self.lin_mm = np.array([p.linear_mm_rate for p in rates])
        self.lin_im = np.array([p.linear_im_rate for p in rates])
        self.floor = np.array([p.option_floor_rate for p in rates])
        self.im_factor = np.array([p.option_im_factor for p in rates])
        self._has_arrays = True

    def _scalar_terms(self) -> None:
        """What the one-underlying path needs, as Python floats."""
        self._has_arrays = False
        self._options = [(i, float(h.unit[DELTA]), float(h.unit[GAMMA]),
                          h.unit[FIRST_SCENARIO:].tolist())
                         for i, h in enumerate(self._holdings) if h.unit is not None]
        self._linear = [i for i, h in enumerate(self._holdings) if h.unit is None]
        spot, kc = self._spots[0], self._kcs[0]
        # scenario_moves, element by element
        self._moves = [spot * move + kc * edge for move, edge in
                       zip(self.grid.moves.tolist(), self.grid.edges.tolist(), strict=True)]
        self._edge_scenarios = self.grid.edge_scenarios.tolist()
        self._spot = spot
        self._kc = kc
        self._lin_mm = self._rates[0].linear_mm_rate
        self._floor = self._rates[0].option_floor_rate

    def risk(self, q: FloatArray, equity_mark: float) -> ProjectedRisk:
        """Adverse-edge equity, maintenance and ratio if the quantities were `q`."""
        if self._one_group:
            return self._risk_one_group(q.tolist(), equity_mark)
        return self.risk_arrays(q, equity_mark)

    def _risk_one_group(self, q: list[float], equity_mark: float) -> ProjectedRisk:
        # the operations of risk_arrays + group_margin for one group, in the same order
        # (terms that are exactly +0.0 are left out: adding them to a sum started from 0.0
        # changes nothing, not even the sign of a zero)
        pnl = [0.0] * len(self._moves)
        opt_delta = gamma = short = 0.0
        for i, unit_delta, unit_gamma, scenarios in self._options:
            qi = q[i]
            pnl = [p + qi * u for p, u in zip(pnl, scenarios, strict=True)]
            opt_delta += qi * unit_delta
            gamma += qi * unit_gamma
            if qi < 0:
                short += -qi
        net = gross = 0.0
        for i in self._linear:
            net += q[i]
            gross += abs(q[i])
        moves = self._moves
        hedge = _minimum(_maximum(net, _minimum(0.0, -opt_delta)), _maximum(0.0, -opt_delta))
        option_loss = _maximum(0.0, -min([m * hedge + p for m, p in zip(moves, pnl,
                                                                          strict=True)]))
        work = [m * net + p for m, p in zip(moves, pnl, strict=True)]
        stress = _maximum(0.0, -min(work))
        edge = _maximum(0.0, -min([work[j] for j in self._edge_scenarios]))
        option_mm = _maximum(self._floor * short * self._spot, option_loss)
        maintenance = 0.0 + (self._lin_mm * (gross * (self._spot + self._kc)) + option_mm)
        equity = equity_mark - (0.0 + edge)
        return ProjectedRisk(equity, maintenance, scalar_ratio(equity, maintenance),
                             0.0 + stress, (opt_delta + net,), (gamma,))

    def risk_arrays(self, q: FloatArray, equity_mark: float) -> ProjectedRisk:
        """`risk` computed with numpy arrays, for any number of underlyings."""
        if not self._has_arrays:
            self._array_terms()
        n = len(self.assets)
        opt_q = np.where(self.is_option, q, 0.0)
        lin_q = np.where(self.is_option, 0.0, q)
        pnl = np.zeros((n, self.grid.size))
        np.add.at(pnl, self.group, opt_q[:, None] * self.units[:, FIRST_SCENARIO:])
        opt_delta = np.bincount(self.group, opt_q * self.units[:, DELTA], minlength=n)
        gamma = np.bincount(self.group, opt_q * self.units[:, GAMMA], minlength=n)
        net = np.bincount(self.group, lin_q, minlength=n)
        gross = np.bincount(self.group, np.abs(lin_q), minlength=n)
        short = np.bincount(self.group, np.where(opt_q < 0, -opt_q, 0.0), minlength=n)
        risk = group_margin(
            spot=self.spot, kc=self.kc, option_pnl=pnl, option_delta=opt_delta,
            linear_net=net, linear_gross=gross, short_options=short,
            linear_mm_rate=self.lin_mm, linear_im_rate=self.lin_im,
            option_floor_rate=self.floor, option_im_factor=self.im_factor, grid=self.grid)
        equity = equity_mark - float(risk.edge_loss.sum())
        maintenance = float(risk.maintenance.sum())
        return ProjectedRisk(equity, maintenance, scalar_ratio(equity, maintenance),
                             float(risk.stress_loss.sum()), opt_delta + net, gamma)


# --- the decision ----------------------------------------------------------------------------

class _Evaluation:
    """One account, one price update: plans rule by rule on a running projection."""

    def __init__(self, view: AccountView, market: MarketView, config: PolicyConfig,
                 params: Callable[[str], MarginParams], grid: StressGrid,
                 trigger_assets: Sequence[str]) -> None:
        self.view = view
        self.market = market
        self.config = config
        self.now = market.trigger.event_time
        self.rules = view.rules
        self.limits = view.rules.limits
        self.holdings = list(view.holdings)
        self.trigger_assets = [a for a in trigger_assets
                               if any(h.instrument.underlying == a for h in self.holdings)]
        self._add_hedges()
        self.q = np.array([h.quantity for h in self.holdings], dtype=np.float64)
        self.extra = view.pending_top_up
        self.reserves = {c: max(r, 0.0) for c, r in view.reserves.items()}
        self.projection = Projection(self.holdings, market.quotes, view.k, params, grid)
        self.plans: list[_Plan] = []
        self.refusals: list[Refusal] = []
        self._risk: ProjectedRisk | None = None
        self._risk_key: tuple[bytes, float] | None = None

    # helpers

    def _add_hedges(self) -> None:
        rule = self.rules.delta_band
        if rule is None:
            return
        chain = self.hedge_chain()
        for asset in self.trigger_assets:
            if self.hedge_index(asset) is None:
                instrument = Instrument(f"{asset}-PERP", InstrumentKind.PERP, asset, chain)
                self.holdings.append(Holding(f"hedge:{asset}-PERP@{chain}", instrument, 0.0,
                                             0.0, 0.0, None, exists=False))

    def hedge_chain(self) -> str:
        """Chain of delta hedges: the rule's, else the first collateral chain."""
        rule = self.rules.delta_band
        return (rule.hedge_chain if rule and rule.hedge_chain else None) \
            or self.view.first_chain or self.config.default_chain

    def hedge_index(self, asset: str) -> int | None:
        """Holding that delta hedges of `asset` trade (first perp on the hedge chain)."""
        chain = self.hedge_chain()
        for i, h in enumerate(self.holdings):
            inst = h.instrument
            if inst.kind is InstrumentKind.PERP and inst.underlying == asset \
                    and inst.chain == chain:
                return i
        return None

    def refuse(self, label: str, code: str, detail: str = "",
               values: dict[str, float] | None = None) -> None:
        """Record a refusal (`values`: the numbers that decided it)."""
        self.refusals.append(Refusal(self.view.account_id, label, code, self.now, detail,
                                     values if values is not None else {}))

    def cooling(self, label: str) -> bool:
        """True if `label` fired within its cooldown (records the refusal)."""
        last = self.view.last_fired.get(label)
        if last is not None and self.now - last < self.limits.cooldown_ms:
            self.refuse(label, "cooldown", f"fired at {last}, cooldown {self.limits.cooldown_ms}",
                        {"fired_at": float(last), "cooldown_ms": float(self.limits.cooldown_ms)})
            return True
        return False

    def allowed_change(self, index: int, dq: float, label: str) -> float:
        """`dq` limited by degraded mode: reduce-only on DEGRADED or unhealthy chains, none
        on HALTED."""
        h = self.holdings[index]
        quote = self.market.quotes[h.instrument.underlying]
        if quote.status is PriceStatus.HALTED:
            self.refuse(label, "halted", f"{h.instrument.underlying} price HALTED",
                        {"wanted_quantity": float(dq)})
            return 0.0
        degraded = quote.status is PriceStatus.DEGRADED
        unhealthy = h.instrument.chain in self.market.unhealthy_chains
        if not (degraded or unhealthy):
            return dq
        q = self.q[index]
        reducing = -q if (q > 0) != (dq > 0) else 0.0
        limited = math.copysign(min(abs(dq), abs(reducing)), dq) if reducing else 0.0
        if limited != dq:
            why = "degraded" if degraded else "unhealthy_chain"
            self.refuse(label, why, f"only reduce-only trades on {h.instrument.underlying}"
                        f" ({quote.status.value}) / chain {h.instrument.chain}",
                        {"wanted_quantity": float(dq), "allowed_quantity": float(limited)})
        return limited

    def plan_trade(self, index: int, dq: float, reason: CommandReason, label: str,
                   trigger: dict[str, float], severe: bool = False) -> None:
        """Add a trade to the plan and to the projection."""
        if dq == 0.0:
            return
        h = self.holdings[index]
        self.plans.append(_Plan(index, float(dq), 0.0, h.instrument.chain, reason, [label],
                                {k: float(v) for k, v in trigger.items()}, severe))
        self.q[index] += dq

    def ref_price(self, index: int) -> float:
        """Price a trade of this holding is made at (option mark or underlying price)."""
        h = self.holdings[index]
        if h.unit is not None:
            return float(h.unit[MARK])
        return self.market.quotes[h.instrument.underlying].price

    def limit_price(self, index: int, side: Side, bps: float) -> float:
        """Worst acceptable price: `bps` against the trade, in underlying terms for options
        (an option moves by delta times the underlying's move, plus `bps` of its premium)."""
        ref = self.ref_price(index)
        sign = 1.0 if side is Side.BUY else -1.0
        unit = self.holdings[index].unit
        band = ref * bps / 1e4
        if unit is not None:
            band += abs(float(unit[DELTA])) * self.spot(index) * bps / 1e4
        return max(ref + sign * band, 0.0)

    def spot(self, index: int) -> float:
        """Price of the holding's underlying."""
        return self.market.quotes[self.holdings[index].instrument.underlying].price

    def risk(self) -> ProjectedRisk:
        """Projected risk with every planned change (cached until the plan changes)."""
        key = (self.q.tobytes(), self.extra)
        if self._risk_key != key:
            self._risk = self.projection.risk(self.q, self.view.equity_mark + self.extra)
            self._risk_key = key
        assert self._risk is not None
        return self._risk

    # rule 1: margin ladder

    def margin(self) -> None:
        """Top up, then reduce, when the margin ratio falls through the ladder."""
        ladder = self.rules.margin_ladder
        if ladder is None:
            return
        steps: list[MarginStep] = sorted(ladder.steps, key=lambda s: -s.margin_ratio)
        now = self.risk()
        breached = [i for i, s in enumerate(steps) if now.ratio < s.margin_ratio]
        if not breached:
            return
        deepest = breached[-1]
        step = steps[deepest]
        severe = now.ratio < steps[-1].margin_ratio
        label = f"margin_ladder[{deepest}]"
        if not severe and self.cooling(label):
            return
        target = ladder.target_ratio
        need = target * now.maintenance - now.equity_adverse
        if need <= 0:
            return
        trigger = {"margin_ratio": now.ratio, "step_ratio": step.margin_ratio,
                   "target_ratio": target, "equity": now.equity_adverse,
                   "maintenance": now.maintenance}
        fraction = max((steps[i].fraction for i in breached
                        if steps[i].action is LadderAction.TOP_UP), default=0.0)
        topped = self._top_up(min(need, fraction * sum(self.reserves.values())), label,
                              trigger, severe)
        if step.action is LadderAction.REDUCE and need - topped > 0:
            self._reduce(step.fraction, target, label, trigger, severe)

    def _top_up(self, amount: float, label: str, trigger: dict[str, float],
                severe: bool) -> float:
        if amount <= 0:
            return 0.0
        left = amount
        for chain, reserve in sorted(self.reserves.items(), key=lambda cr: (-cr[1], cr[0])):
            if left <= 0:
                break
            take = min(left, reserve)
            if take <= 0:
                continue
            self.plans.append(_Plan(None, 0.0, float(take), chain, CommandReason.MARGIN_TOP_UP,
                                    [label], {k: float(v) for k, v in trigger.items()},
                                    severe))
            self.reserves[chain] = reserve - take
            left -= take
        topped = amount - left
        self.extra += topped
        return topped

    def _tradable_for_reduction(self, index: int) -> bool:
        h = self.holdings[index]
        quote = self.market.quotes[h.instrument.underlying]
        return self.q[index] != 0.0 and quote.status is not PriceStatus.HALTED

    def _cost(self, index: int, dq: float) -> float:
        """Expected slippage of a cut (the account's usual bound, not the protective one)."""
        return abs(dq) * self.ref_price(index) * self.limits.slippage_bps / 1e4

    def _reduce(self, fraction: float, target: float, label: str,
                trigger: dict[str, float], severe: bool) -> None:
        """Cut positions, largest risk contributors first, until `target` is reached.

        A risk contributor is a position whose cut (by `fraction`) lowers the stress loss
        and raises the margin ratio; they are cut in order of stress loss saved. If that
        does not restore the target, every tradable position is scaled down by the same
        fraction (a protective put is never sold ahead of the position it protects).
        """
        base = self.risk()
        halted = sorted({h.instrument.underlying for i, h in enumerate(self.holdings)
                         if self.q[i] != 0.0 and not self._tradable_for_reduction(i)})
        if halted:
            self.refuse(label, "halted", f"no trade on {', '.join(halted)} (price HALTED)")
        ranked = []
        for i in range(len(self.holdings)):
            if not self._tradable_for_reduction(i):
                continue
            after = self._risk_after([i], -fraction)
            saved = base.stress_loss - after.stress_loss
            if after.ratio > base.ratio and saved > 0:
                ranked.append((-saved, self.holdings[i].position_id, i))
        for *_, i in sorted(ranked):
            if self._cut([i], fraction, target, label, trigger, severe):
                return
        everything = [i for i in range(len(self.holdings)) if self._tradable_for_reduction(i)]
        if everything:
            self._cut(everything, fraction, target, label, trigger, severe)

    def _cut(self, indices: list[int], fraction: float, target: float, label: str,
             trigger: dict[str, float], severe: bool) -> bool:
        """Cut `indices` by the smallest share (at most `fraction`) that reaches `target`;
        return True if it is reached. A cut that does not raise the ratio is not made."""
        current = self._risk_after(indices, 0.0).ratio
        reached = self._risk_after(indices, -fraction).ratio
        if reached <= current:
            return False
        share = fraction
        if reached >= target:
            lo, hi = 0.0, fraction
            for _ in range(_BISECT_STEPS):
                mid = 0.5 * (lo + hi)
                if self._risk_after(indices, -mid).ratio >= target:
                    hi = mid
                else:
                    lo = mid
            share = hi
        for i in indices:
            dq = -share * self.q[i]
            self.extra -= self._cost(i, dq)
            self.plan_trade(i, dq, CommandReason.MARGIN_REDUCE, label, trigger, severe)
        return reached >= target

    def _risk_after(self, indices: list[int], change: float) -> ProjectedRisk:
        """Projected risk if the positions `indices` changed by `change` times themselves."""
        trial = self.q.copy()
        cost = 0.0
        for i in indices:
            dq = change * self.q[i]
            trial[i] += dq
            cost += self._cost(i, dq)
        return self.projection.risk(trial, self.view.equity_mark + self.extra - cost)

    # rule 2: delta band

    def delta(self) -> None:
        """Trade the hedge perp back to the target when delta leaves the band."""
        rule = self.rules.delta_band
        if rule is None:
            return
        for asset in self.trigger_assets:
            group = self.projection.assets.index(asset)
            delta = float(self.risk().delta[group])
            drift = delta - rule.target
            if abs(drift) <= rule.band * (1.0 + rule.hysteresis):
                continue
            label = f"delta_band:{asset}"
            severe = abs(drift) > rule.hard_limit
            if not severe and self.cooling(label):
                continue
            index = self.hedge_index(asset)
            assert index is not None  # _add_hedges made one
            dq = self.allowed_change(index, -drift, label)
            trigger = {"delta": delta, "target": rule.target, "band": rule.band,
                       "hysteresis": rule.hysteresis, "hard_limit": rule.hard_limit}
            self.plan_trade(index, dq, CommandReason.DELTA_REBALANCE, label, trigger, severe)

    # rule 3: volatility scaling and gamma bound

    def volatility(self) -> None:
        """Scale option quantities toward the volatility target; bound gamma."""
        rule = self.rules.vol_scaling
        if rule is None:
            return
        for asset in self.trigger_assets:
            options = [i for i, h in enumerate(self.holdings)
                       if h.unit is not None and h.instrument.underlying == asset]
            if not options:
                continue
            self._scale(asset, options)
            self._bound_gamma(asset, options)

    def _scale(self, asset: str, options: list[int]) -> None:
        rule = self.rules.vol_scaling
        assert rule is not None
        base = sum(abs(self.holdings[i].base) for i in options)
        if base <= 0:
            return
        weights = [abs(self.q[i]) * float(self.holdings[i].unit[VEGA])  # type: ignore[index]
                   for i in options]
        implied = (math.fsum(w * self.holdings[i].vol for w, i in zip(weights, options,
                                                                      strict=True))
                   / math.fsum(weights)) if math.fsum(weights) > 0 else 0.0
        realized = self.market.realized_vol(asset, rule.window)
        vol = max(implied, realized or 0.0)
        if vol <= 0:
            return
        wanted = min(1.0, max(rule.min_scale, rule.vol_target / vol))
        scale = math.fsum(abs(self.q[i]) for i in options) / base
        tolerance = self.config.vol_scale_tolerance
        # down as soon as the scale is too high; back up to the full base only once
        # volatility is clearly under the target, so noise around one level cannot churn
        shrink_all = scale > wanted + tolerance
        grow_all = rule.vol_target >= vol * (1.0 + tolerance) and scale < 1.0 - tolerance
        if not (shrink_all or grow_all):
            return
        label = f"vol_scaling:{asset}"
        if self.cooling(label):
            return
        trigger = {"realized_vol": realized if realized is not None else -1.0,
                   "implied_vol": implied, "vol_target": rule.vol_target, "scale": scale,
                   "target_scale": wanted}
        for i in options:
            goal = self.holdings[i].base * wanted
            q = self.q[i]
            shrink = shrink_all and abs(goal) < abs(q) and (goal == 0 or (goal > 0) == (q > 0))
            grow = grow_all and abs(goal) > abs(q) and (q == 0 or (goal > 0) == (q > 0))
            if not (shrink or grow):
                continue
            dq = goal - q
            if grow and not self._may_increase(i, label):
                continue
            dq = self.allowed_change(i, dq, label)
            self.plan_trade(i, dq, CommandReason.VOL_SCALE, label, trigger)

    def _may_increase(self, index: int, label: str) -> bool:
        h = self.holdings[index]
        quote = self.market.quotes[h.instrument.underlying]
        if quote.status is not PriceStatus.OK or h.instrument.chain in self.market.unhealthy_chains:
            self.refuse(label, "degraded", "no increase of risk on a degraded price or chain")
            return False
        return True

    def _bound_gamma(self, asset: str, options: list[int]) -> None:
        rule = self.rules.vol_scaling
        assert rule is not None
        group = self.projection.assets.index(asset)
        gamma = float(self.risk().gamma[group])
        if abs(gamma) <= rule.max_gamma:
            return
        label = f"gamma_bound:{asset}"
        if self.cooling(label):
            return
        sign = math.copysign(1.0, gamma)
        contrib = [i for i in options
                   if self.q[i] * float(self.holdings[i].unit[GAMMA]) * sign > 0]  # type: ignore[index]
        part = math.fsum(self.q[i] * float(self.holdings[i].unit[GAMMA])  # type: ignore[index]
                         for i in contrib)
        if part == 0:
            return
        goal = sign * rule.max_gamma * self.config.gamma_target_fraction
        keep = min(1.0, max(0.0, (goal - (gamma - part)) / part))
        trigger = {"gamma": gamma, "max_gamma": rule.max_gamma, "keep_fraction": keep}
        for i in contrib:
            dq = self.allowed_change(i, (keep - 1.0) * self.q[i], label)
            self.plan_trade(i, dq, CommandReason.GAMMA_BOUND, label, trigger)


def decide(view: AccountView, market: MarketView, config: PolicyConfig,
           params: Callable[[str], MarginParams], grid: StressGrid,
           trigger_assets: Sequence[str]) -> Outcome:
    """The commands one account needs after a price update of `trigger_assets`."""
    evaluation = _Evaluation(view, market, config, params, grid, trigger_assets)
    evaluation.margin()
    evaluation.delta()
    evaluation.volatility()
    merged = _merge(evaluation)
    sized = _size(evaluation, merged)
    allowed = _rate_limit(evaluation, sized)
    return _build(evaluation, allowed)


def _merge(ev: _Evaluation) -> list[_Plan]:
    """One plan per position (priority order decides a conflict), top-ups kept apart."""
    ordered = sorted(ev.plans, key=lambda p: PRIORITY[p.reason])
    out: list[_Plan] = []
    by_holding: dict[int, _Plan] = {}
    for plan in ordered:
        if plan.holding is None:
            out.append(plan)
            continue
        first = by_holding.get(plan.holding)
        if first is None:
            by_holding[plan.holding] = merged = _Plan(
                plan.holding, plan.quantity, 0.0, plan.chain, plan.reason, list(plan.labels),
                dict(plan.trigger), plan.severe)
            out.append(merged)
            continue
        label = plan.labels[0]
        if (first.quantity > 0) != (plan.quantity > 0):
            ev.refuse(label, "overridden", f"conflicts with {first.labels[0]}",
                      {"quantity": float(plan.quantity), "kept_quantity": float(first.quantity)})
            continue
        first.quantity += plan.quantity
        first.severe = first.severe or plan.severe
        if label not in first.labels:
            first.labels.append(label)
            first.trigger.update({f"{label}.{k}": v for k, v in plan.trigger.items()})
    return out


def _size(ev: _Evaluation, plans: list[_Plan]) -> list[_Plan]:
    """Minimum trade size and maximum notional per command (protective plans are split)."""
    lim = ev.limits
    out: list[_Plan] = []
    for plan in plans:
        label = "+".join(plan.labels)
        protective = plan.severe or plan.reason in (CommandReason.MARGIN_TOP_UP,
                                                    CommandReason.MARGIN_REDUCE)
        if plan.holding is None:
            size, unit = plan.amount, 1.0
            closes = False
        else:
            unit = ev.spot(plan.holding)
            size = abs(plan.quantity) * unit
            original = ev.holdings[plan.holding].quantity
            closes = original != 0.0 and abs(original + plan.quantity) <= 1e-12 * abs(original)
        if size < lim.min_trade_notional and not closes:
            ev.refuse(label, "below_min_trade", f"{size:.2f} < {lim.min_trade_notional}",
                      {"notional": float(size),
                       "min_trade_notional": float(lim.min_trade_notional)})
            continue
        if size <= lim.max_command_notional:
            out.append(plan)
            continue
        chunks = min(MAX_CHUNKS, math.ceil(size / lim.max_command_notional)) if protective else 1
        share = lim.max_command_notional / size
        ev.refuse(label, "max_notional", f"{size:.2f} > {lim.max_command_notional},"
                  f" {chunks} command(s) of the maximum",
                  {"notional": float(size),
                   "max_command_notional": float(lim.max_command_notional),
                   "commands": float(chunks)})
        for _ in range(chunks):
            out.append(_Plan(plan.holding, plan.quantity * share, plan.amount * share,
                             plan.chain, plan.reason, plan.labels, plan.trigger, plan.severe))
    return out


def _rate_limit(ev: _Evaluation, plans: list[_Plan]) -> list[_Plan]:
    """Per-account command budget over the rate window; severe plans always pass."""
    lim = ev.limits
    recent = sum(1 for t in ev.view.recent_commands if ev.now - t < lim.rate_window_ms)
    budget = lim.max_commands - recent
    out = []
    for plan in plans:
        if plan.severe:
            out.append(plan)
        elif budget > 0:
            out.append(plan)
            budget -= 1
        else:
            ev.refuse("+".join(plan.labels), "rate_limited",
                      f"{lim.max_commands} commands per {lim.rate_window_ms} ms",
                      {"max_commands": float(lim.max_commands),
                       "rate_window_ms": float(lim.rate_window_ms),
                       "recent_commands": float(recent)})
    return out


def command_id(account_id: str, rule: str, reason: CommandReason, trigger: str,
               version: int, target: str) -> str:
    """Deterministic id: hex SHA-256 (32 digits) over the inputs that caused the command."""
    text = f"{account_id}|{rule}|{reason.value}|{trigger}|{version}|{target}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _build(ev: _Evaluation, plans: list[_Plan]) -> Outcome:
    view, lim, now = ev.view, ev.limits, ev.now
    trigger_quote = ev.market.trigger
    trigger_key = f"{trigger_quote.asset}#{trigger_quote.sequence}"
    commands: list[ScalingCommand] = []
    pending: list[PendingCommand] = []
    fired: list[str] = []
    seen: dict[str, int] = {}
    for plan in plans:
        rule = "+".join(plan.labels)
        for label in plan.labels:
            if label not in fired:
                fired.append(label)
        if plan.holding is None:
            holding, instrument = None, None
            target = f"top_up:{plan.chain}"
            quote = trigger_quote
            side, quantity, limit, bps, reduce_only = None, 0.0, 0.0, 0.0, False
        else:
            holding = ev.holdings[plan.holding]
            instrument = holding.instrument
            target = holding.position_id
            quote = ev.market.quotes[instrument.underlying]
            side = Side.BUY if plan.quantity > 0 else Side.SELL
            quantity = abs(plan.quantity)
            protective = plan.severe or plan.reason in (CommandReason.MARGIN_TOP_UP,
                                                        CommandReason.MARGIN_REDUCE)
            bps = max(lim.slippage_bps, ev.config.protective_slippage_bps) if protective \
                else lim.slippage_bps
            limit = ev.limit_price(plan.holding, side, bps)
            # the price the trade is expected at (an option's mark, not its underlying's)
            plan.trigger = {**plan.trigger, "reference_price": ev.ref_price(plan.holding)}
            q = holding.quantity
            reduce_only = q != 0.0 and (q > 0) != (plan.quantity > 0) and quantity <= abs(q)
        chunk = seen.get(target, 0)
        seen[target] = chunk + 1
        cid = command_id(view.account_id, rule, plan.reason, trigger_key, view.version,
                         target if chunk == 0 else f"{target}#{chunk}")
        action = CommandAction.TOP_UP if holding is None else CommandAction.TRADE
        commands.append(ScalingCommand(
            command_id=cid, account_id=view.account_id, chain=plan.chain, reason=plan.reason,
            rule=rule, trigger=plan.trigger, action=action, instrument=instrument, side=side,
            quantity=quantity, amount=plan.amount, limit_price=limit, slippage_bps=bps,
            reduce_only=reduce_only, created_at=now, deadline=now + lim.deadline_ms,
            provenance=Provenance(
                asset=quote.asset, price=quote.price, confidence=quote.confidence,
                price_event_time=quote.event_time, price_status=quote.status,
                sources=list(quote.sources), state_version=view.version,
                rules_hash=view.rules_hash, config_hash=view.config_hash),
        ))
        pending.append(PendingCommand(
            command_id=cid, reason=plan.reason,
            instrument_id=instrument.instrument_id if instrument else None,
            quantity=plan.quantity, amount=plan.amount, created_at=now,
            deadline=now + lim.deadline_ms, rule=rule,
            position_id=holding.position_id if holding else None, chain=plan.chain))
    return Outcome(commands, pending, fired, ev.refusals)

