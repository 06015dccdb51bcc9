"""The job of `aps bench pipeline` as a team writes it first: one account per Python call.

Shared by the per-event Faust variant (streams.bench.naive_faust) and the Quix Streams
variant (streams.bench.naive_quix), so both compute exactly the same thing; neither uses
numpy in the hot path. Per oracle observation:

1. `Fanout.observe`: the APS consensus engine (streams.oracle.consensus, pure) turns the
   observation into consensus prices; each becomes an effective quote (a HALTED price keeps
   the last trusted mark with a band widened to cover the untrusted candidate, as APS does)
   and is addressed to every account holding that asset.
2. `revalue`: one account, one quote: scalar Black-Scholes (r = q = 0, where BSM on spot and
   Black-76 on the forward agree) for each option at the mark and on APS's stress grid, and
   APS's margin formulas (streams.risk.margin: linear and portfolio option maintenance,
   adverse-edge equity at price -/+ k x confidence). The figures equal the APS engine's
   (tests/unit/bench/test_naive_job.py).
3. `decide`: the margin ladder (top up from the reserve, then cut every position by the
   step's fraction at a REDUCE step) and the delta band (trade the hedge perp back to
   target), with per-rule cooldowns in event time, severe breaches bypassing them, no trade
   on a HALTED price, reduce-only on a DEGRADED one, and the minimum trade size. Commands
   are assumed to fill: the state is updated at once (no execution reports in this job).
   Volatility scaling, the gamma bound, rate limits and the in-flight projections of APS's
   policy are left out: a first implementation does not have them.

Account state is a plain JSON-able dict, stored by the framework's state store (a Faust
Table, Quix State) under the account id.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.codecs import decode, encode
from streams.codecs.avro import to_datum
from streams.codecs.signing import sign
from streams.domain import (
    AccountEvent,
    CollateralChanged,
    CommandAction,
    CommandReason,
    ConsensusPrice,
    Instrument,
    InstrumentKind,
    OptionType,
    OracleObservation,
    PositionChanged,
    PriceStatus,
    PricingModel,
    Provenance,
    RulesChanged,
    ScalingCommand,
    Side,
)
from streams.errors import CodecError
from streams.oracle.consensus import ConsensusEngine
from streams.oracle.feeds import FeedRegistry
from streams.risk.margin import MarginParams, StressGrid

YEAR_MS = 365.0 * 24 * 3600 * 1000
# the APS engine's defaults (EngineConfig.default_vol, .default_confidence_k)
DEFAULT_VOL = 0.6
DEFAULT_K = 2.0
_MIN_TOTAL_VOL = 1e-12
_MIN_PRICE_FRACTION = 1e-9
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
PROTECTIVE_SLIPPAGE_BPS = 300.0

State = dict[str, Any]


@dataclass(frozen=True, slots=True)
class NaiveConfig:
    """Grid and margin rates as plain Python numbers (read once from APS's definitions)."""

    moves: tuple[float, ...]
    edges: tuple[float, ...]
    shifts: tuple[float, ...]
    edge_scenarios: tuple[int, ...]
    min_vol: float
    params: MarginParams

    @classmethod
    def default(cls) -> NaiveConfig:
        """APS's default stress grid and margin rates."""
        grid = StressGrid()
        return cls(tuple(float(x) for x in grid.moves), tuple(float(x) for x in grid.edges),
                   tuple(float(x) for x in grid.shifts),
                   tuple(int(x) for x in grid.edge_scenarios), grid.min_vol, MarginParams())


@dataclass(frozen=True, slots=True)
class Quote:
    """The mark an account is revalued at."""

    asset: str
    price: float
    confidence: float
    status: PriceStatus
    event_time: int
    sequence: int
    sources: tuple[str, ...] = ()

    def to_json(self) -> list[Any]:
        """A compact JSON form (what the fan-out messages carry)."""
        return [self.asset, self.price, self.confidence, self.status.value, self.event_time,
                self.sequence, list(self.sources)]

    @classmethod
    def from_json(cls, raw: list[Any]) -> Quote:
        """Inverse of `to_json`."""
        asset, price, conf, status, event_time, sequence, sources = raw
        return cls(asset, price, conf, PriceStatus(status), event_time, sequence,
                   tuple(sources))


@dataclass(frozen=True, slots=True)
class GroupFigures:
    """One account's figures after a revaluation of one asset."""

    equity: float
    equity_adverse: float
    maintenance: float
    ratio: float
    delta: float


# --- scalar Black-Scholes ------------------------------------------------------------------

def _ncdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def option_value(F: float, K: float, T: float, sigma: float, call: bool) -> float:
    """Price of one European option (r = q = 0)."""
    w = 1.0 if call else -1.0
    vol = sigma * math.sqrt(T) if T > 0 else 0.0
    if vol <= _MIN_TOTAL_VOL:
        return max(w * (F - K), 0.0)
    d1 = math.log(F / K) / vol + 0.5 * vol
    return max(w * (F * _ncdf(w * d1) - K * _ncdf(w * (d1 - vol))), 0.0)


def option_mark(F: float, K: float, T: float, sigma: float, call: bool) -> tuple[float, float]:
    """Price and delta of one European option (r = q = 0)."""
    w = 1.0 if call else -1.0
    vol = sigma * math.sqrt(T) if T > 0 else 0.0
    if vol <= _MIN_TOTAL_VOL:
        log_fk = math.log(F / K)
        step = 0.5 if log_fk == 0.0 else float(w * log_fk > 0)
        return max(w * (F - K), 0.0), w * step
    d1 = math.log(F / K) / vol + 0.5 * vol
    n1 = _ncdf(w * d1)
    price = max(w * (F * n1 - K * _ncdf(w * (d1 - vol))), 0.0)
    return price, w * n1


# --- account state -------------------------------------------------------------------------

def new_account(account_id: str) -> State:
    """An empty account."""
    return {"id": account_id, "version": 0, "collateral": {}, "positions": {}, "rules": None,
            "groups": {}, "fired": {}}


def _position_json(position: Any) -> dict[str, Any]:
    inst = position.instrument
    return {"iid": inst.instrument_id, "asset": inst.underlying, "chain": inst.chain,
            "kind": inst.kind.value, "call": inst.option_type is OptionType.CALL,
            "strike": inst.strike or 0.0, "expiry": inst.expiry_ms or 0,
            "b76": inst.model is PricingModel.BLACK76, "q": position.quantity,
            "entry": position.entry_price,
            "vol": position.implied_vol if position.implied_vol is not None else DEFAULT_VOL}


def apply_event(state: State, event: AccountEvent) -> State:
    """The account after one account event (positions, collateral, rules)."""
    body = event.body
    if isinstance(body, PositionChanged):
        position = body.position
        if position.quantity == 0.0:
            state["positions"].pop(position.position_id, None)
        else:
            state["positions"][position.position_id] = _position_json(position)
    elif isinstance(body, CollateralChanged):
        balance, reserve = state["collateral"].get(body.chain, (0.0, 0.0))
        state["collateral"][body.chain] = [balance + body.balance_delta,
                                           reserve + body.reserve_delta]
    elif isinstance(body, RulesChanged):
        state["rules"] = to_datum(body.rules)
    state["version"] += 1
    return state


def exposures(state: State) -> set[str]:
    """Assets the account holds a position on."""
    return {p["asset"] for p in state["positions"].values()}


def confidence_k(state: State) -> float:
    """The account's adverse-edge multiplier (its ladder's confidence_k)."""
    rules = state["rules"]
    ladder = rules.get("margin_ladder") if rules else None
    return float(ladder["confidence_k"]) if ladder else DEFAULT_K


# --- revaluation ---------------------------------------------------------------------------

def revalue(state: State, quote: Quote, config: NaiveConfig) -> GroupFigures:
    """Revalue the account's positions on `quote.asset` (one Python call, scalar math) and
    return its figures; the group's value, edge loss, maintenance and delta are kept in the
    state, so an account on several assets adds the last figures of the others."""
    spot, now = quote.price, quote.event_time
    kc = confidence_k(state) * quote.confidence
    moves = [spot * m + kc * e for m, e in zip(config.moves, config.edges, strict=True)]
    pnl = [0.0] * len(moves)
    value = option_delta = net = gross = short = 0.0
    for p in state["positions"].values():
        if p["asset"] != quote.asset:
            continue
        q = p["q"]
        if p["kind"] != InstrumentKind.OPTION.value:
            value += q * (spot - p["entry"])
            net += q
            gross += abs(q)
            continue
        strike, vol, call = p["strike"], p["vol"], p["call"]
        T = (p["expiry"] - now) / YEAR_MS
        mark, delta = option_mark(spot, strike, T, vol, call)
        value += q * (mark - p["entry"])
        option_delta += q * delta
        if q < 0:
            short -= q
        floor = min(vol, config.min_vol)
        for j, (m, e, shift) in enumerate(zip(config.moves, config.edges, config.shifts,
                                              strict=True)):
            scenario = max(spot * (1.0 + m) + kc * e, spot * _MIN_PRICE_FRACTION)
            pnl[j] += q * (option_value(scenario, strike, T, max(vol + shift, floor), call)
                           - mark)
    hedge = min(max(net, min(0.0, -option_delta)), max(0.0, -option_delta))
    option_loss = max(0.0, -min(v + hedge * m for v, m in zip(pnl, moves, strict=True)))
    full = [v + net * m for v, m in zip(pnl, moves, strict=True)]
    edge = max(0.0, -min(full[j] for j in config.edge_scenarios))
    params = config.params
    mm = params.linear_mm_rate * gross * (spot + kc) \
        + max(params.option_floor_rate * short * spot, option_loss)
    state["groups"][quote.asset] = [value, edge, mm, option_delta + net]
    return _totals(state, option_delta + net)


def _totals(state: State, delta: float) -> GroupFigures:
    collateral = math.fsum(balance for balance, _ in state["collateral"].values())
    groups = [state["groups"][a] for a in sorted(state["groups"])]
    equity = collateral + math.fsum(g[0] for g in groups)
    adverse = equity - math.fsum(g[1] for g in groups)
    mm = math.fsum(g[2] for g in groups)
    ratio = adverse / mm if mm > 0 else 1e308
    return GroupFigures(equity, adverse, mm, ratio, delta)


# --- rules ---------------------------------------------------------------------------------

@dataclass
class _Decision:
    state: State
    quote: Quote
    figures: GroupFigures
    commands: list[ScalingCommand] = field(default_factory=list)

    @property
    def limits(self) -> dict[str, Any]:
        return self.state["rules"]["limits"]

    def cooling(self, label: str) -> bool:
        fired = self.state["fired"].get(label)
        return fired is not None and self.quote.event_time - fired < self.limits["cooldown_ms"]


def decide(state: State, quote: Quote, figures: GroupFigures,
           command_key: str) -> list[ScalingCommand]:
    """Signed commands for the account after a revaluation (margin ladder, then delta
    band); the state is updated as if they filled."""
    if state["rules"] is None:
        return []
    decision = _Decision(state, quote, figures)
    _margin_ladder(decision)
    _delta_band(decision)
    if decision.commands:
        state["version"] += 1
    return [sign(c, command_key) for c in decision.commands]


def _margin_ladder(d: _Decision) -> None:
    ladder = d.state["rules"].get("margin_ladder")
    if not ladder:
        return
    steps = sorted(ladder["steps"], key=lambda s: -s["margin_ratio"])
    ratio = d.figures.ratio
    breached = [i for i, s in enumerate(steps) if ratio < s["margin_ratio"]]
    if not breached:
        return
    deepest = breached[-1]
    step = steps[deepest]
    severe = ratio < steps[-1]["margin_ratio"]
    label = f"margin_ladder[{deepest}]"
    if not severe and d.cooling(label):
        return
    need = ladder["target_ratio"] * d.figures.maintenance - d.figures.equity_adverse
    if need <= 0:
        return
    trigger = {"margin_ratio": ratio, "step_ratio": step["margin_ratio"],
               "target_ratio": ladder["target_ratio"], "equity": d.figures.equity_adverse,
               "maintenance": d.figures.maintenance}
    fraction = max((steps[i]["fraction"] for i in breached if steps[i]["action"] == "TOP_UP"),
                   default=0.0)
    reserves = d.state["collateral"]
    left = min(need, fraction * math.fsum(r for _, r in reserves.values()))
    fired = False
    for chain in sorted(reserves, key=lambda c: (-reserves[c][1], c)):
        take = min(left, reserves[chain][1])
        if take <= 0:
            continue
        reserves[chain] = [reserves[chain][0] + take, reserves[chain][1] - take]
        left -= take
        d.commands.append(_command(d, label, CommandReason.MARGIN_TOP_UP, trigger, chain,
                                   None, 0.0, take, True))
        fired = True
    if step["action"] == "REDUCE" and d.quote.status is not PriceStatus.HALTED:
        for pid in sorted(d.state["positions"]):
            p = d.state["positions"][pid]
            if p["asset"] == d.quote.asset:
                fired |= _trade(d, label, CommandReason.MARGIN_REDUCE, trigger, pid,
                                -step["fraction"] * p["q"], True)
    if fired:
        d.state["fired"][label] = d.quote.event_time


def _delta_band(d: _Decision) -> None:
    rule = d.state["rules"].get("delta_band")
    if not rule or d.quote.status is PriceStatus.HALTED:
        return
    drift = d.figures.delta - rule["target"]
    if abs(drift) <= rule["band"] * (1.0 + rule["hysteresis"]):
        return
    label = f"delta_band:{d.quote.asset}"
    severe = abs(drift) > rule["hard_limit"]
    if not severe and d.cooling(label):
        return
    chain = rule.get("hedge_chain") or min(d.state["collateral"], default="solana")
    pid = next((pid for pid, p in sorted(d.state["positions"].items())
                if p["kind"] == InstrumentKind.PERP.value and p["asset"] == d.quote.asset
                and p["chain"] == chain), None)
    if pid is None:
        pid = f"hedge:{d.quote.asset}-PERP@{chain}"
        d.state["positions"][pid] = {
            "iid": f"{d.quote.asset}-PERP", "asset": d.quote.asset, "chain": chain,
            "kind": InstrumentKind.PERP.value, "call": False, "strike": 0.0, "expiry": 0,
            "b76": False, "q": 0.0, "entry": d.quote.price, "vol": DEFAULT_VOL}
    trigger = {"delta": d.figures.delta, "target": rule["target"], "band": rule["band"],
               "hysteresis": rule["hysteresis"], "hard_limit": rule["hard_limit"]}
    if _trade(d, label, CommandReason.DELTA_REBALANCE, trigger, pid, -drift, severe):
        d.state["fired"][label] = d.quote.event_time


def _trade(d: _Decision, label: str, reason: CommandReason, trigger: dict[str, float],
           pid: str, dq: float, protective: bool) -> bool:
    """Plan a trade of position `pid` by `dq` (reduce-only on a DEGRADED price)."""
    p = d.state["positions"][pid]
    q = p["q"]
    reducing = q != 0.0 and (q > 0) != (dq > 0)
    if d.quote.status is PriceStatus.DEGRADED:
        dq = math.copysign(min(abs(dq), abs(q)), dq) if reducing else 0.0
    ref = d.quote.price
    if p["kind"] == InstrumentKind.OPTION.value:  # an option trades at its own mark
        T = (p["expiry"] - d.quote.event_time) / YEAR_MS
        ref = option_mark(d.quote.price, p["strike"], T, p["vol"], p["call"])[0]
    if dq == 0.0 or abs(dq) * d.quote.price < d.limits["min_trade_notional"]:
        return False
    p["q"] = q + dq
    d.commands.append(_command(d, label, reason, {**trigger, "reference_price": ref},
                               p["chain"], pid, dq, 0.0, protective,
                               reduce_only=reducing and abs(dq) <= abs(q)))
    return True


def _instrument(p: dict[str, Any]) -> Instrument:
    if p["kind"] != InstrumentKind.OPTION.value:
        return Instrument(p["iid"], InstrumentKind(p["kind"]), p["asset"], p["chain"])
    return Instrument(p["iid"], InstrumentKind.OPTION, p["asset"], p["chain"],
                      OptionType.CALL if p["call"] else OptionType.PUT, p["strike"],
                      p["expiry"], PricingModel.BLACK76 if p["b76"] else PricingModel.BSM)


def _command(d: _Decision, label: str, reason: CommandReason, trigger: dict[str, float],
             chain: str, pid: str | None, dq: float, amount: float, protective: bool,
             reduce_only: bool = False) -> ScalingCommand:
    quote, limits, state = d.quote, d.limits, d.state
    target = pid if pid is not None else f"top_up:{chain}"
    text = (f"{state['id']}|{label}|{reason.value}|{quote.asset}#{quote.sequence}|"
            f"{state['version']}|{target}")
    bps = max(limits["slippage_bps"], PROTECTIVE_SLIPPAGE_BPS) if protective \
        else limits["slippage_bps"]
    side = None if pid is None else (Side.BUY if dq > 0 else Side.SELL)
    ref = trigger.get("reference_price", 0.0)
    limit = 0.0 if side is None else max(ref * (1 + (bps if dq > 0 else -bps) / 1e4), 0.0)
    position = state["positions"].get(pid) if pid is not None else None
    return ScalingCommand(
        command_id=hashlib.sha256(text.encode()).hexdigest()[:32], account_id=state["id"],
        chain=chain, reason=reason, rule=label, trigger={k: float(v) for k, v in
                                                          trigger.items()},
        action=CommandAction.TOP_UP if pid is None else CommandAction.TRADE,
        instrument=_instrument(position) if position else None, side=side,
        quantity=abs(dq), amount=amount, limit_price=limit, slippage_bps=bps,
        reduce_only=reduce_only, created_at=quote.event_time,
        deadline=quote.event_time + limits["deadline_ms"],
        provenance=Provenance(quote.asset, quote.price, quote.confidence, quote.event_time,
                              quote.status, list(quote.sources), state["version"],
                              "", ""))


# --- the fan-out step ----------------------------------------------------------------------

class Fanout:
    """Consensus per observation, the effective quote per price, and which accounts hold
    each asset (the index is fed by the account step: `expose`)."""

    def __init__(self, feeds: FeedRegistry) -> None:
        self.engine = ConsensusEngine(feeds)
        self.trusted: dict[str, Quote] = {}
        self.holders: dict[str, set[str]] = {}
        self.observations = 0
        self.prices = 0

    def expose(self, account_id: str, assets: Iterable[str]) -> None:
        """Record that `account_id` holds positions on `assets`."""
        for asset in assets:
            self.holders.setdefault(asset, set()).add(account_id)

    def observe(self, payload: bytes) -> list[tuple[Quote, list[str]]]:
        """(quote, account ids to revalue) for every consensus price the observation
        causes; undecodable input is skipped (counted as an observation)."""
        self.observations += 1
        try:
            observation = decode(payload, OracleObservation)
        except CodecError:
            return []
        out = []
        for price in self.engine.observe(observation).prices:
            quote = self._effective(price)
            self.prices += 1
            if quote is not None:
                out.append((quote, sorted(self.holders.get(quote.asset, ()))))
        return out

    def _effective(self, price: ConsensusPrice) -> Quote | None:
        previous = self.trusted.get(price.asset)
        valid = math.isfinite(price.price) and price.price > 0
        if price.status is PriceStatus.HALTED:
            if previous is None:
                return None
            wider = previous.confidence
            if valid:
                wider = max(wider, abs(price.price - previous.price) + price.confidence)
            return Quote(price.asset, previous.price, wider, PriceStatus.HALTED,
                         previous.event_time, price.sequence, tuple(price.sources_used))
        quote = Quote(price.asset, price.price, price.confidence, price.status,
                      price.event_time, price.sequence, tuple(price.sources_used))
        self.trusted[price.asset] = quote
        return quote


def encode_command(command: ScalingCommand) -> bytes:
    """Wire bytes of a command (Avro single-object encoding)."""
    return encode(command)
