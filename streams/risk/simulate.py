"""The stress simulator behind `aps simulate`: the risk engine over a price path, no broker.

The same `PartitionEngine` the pipeline runs is driven twice over the same path and book:
once with the accounts' scaling rules and once without them, so the report can say how
many liquidations the policy prevented and what it cost.

Execution model (docs/risk.md, "aps simulate"):
- a command is executed at the N-th observation of its asset after it was issued
  (`latency`, default 1: the next observation); a top-up at the N-th observation of the
  asset whose price triggered it;
- trades fill at that observation's price (options: their model value there, with the
  position's mark volatility) moved against the trader by base_slippage_bps +
  impact_bps_per_million * notional / 1e6, plus a fee of fee_bps of the fill's value;
  a fill beyond the command's limit price is REJECTED, a command past its deadline EXPIRED;
- liquidation: after each observation, an account whose margin ratio is below 1 (equity
  below maintenance) is closed out at that observation's marks and pays a penalty of
  `liquidation_penalty` times the notional of everything it held; it takes no further
  part (its positions are zero).
"""

from __future__ import annotations

import csv
import io
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from streams.domain import (
    AccountEvent,
    CollateralChanged,
    CommandAction,
    ConsensusPrice,
    ExecutionReport,
    ExecutionStatus,
    OptionType,
    Position,
    PositionChanged,
    PriceStatus,
    PricingModel,
    RiskInput,
    RulesChanged,
    ScalingCommand,
    ScalingRules,
    Side,
)
from streams.errors import ConfigError
from streams.risk.bookgen import BookAccount, account_states, strip_rules
from streams.risk.engine import EngineConfig, PartitionEngine
from streams.risk.pricing import option_greeks
from streams.risk.volatility import YEAR_MS


@dataclass(frozen=True, slots=True)
class PriceTick:
    """One observation of the path."""

    time_ms: int
    asset: str
    price: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationConfig:
    """How executions and liquidations are simulated."""

    latency: int = 1
    fee_bps: float = 5.0
    base_slippage_bps: float = 5.0
    impact_bps_per_million: float = 10.0
    liquidation_penalty: float = 0.01
    confidence_bps: float = 0.0
    engine: EngineConfig = field(default_factory=EngineConfig)


@dataclass
class RunResult:
    """What happened to the book in one run."""

    accounts: int
    liquidated: list[str] = field(default_factory=list)
    commands: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    filled: int = 0
    rejected: int = 0
    expired: int = 0
    not_filled_by_reason: dict[str, int] = field(default_factory=dict)
    fees: float = 0.0
    slippage: float = 0.0
    topped_up: float = 0.0
    penalties: float = 0.0
    initial_collateral: float = 0.0
    final_equity: float = 0.0

    @property
    def hedge_cost(self) -> float:
        """Fees and slippage paid on the policy's fills, USD."""
        return self.fees + self.slippage

    @property
    def hedge_cost_pct(self) -> float:
        """Hedging cost as a percentage of the book's initial collateral."""
        return 100.0 * self.hedge_cost / self.initial_collateral if self.initial_collateral \
            else 0.0


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """Both runs over the same path and book (policy is None with --no-policy)."""

    ticks: int
    assets: tuple[str, ...]
    start_ms: int
    end_ms: int
    baseline: RunResult
    policy: RunResult | None

    def result_line(self) -> str:
        """The machine-readable last line of `aps simulate`."""
        run = self.policy or self.baseline
        return (f"RESULT accounts={self.baseline.accounts} liquidated={len(run.liquidated)}"
                f" liquidated_without_policy={len(self.baseline.liquidated)}"
                f" commands={run.commands} hedge_cost_pct={run.hedge_cost_pct:.4f}")


# --- the price path --------------------------------------------------------------------------

def parse_timestamp(text: str) -> int:
    """Epoch milliseconds from an integer (epoch ms) or an ISO 8601 time (UTC if naive)."""
    raw = text.strip()
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
        if value.is_integer():
            return int(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"timestamp {raw!r} is neither epoch ms nor ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def parse_prices(text: str) -> list[PriceTick]:
    """A CSV path with columns timestamp, asset, price (any order), sorted by time (stable)."""
    reader = csv.DictReader(io.StringIO(text))
    needed = {"timestamp", "asset", "price"}
    header = {name.strip().lower() for name in reader.fieldnames or ()}
    if not needed <= header:
        raise ConfigError(f"prices CSV needs columns {sorted(needed)}, got {sorted(header)}")
    ticks = []
    for line, row in enumerate(reader, start=2):
        clean = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        try:
            price = float(clean["price"])
        except ValueError:
            raise ConfigError(f"line {line}: price {clean['price']!r} is not a number") from None
        if not (math.isfinite(price) and price > 0):
            raise ConfigError(f"line {line}: price must be > 0, got {clean['price']!r}")
        if not clean["asset"]:
            raise ConfigError(f"line {line}: asset is empty")
        ticks.append(PriceTick(parse_timestamp(clean["timestamp"]), clean["asset"], price))
    if not ticks:
        raise ConfigError("prices CSV has no observations")
    ticks.sort(key=lambda t: t.time_ms)
    return ticks


def first_prices(ticks: Iterable[PriceTick]) -> dict[str, float]:
    """The first price of every asset of the path."""
    out: dict[str, float] = {}
    for tick in ticks:
        out.setdefault(tick.asset, tick.price)
    return out


# --- one run ---------------------------------------------------------------------------------

class _Run:
    def __init__(self, book: Sequence[BookAccount], config: SimulationConfig) -> None:
        self.config = config
        self.engine = PartitionEngine(config.engine, account_states(book))
        self.result = RunResult(accounts=len(book), initial_collateral=math.fsum(
            c.balance for a in book for c in a.collateral))
        self.queue: dict[str, deque[tuple[int, ScalingCommand]]] = {}
        self.seen: dict[str, int] = {}
        self.sequence: dict[str, int] = {}
        self.offset = 0
        self.dead: set[str] = set()
        self.prices: dict[str, float] = {}

    def _input(self, topic: str, body: object) -> RiskInput:
        self.offset += 1
        return RiskInput(topic, 0, self.offset, body)  # type: ignore[arg-type]

    def step(self, tick: PriceTick) -> None:
        count = self.seen[tick.asset] = self.seen.get(tick.asset, 0) + 1
        self.prices[tick.asset] = tick.price
        due = self.queue.get(tick.asset)
        while due and due[0][0] <= count:
            _, command = due.popleft()
            if command.account_id not in self.dead:
                self._execute(command, tick)
        seq = self.sequence[tick.asset] = self.sequence.get(tick.asset, 0) + 1
        conf = tick.price * self.config.confidence_bps / 1e4
        price = ConsensusPrice(tick.asset, tick.time_ms, tick.price, conf, PriceStatus.OK, 0.0,
                               ["sim"], [], [], seq)
        for command in self.engine.apply(self._input("sim.prices", price)):
            self.result.commands += 1
            key = command.reason.value
            self.result.by_reason[key] = self.result.by_reason.get(key, 0) + 1
            asset = command.provenance.asset
            self.queue.setdefault(asset, deque()).append(
                (self.seen.get(asset, 0) + self.config.latency, command))
        self._liquidate(tick)

    def _execute(self, command: ScalingCommand, tick: PriceTick) -> None:
        cfg = self.config
        status, reason = ExecutionStatus.FILLED, ""
        filled = price = fee = amount = 0.0
        if tick.time_ms > command.deadline:
            status, reason = ExecutionStatus.EXPIRED, "deadline"
        elif command.action is CommandAction.TOP_UP:
            amount = command.amount
            self.result.topped_up += amount
        else:
            ref = self._reference(command, tick)
            notional = command.quantity * tick.price
            slip = (cfg.base_slippage_bps + cfg.impact_bps_per_million * notional / 1e6) / 1e4
            sign = 1.0 if command.side is Side.BUY else -1.0
            price = ref * (1.0 + sign * slip)
            beyond = price > command.limit_price if sign > 0 else price < command.limit_price
            if beyond:
                status, reason, price = ExecutionStatus.REJECTED, "limit", 0.0
            else:
                filled = sign * command.quantity
                fee = command.quantity * price * cfg.fee_bps / 1e4
                self.result.fees += fee
                self.result.slippage += command.quantity * abs(price - ref)
        counter = {ExecutionStatus.FILLED: "filled", ExecutionStatus.REJECTED: "rejected",
                   ExecutionStatus.EXPIRED: "expired"}[status]
        setattr(self.result, counter, getattr(self.result, counter) + 1)
        if status is not ExecutionStatus.FILLED:
            key = f"{command.reason.value}:{status.value}"
            missed = self.result.not_filled_by_reason
            missed[key] = missed.get(key, 0) + 1
        report = ExecutionReport(
            report_id=f"sim-{command.command_id}", command_id=command.command_id,
            account_id=command.account_id, chain=command.chain, status=status, reason=reason,
            action=command.action, instrument=command.instrument, filled_quantity=filled,
            fill_price=price, fee=fee, top_up_amount=amount, executed_at=tick.time_ms,
            venue="sim")
        self.engine.apply(self._input("sim.reports", report))

    def _reference(self, command: ScalingCommand, tick: PriceTick) -> float:
        inst = command.instrument
        if inst is None or not inst.is_option:
            return tick.price
        position = self._position(command)
        vol = position.implied_vol if position and position.implied_vol is not None \
            else self.config.engine.default_vol
        T = ((inst.expiry_ms or 0) - tick.time_ms) / YEAR_MS
        greeks = option_greeks([tick.price], [inst.strike], [T], self.config.engine.rate, 0.0,
                               [vol], [inst.option_type is OptionType.CALL],
                               [inst.model is PricingModel.BLACK76])
        return float(greeks.price[0])

    def _position(self, command: ScalingCommand) -> Position | None:
        pending = self.engine.pending_command(command.account_id, command.command_id)
        if pending is None or pending.position_id is None:
            return None
        return self.engine.position(command.account_id, pending.position_id)

    def _liquidate(self, tick: PriceTick) -> None:
        for account_id in self.engine.accounts_below(1.0):
            if account_id not in self.dead:
                self._close_out(account_id, tick)

    def _close_out(self, account_id: str, tick: PriceTick) -> None:
        engine = self.engine
        figures = engine.figures(account_id)
        state = engine.state(account_id)
        assert figures is not None
        assert state is not None
        notional = math.fsum(abs(p.quantity) * self.prices.get(p.instrument.underlying, 0.0)
                             for p in state.positions)
        penalty = self.config.liquidation_penalty * notional
        self.result.liquidated.append(account_id)
        self.result.penalties += penalty
        self.dead.add(account_id)
        events: list[object] = [RulesChanged(ScalingRules())]
        events += [PositionChanged(Position(p.position_id, p.instrument, 0.0, p.entry_price))
                   for p in state.positions]
        chain = state.collateral[0].chain if state.collateral else "solana"
        events.append(CollateralChanged(chain, figures.equity - figures.collateral - penalty,
                                        0.0))
        for n, body in enumerate(events):
            engine.apply(self._input("sim.liquidations", AccountEvent(
                f"liq-{account_id}-{n}", account_id, tick.time_ms, body)))  # type: ignore[arg-type]

    def finish(self) -> RunResult:
        self.result.final_equity = self.engine.total_equity()
        self.result.liquidated.sort()
        return self.result


def run_path(ticks: Sequence[PriceTick], book: Sequence[BookAccount],
             config: SimulationConfig) -> RunResult:
    """One run of `book` over `ticks` (the book's rules decide whether a policy acts)."""
    run = _Run(book, config)
    for tick in ticks:
        run.step(tick)
    return run.finish()


def simulate(ticks: Sequence[PriceTick], book: Sequence[BookAccount],
             config: SimulationConfig | None = None, policy: bool = True) -> SimulationReport:
    """Run the path without the policy (always) and with it (unless `policy` is False)."""
    config = config or SimulationConfig()
    if config.latency < 0:
        raise ConfigError("latency must be >= 0 observations")
    baseline = run_path(ticks, strip_rules(book), config)
    with_policy = run_path(ticks, book, config) if policy else None
    return SimulationReport(
        ticks=len(ticks), assets=tuple(sorted({t.asset for t in ticks})),
        start_ms=ticks[0].time_ms if ticks else 0, end_ms=ticks[-1].time_ms if ticks else 0,
        baseline=baseline, policy=with_policy)


# --- the report ------------------------------------------------------------------------------

def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(value: float) -> str:
    return f"${value:,.0f}"


def format_report(report: SimulationReport, book_source: str,
                  config: SimulationConfig) -> list[str]:
    """The human-readable report of `aps simulate`, ending with the RESULT line."""
    base, run = report.baseline, report.policy
    lines = [
        f"path: {report.ticks} observations of {', '.join(report.assets)},"
        f" {_iso(report.start_ms)} -> {_iso(report.end_ms)}",
        f"book: {base.accounts} accounts ({book_source}),"
        f" collateral {_money(base.initial_collateral)}",
        f"execution: fills at the asset's price {config.latency} observation(s) later,"
        f" slippage {config.base_slippage_bps:g} bps + {config.impact_bps_per_million:g} bps"
        f"/$1M, fee {config.fee_bps:g} bps; liquidation below margin ratio 1, penalty"
        f" {100 * config.liquidation_penalty:g}% of notional",
        "",
        f"without policy: {len(base.liquidated)} liquidated, penalties"
        f" {_money(base.penalties)}, final equity {_money(base.final_equity)}",
    ]
    if run is None:
        lines.append("with policy: not run (--no-policy)")
    else:
        saved = len(set(base.liquidated) - set(run.liquidated))
        newly = len(set(run.liquidated) - set(base.liquidated))
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(run.by_reason.items())) or "none"
        missed = ", ".join(f"{k} {v}" for k, v in sorted(run.not_filled_by_reason.items()))
        lines += [
            f"with policy:    {len(run.liquidated)} liquidated, penalties"
            f" {_money(run.penalties)}, final equity {_money(run.final_equity)}",
            f"saved by the policy: {saved}; liquidated only with the policy: {newly}",
            f"commands: {run.commands} ({reasons}); filled {run.filled}, rejected"
            f" {run.rejected}, expired {run.expired}" + (f" ({missed})" if missed else ""),
            f"top-ups from reserves: {_money(run.topped_up)}",
            f"hedging cost: {_money(run.hedge_cost)} (fees {_money(run.fees)}, slippage"
            f" {_money(run.slippage)}) = {run.hedge_cost_pct:.3f}% of initial collateral",
        ]
    lines.append(report.result_line())
    return lines
