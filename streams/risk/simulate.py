"""The stress simulator behind `aps simulate`: the risk engine over a price path, no broker.

The same `PartitionEngine` the pipeline runs is driven twice over the same path and book:
once with the accounts' scaling rules and once without them, so the report can say how
many liquidations the policy prevented and what it cost.

Execution model (docs/risk.md, "aps simulate"): the live executors' own model, so that an
offline run and a live run settle every command alike.
- every command is handed at once to its chain's simulated venue (streams.executors: the
  same `SimulatedVenue` and chain profiles, infra/chains.toml, as the executors): it
  settles `settlement_ms` of event time after its creation, filled at the price it acted
  on (options: their mark) moved against the trader by base_slippage_bps +
  impact_bps_per_million * notional / 1e6, plus a fee of fee_bps of the fill's value; a
  fill beyond the command's slippage bound is REJECTED, a command that would settle after
  its deadline EXPIRED;
- its report reaches the engine just before the first observation at or after its
  settlement time (where the engine itself would release it, see "Settlement" in
  docs/risk.md);
- liquidation: after each observation, an account whose margin ratio is below 1 (equity
  below maintenance) is closed out at that observation's marks and pays a penalty of
  `liquidation_penalty` times the notional of everything it held; it takes no further
  part (its positions are zero, reports still in flight for it are dropped).
"""

from __future__ import annotations

import csv
import heapq
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from streams.clock import parse_event_time, utc
from streams.domain import (
    AccountEvent,
    CollateralChanged,
    ConsensusPrice,
    ExecutionReport,
    ExecutionStatus,
    Position,
    PositionChanged,
    PriceStatus,
    RiskInput,
    RulesChanged,
    ScalingCommand,
    ScalingRules,
)
from streams.errors import ConfigError
from streams.executors.chains import ChainProfiles, load_chain_profiles
from streams.executors.settlement import Settlement
from streams.paths import INFRA_DIR
from streams.risk.bookgen import BookAccount, account_states, strip_rules
from streams.risk.engine import EngineConfig, PartitionEngine


@dataclass(frozen=True, slots=True)
class PriceTick:
    """One observation of the path."""

    time_ms: int
    asset: str
    price: float


def default_chains() -> ChainProfiles:
    """The bundled chain profiles (infra/chains.toml)."""
    return load_chain_profiles(INFRA_DIR / "chains.toml")


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationConfig:
    """How executions and liquidations are simulated: the chains' profiles (settlement
    latency and venue costs), the liquidation penalty, the oracle band given to every path
    price, the engine's settings."""

    chains: ChainProfiles = field(default_factory=default_chains)
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
        ticks.append(PriceTick(parse_event_time(clean["timestamp"]), clean["asset"], price))
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
        self.settlement = Settlement(config.chains)
        self.result = RunResult(accounts=len(book), initial_collateral=math.fsum(
            c.balance for a in book for c in a.collateral))
        # reports in flight: (executed_at, command id, report), released in that order
        self.in_flight: list[tuple[int, str, ExecutionReport, ScalingCommand]] = []
        self.sequence: dict[str, int] = {}
        self.offset = 0
        self.dead: set[str] = set()
        self.prices: dict[str, float] = {}

    def _input(self, topic: str, body: object) -> RiskInput:
        self.offset += 1
        return RiskInput(topic, 0, self.offset, body)  # type: ignore[arg-type]

    def step(self, tick: PriceTick) -> None:
        self.prices[tick.asset] = tick.price
        self._release(tick.time_ms)
        seq = self.sequence[tick.asset] = self.sequence.get(tick.asset, 0) + 1
        conf = tick.price * self.config.confidence_bps / 1e4
        price = ConsensusPrice(tick.asset, tick.time_ms, tick.price, conf, PriceStatus.OK, 0.0,
                               ["sim"], [], [], seq)
        for command in self.engine.apply(self._input("sim.prices", price)):
            self.result.commands += 1
            key = command.reason.value
            self.result.by_reason[key] = self.result.by_reason.get(key, 0) + 1
            report = self.settlement.settle(command)
            heapq.heappush(self.in_flight, (report.executed_at, command.command_id, report,
                                            command))
        self._liquidate(tick)

    def _release(self, until: int) -> None:
        """Hand the engine every report settled at or before `until` (an account closed out
        in the meantime gets none)."""
        while self.in_flight and self.in_flight[0][0] <= until:
            _, _, report, command = heapq.heappop(self.in_flight)
            if command.account_id in self.dead:
                continue
            self._count(report, command)
            self.engine.apply(self._input("sim.reports", report))

    def _count(self, report: ExecutionReport, command: ScalingCommand) -> None:
        counter = {ExecutionStatus.FILLED: "filled", ExecutionStatus.REJECTED: "rejected",
                   ExecutionStatus.EXPIRED: "expired"}[report.status]
        setattr(self.result, counter, getattr(self.result, counter) + 1)
        if report.status is not ExecutionStatus.FILLED:
            key = f"{command.reason.value}:{report.status.value}"
            missed = self.result.not_filled_by_reason
            missed[key] = missed.get(key, 0) + 1
            return
        self.result.topped_up += report.top_up_amount
        if report.filled_quantity:
            reference = command.trigger.get("reference_price", command.provenance.price)
            quantity = abs(report.filled_quantity)
            self.result.fees += report.fee
            self.result.slippage += quantity * abs(report.fill_price - reference)

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
    baseline = run_path(ticks, strip_rules(book), config)
    with_policy = run_path(ticks, book, config) if policy else None
    return SimulationReport(
        ticks=len(ticks), assets=tuple(sorted({t.asset for t in ticks})),
        start_ms=ticks[0].time_ms if ticks else 0, end_ms=ticks[-1].time_ms if ticks else 0,
        baseline=baseline, policy=with_policy)


# --- the report ------------------------------------------------------------------------------

def _iso(ms: int) -> str:
    return utc(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        "execution: the executors' simulated venues (infra/chains.toml), settled after "
        + ", ".join(f"{chain} {ms:g} ms" for chain, ms in config.chains.settlement_ms().items())
        + f"; liquidation below margin ratio 1, penalty"
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
