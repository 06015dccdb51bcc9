"""The risk engine of one partition: a pure, deterministic function of its ordered log.

`PartitionEngine.apply` takes one `RiskInput` at a time (account events, consensus prices,
execution reports, in the partition's order) and returns the scaling commands it causes.
The Faust risk agent, the replay tool and `aps simulate` all drive this same class.

- Account events and execution reports change an account (streams.risk.account) and the
  columnar book (streams.risk.book); they never emit commands themselves: the account is
  evaluated on the next price update of an asset it holds.
- A consensus price revalues every account exposed to the asset in one vectorized pass,
  screens all of them with array comparisons, and runs the policy (streams.risk.policy)
  only on the accounts that may need a command, in account-id order. The screen has two
  stages: the first finds the accounts a rule may want to act on (figures outside a
  threshold, or commands in flight); the second values those again with their commands in
  flight counted, the way the policy's projection does, and keeps only the accounts where
  some rule could actually act now: not held back by its cooldown or the rate limit (a
  severe breach is never held back), and not a top-up step with no reserve left. It keeps
  an account the policy refuses once, the first time the account finds a rule blocked
  after its state last changed, so that the refusal is recorded.
- The accounts kept are evaluated together by `streams.risk.batch.decide_many` (the
  policy's rules with their projections vectorized; the same outcomes as `decide`), those
  it does not cover one by one by `decide`.
- With a `SharedValuations`, the option unit tables are computed once per quote for every
  engine of the process (streams.risk.valuations).
- Duplicates are dropped: account inputs by (origin topic:partition, offset) per account,
  prices by per-asset sequence.
- Settlement in event time: an execution report says when the command was executed
  (`executed_at`). A report that arrives before the partition's event time has reached
  that instant is held, and applied just before the first input at or after it (in
  (executed_at, command id) order); the engine never learns of a fill before it happened.
  A report that arrives later is applied at once. A venue that settles a command some
  time after it was sent (infra/chains.toml) therefore takes effect at the same point of
  the log whether the report travelled through Kafka in 5 ms or was handed over
  directly by an offline run.

Only event time is used: the watermark is the latest event time applied. Nothing depends
on the wall clock, on dict iteration order of inputs or on randomness, and the state a
restarted engine rebuilds from `take_dirty()` states and `market_state()` produces the same
decisions as an engine that never stopped.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from streams.domain import (
    AccountEvent,
    AccountState,
    AssetMarket,
    ConsensusPrice,
    ExecutionReport,
    Exposure,
    LadderAction,
    MarketState,
    PendingCommand,
    Position,
    PriceStatus,
    RiskInput,
    ScalingCommand,
    ScalingRules,
    Valuation,
)
from streams.errors import DomainError
from streams.risk.account import (
    MAX_PRICE,
    AccountRecord,
    Change,
    apply_event,
    apply_report,
    from_state,
    hedge_instrument,
    release_cooldown,
    to_state,
    validate_event,
    validate_report,
)
from streams.risk.batch import MIN_REDUCING, BatchStats, covered, decide_many, with_hedge
from streams.risk.book import Book, BoolArray, Columns, IntArray, Projected, Quote
from streams.risk.canonical import settings_hash
from streams.risk.margin import RATIO_CAP, FloatArray, MarginParams, StressGrid, margin_ratio
from streams.risk.policy import (
    AccountView,
    Holding,
    MarketView,
    Outcome,
    PolicyConfig,
    QuoteView,
    Refusal,
    decide,
)
from streams.risk.valuations import SharedValuations
from streams.risk.volatility import log_return, realized_vol

# a screening test is loosened by this much so that sums taken in another order can never
# hide an account the policy would act on
_SLACK = 1e-9
# the same for the second stage, whose figures are summed in yet another order
_PROJECTION_SLACK = 1e-7
# event times before and after any real one (a label that never fired; a budget that
# never frees)
_PAST = -(2**62)
_NEVER = 2**62
# a rule of one group blocked by its cooldown or the rate limit (refusal bookkeeping)
_DELTA_COOLING, _DELTA_RATE, _VOL_COOLING, _VOL_RATE, _GAMMA_COOLING, _GAMMA_RATE = (
    1 << bit for bit in range(6))
# fewer accounts evaluated at one update than this go through decide one by one (measured:
# the vectorized stages cost more than they save below about 100 accounts)
BATCH_MIN = 128
# ladder steps beyond this many cannot have a refusal bit of their own: always evaluated
_MAX_STEP_BITS = 62


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Engine-wide settings (per-account settings are the accounts' ScalingRules).

    rate: risk-free rate of the option models; margin/margin_by_asset: margin rates;
    grid: stress grid; policy: policy settings; default_vol: volatility of options without
    a mark implied volatility; default_confidence_k: adverse-edge multiplier of accounts
    without a margin ladder; vol_window_capacity: returns kept per asset;
    report_grace_ms: how long after its deadline a command still counts as in flight (an
    executor's report may be on its way); persist_ratio_step: relative fall of an account's
    lowest margin ratio that makes it dirty without any other change; max_refusals: bound
    of the refusal log between two `take_refusals` calls; max_clock_advance_ms: how far
    beyond the watermark an account event or execution report may be dated (further is
    refused as ``clock_jump``, so one record with a wrong clock cannot expire every command
    in flight or be held forever; prices move the watermark freely, their clock is guarded
    by the consensus stage).
    """

    rate: float = 0.0
    margin: MarginParams = field(default_factory=MarginParams)
    margin_by_asset: tuple[tuple[str, MarginParams], ...] = ()
    grid: StressGrid = field(default_factory=StressGrid)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    default_vol: float = 0.6
    default_confidence_k: float = 2.0
    vol_window_capacity: int = 512
    report_grace_ms: int = 10_000
    persist_ratio_step: float = 0.05
    max_refusals: int = 10_000
    max_clock_advance_ms: int = 3_600_000

    def margin_for(self, asset: str) -> MarginParams:
        """Margin rates of `asset`."""
        for name, params in self.margin_by_asset:
            if name == asset:
                return params
        return self.margin


@dataclass(frozen=True, slots=True)
class Figures:
    """An account's headline numbers: mark and adverse-edge equity, collateral, margin."""

    equity: float
    equity_adverse: float
    collateral: float
    maintenance: float
    initial: float
    margin_ratio: float


@dataclass
class _Counters:
    """What the engine did, for metrics.

    `evaluations` counts runs of the policy; `screened_out` the accounts the first stage
    of the screen let through and the second proved could not act; `revaluations` the
    accounts whose figures a price update recomputed.
    """

    prices: int = 0
    revaluations: int = 0
    duplicates: int = 0
    events: int = 0
    reports: int = 0
    ignored_reports: int = 0
    evaluations: int = 0
    commands: int = 0
    expired: int = 0
    screened_out: int = 0
    refusals_dropped: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class PartitionEngine:
    """Pure, deterministic risk engine for the accounts of one Kafka partition."""

    def __init__(self, config: EngineConfig = EngineConfig(),
                 states: Iterable[AccountState] = (), market: MarketState | None = None, *,
                 valuations: SharedValuations | None = None, fast_policy: bool = True,
                 batch_min: int = BATCH_MIN) -> None:
        """`valuations`: option unit tables shared with the other engines of the process
        (each distinct option valued once per quote for all of them); `fast_policy`: run
        the policy on the accounts it covers with `decide_many` (vectorized projections)
        instead of `decide` one account at a time, when at least `batch_min` accounts are
        evaluated at one update (below that numpy's per-call overhead costs more than it
        saves). Decisions are the same either way."""
        self.config = config
        # in every command's provenance (streams.risk.settings.engine_config_hash)
        self.config_hash = settings_hash(config)
        self.book = Book(config.grid, config.rate)
        self.book.default_vol = config.default_vol
        self.book.valuations = valuations
        self._fast_policy = fast_policy
        self._batch_min = batch_min
        self.batch_stats = BatchStats()
        self.counters = _Counters()
        self._records: list[AccountRecord] = []
        self._index: dict[str, int] = {}
        self._market: dict[str, AssetMarket] = {}
        self._watermark = 0
        self._held: list[tuple[int, str, str, int, int, RiskInput]] = []
        self._market_changed = True
        self._assets_changed: set[str] = set()
        self._dirty: set[str] = set()
        self._value_dirty: set[int] = set()
        self._changed: set[int] = set()
        self._deadlines: list[tuple[int, str, str]] = []
        self._refusals: list[Refusal] = []
        self._rules = Columns({
            "ladder_top": np.float64, "has_delta": np.bool_, "delta_target": np.float64,
            "delta_threshold": np.float64, "has_vol": np.bool_, "vol_target": np.float64,
            "min_scale": np.float64, "max_gamma": np.float64, "vol_window": np.int64,
            "pending": np.int64, "min_ratio": np.float64, "persisted_min": np.float64,
            "breached": np.bool_, "valued": np.bool_,
            # second stage of the screen (see _refresh_guards)
            "has_rules": np.bool_, "ladder_bottom": np.float64, "delta_hard": np.float64,
            "top_up": np.float64, "no_reserve": np.bool_, "phantom": np.bool_,
            "rate_free_at": np.int64, "refused": np.int64, "guard_stale": np.bool_,
            "projected_ratio": np.float64, "projected_unsure": np.bool_,
            "projected_fresh": np.bool_, "marked_dirty": np.bool_,
        })
        self._ladder_steps: dict[str, tuple[list[float], list[bool]]] = {}
        self._asset_labels: dict[str, tuple[str, str, str]] = {}
        self._rank: IntArray | None = None
        self._ladders = _Ladders()
        self._group_guard = Columns({
            "delta_cool": np.int64, "vol_cool": np.int64, "gamma_cool": np.int64,
            "refused": np.int64,
        })
        if market is not None:
            self._watermark = market.watermark
            self._assets_changed.update(entry.asset for entry in market.assets)
            for held in market.held_reports:
                self._hold(held)
            for entry in market.assets:
                self._market[entry.asset] = entry
        for state in sorted(states, key=lambda s: s.account_id):
            self._restore(state)

    # --- public API ------------------------------------------------------------------------

    def apply(self, item: RiskInput) -> list[ScalingCommand]:
        """Apply one entry of the partition's log; return the commands it causes, in order.

        Raises DomainError (with a machine-readable reason) for input the engine refuses;
        nothing has changed then.
        """
        body = item.body
        if isinstance(body, ConsensusPrice):
            _validate_price(body)
            self._release_reports(body.event_time)
            return self._apply_price(body)
        if isinstance(body, AccountEvent):
            validate_event(body)
            self._check_clock("account event", body.event_time)
            self._release_reports(body.event_time)
            self._apply_event(item, body)
            return []
        if isinstance(body, ExecutionReport):
            validate_report(body)
            self._check_clock("execution report", body.executed_at)
            if body.executed_at > self._watermark:
                self._hold(item)
            else:
                self._apply_report(item, body)
            return []
        raise DomainError("unknown_input", f"risk input body {type(body).__name__}")

    def take_dirty(self) -> list[AccountState]:
        """States changed since the last call, sorted by account id."""
        ids = sorted(self._dirty)
        self._dirty.clear()
        self._rules["marked_dirty"][: len(self._records)] = False
        out = []
        for account_id in ids:
            index = self._index[account_id]
            out.append(self._materialize(index))
            self._rules["persisted_min"][index] = self._rules["min_ratio"][index]
        return out

    def market_state(self) -> MarketState:
        """Last quote, sequence and return window of every asset, the watermark, and the
        reports held until their settlement time."""
        return MarketState(self._watermark, [self._market[a] for a in sorted(self._market)],
                           [entry[-1] for entry in sorted(self._held, key=_held_order)])

    def take_market_state(self) -> MarketState | None:
        """What changed in `market_state()` since the last call, None if nothing did: the
        watermark and held reports, with only the assets whose quote changed (merge with
        the assets persisted before to get the whole state)."""
        if not self._market_changed:
            return None
        self._market_changed = False
        changed = sorted(self._assets_changed)
        self._assets_changed.clear()
        return MarketState(self._watermark, [self._market[a] for a in changed],
                           [entry[-1] for entry in sorted(self._held, key=_held_order)])

    def held_reports(self) -> int:
        """Execution reports received and not yet applied (waiting for their settlement)."""
        return len(self._held)

    def state(self, account_id: str) -> AccountState | None:
        """Current state of one account (None if unknown)."""
        index = self._index.get(account_id)
        return None if index is None else self._materialize(index)

    def accounts(self) -> Iterable[AccountState]:
        """Current state of every account, by account id."""
        for account_id in sorted(self._index):
            yield self._materialize(self._index[account_id])

    def position(self, account_id: str, position_id: str) -> Position | None:
        """One position of an account, without materializing the whole state."""
        index = self._index.get(account_id)
        return None if index is None else self._records[index].positions.get(position_id)

    def pending_command(self, account_id: str, command_id: str) -> PendingCommand | None:
        """A command of an account still in flight."""
        index = self._index.get(account_id)
        return None if index is None else self._records[index].pending.get(command_id)

    def figures(self, account_id: str) -> Figures | None:
        """The account's latest figures (as of the last price update)."""
        index = self._index.get(account_id)
        if index is None:
            return None
        a = self.book.accounts
        return Figures(float(a["equity"][index]), float(a["equity_adverse"][index]),
                       float(a["collateral"][index]), float(a["mm"][index]),
                       float(a["im"][index]), float(a["ratio"][index]))

    def accounts_below(self, ratio: float) -> list[str]:
        """Ids of valued accounts whose margin ratio is below `ratio`, sorted."""
        n = len(self._records)
        below = np.flatnonzero((self.book.accounts["ratio"][:n] < ratio)
                               & self._rules["valued"][:n])
        return sorted(self._records[int(i)].account_id for i in below)

    def total_equity(self) -> float:
        """Sum of every account's mark equity, USD."""
        return math.fsum(self.book.accounts["equity"][: len(self._records)])

    def take_refusals(self) -> list[Refusal]:
        """Decisions a rule wanted and did not take since the last call (audit, metrics)."""
        out, self._refusals = self._refusals, []
        return out

    @property
    def watermark(self) -> int:
        """Latest event time applied, epoch ms."""
        return self._watermark

    # --- accounts --------------------------------------------------------------------------

    def _record(self, account_id: str,
                restored: AccountRecord | None = None) -> tuple[AccountRecord, int]:
        index = self._index.get(account_id)
        if index is not None:
            return self._records[index], index
        record = restored or AccountRecord(account_id)
        index = self.book.add_account(self.config.default_confidence_k)
        assert index == len(self._records)
        self._records.append(record)
        self._index[account_id] = index
        row = self._rules.append()
        assert row == index
        self._rules["ladder_top"][index] = -math.inf
        self._rules["ladder_bottom"][index] = -math.inf
        self._rules["rate_free_at"][index] = _PAST
        self._ladders.ensure(index, 1)
        self._rules["min_ratio"][index] = RATIO_CAP
        self._rules["persisted_min"][index] = RATIO_CAP
        return record, index

    def _restore(self, state: AccountState) -> None:
        if state.account_id in self._index:
            raise DomainError("duplicate_state", f"two states for account {state.account_id}")
        restored, index = self._record(state.account_id, from_state(state))
        self._rules["min_ratio"][index] = restored.min_margin_ratio
        self._rules["persisted_min"][index] = restored.min_margin_ratio
        self._rules["breached"][index] = restored.breached_maintenance
        self._sync(restored, index, Change(positions=tuple(restored.positions),
                                           collateral=True, rules=True))
        for pending in restored.pending.values():
            self._schedule_expiry(restored, pending)
        self._count_pending(index)

    def _origin(self, item: RiskInput) -> str:
        return f"{item.origin_topic}:{item.origin_partition}"

    def _is_duplicate(self, record: AccountRecord | None, item: RiskInput) -> bool:
        if record is None:
            return False
        last = record.origin_offsets.get(self._origin(item))
        return last is not None and item.origin_offset <= last

    def _check_clock(self, what: str, event_time: int) -> None:
        limit = self.config.max_clock_advance_ms
        if self._watermark > 0 and event_time > self._watermark + limit:
            raise DomainError("clock_jump", f"{what} at {event_time} is "
                              f"{event_time - self._watermark} ms after the partition's event "
                              f"time (at most {limit} ms)")

    def _hold(self, item: RiskInput) -> None:
        report = item.body
        assert isinstance(report, ExecutionReport)
        heapq.heappush(self._held, (report.executed_at, report.command_id, item.origin_topic,
                                    item.origin_partition, item.origin_offset, item))
        self._market_changed = True

    def _release_reports(self, until: int) -> None:
        """Apply the held reports executed at or before event time `until`, in order."""
        while self._held and self._held[0][0] <= until:
            item = heapq.heappop(self._held)[-1]
            assert isinstance(item.body, ExecutionReport)
            self._apply_report(item, item.body)
            self._market_changed = True

    def _apply_event(self, item: RiskInput, event: AccountEvent) -> None:
        existing = self._index.get(event.account_id)
        if self._is_duplicate(None if existing is None else self._records[existing], item):
            self.counters.duplicates += 1
            return
        record, index = self._record(event.account_id)
        change = apply_event(record, event)
        self._applied(record, item, event.event_time)
        self._sync(record, index, change)
        self.counters.events += 1

    def _apply_report(self, item: RiskInput, report: ExecutionReport) -> None:
        index = self._index.get(report.account_id)
        if index is None:
            self.counters.ignored_reports += 1
            return
        record = self._records[index]
        if self._is_duplicate(record, item):
            self.counters.duplicates += 1
            return
        change = apply_report(record, report)
        if change is None:
            self.counters.ignored_reports += 1
            return
        self._count_pending(index)
        self._applied(record, item, report.executed_at)
        self._sync(record, index, change)
        self.counters.reports += 1

    def _applied(self, record: AccountRecord, item: RiskInput, event_time: int) -> None:
        record.origin_offsets[self._origin(item)] = item.origin_offset
        record.version += 1
        record.last_event_time = max(record.last_event_time, event_time)
        if event_time > self._watermark:
            self._watermark = event_time
            self._market_changed = True
        self._dirty.add(record.account_id)

    def _sync(self, record: AccountRecord, index: int, change: Change) -> None:
        """Bring the book in line with the record after `change`."""
        book = self.book
        for pid in change.removed:
            row = book.row_of.get((index, pid))
            if row is not None:
                book.remove(index, pid)
        for pid in change.positions:
            position = record.positions[pid]
            inst = position.instrument
            asset = book.asset(inst.underlying, self.config.margin_for(inst.underlying))
            base = record.base_quantities.get(pid, 0.0)
            row = book.row_of.get((index, pid))
            same = (row is not None and book.row_instruments[row] == inst
                    and int(book.rows["asset"][row]) == asset
                    and book.rows["vol"][row] == (position.implied_vol
                                                  if position.implied_vol is not None
                                                  else self.config.default_vol))
            if same:
                assert row is not None
                book.set_quantity(row, position.quantity, position.entry_price, base)
                self._value_dirty.add(asset)
            else:
                book.upsert(index, position, asset, base)
        if change.collateral:
            book.set_collateral(index, record.collateral_total())
        if change.rules:
            self._set_rules(index, record.rules)
        if change.removed:
            book.maybe_compact()
        self._changed.add(index)
        self._rules["guard_stale"][index] = True

    def _set_rules(self, index: int, rules: ScalingRules | None) -> None:
        cols = self._rules
        ladder = rules.margin_ladder if rules else None
        band = rules.delta_band if rules else None
        vol = rules.vol_scaling if rules else None
        cols["has_rules"][index] = rules is not None
        cols["ladder_top"][index] = max(s.margin_ratio for s in ladder.steps) if ladder \
            else -math.inf
        cols["ladder_bottom"][index] = min(s.margin_ratio for s in ladder.steps) if ladder \
            else -math.inf
        cols["has_delta"][index] = band is not None
        cols["delta_target"][index] = band.target if band else 0.0
        cols["delta_threshold"][index] = band.band * (1 + band.hysteresis) if band else 0.0
        cols["delta_hard"][index] = band.hard_limit if band else 0.0
        cols["has_vol"][index] = vol is not None
        cols["vol_target"][index] = vol.vol_target if vol else 0.0
        cols["min_scale"][index] = vol.min_scale if vol else 1.0
        cols["max_gamma"][index] = vol.max_gamma if vol else math.inf
        cols["vol_window"][index] = vol.window if vol else 0
        k = ladder.confidence_k if ladder else self.config.default_confidence_k
        self.book.set_k(index, k)

    def _count_pending(self, index: int) -> None:
        self._rules["pending"][index] = len(self._records[index].pending)

    def _schedule_expiry(self, record: AccountRecord, pending: PendingCommand) -> None:
        heapq.heappush(self._deadlines, (pending.deadline + self.config.report_grace_ms,
                                         pending.command_id, record.account_id))

    def _expire(self) -> None:
        """Drop in-flight commands whose deadline (plus the report grace) has passed."""
        while self._deadlines and self._deadlines[0][0] < self._watermark:
            _, command_id, account_id = heapq.heappop(self._deadlines)
            index = self._index[account_id]
            record = self._records[index]
            pending = record.pending.pop(command_id, None)
            if pending is None:
                continue
            release_cooldown(record, pending)
            self._count_pending(index)
            self._rules["guard_stale"][index] = True
            self._dirty.add(account_id)
            self.counters.expired += 1

    # --- prices ----------------------------------------------------------------------------

    def _apply_price(self, price: ConsensusPrice) -> list[ScalingCommand]:
        previous = self._market.get(price.asset)
        if previous is not None and price.sequence <= previous.sequence:
            self.counters.duplicates += 1
            return []
        entry = self._next_market(previous, price)
        self._market[price.asset] = entry
        self._market_changed = True
        self._assets_changed.add(price.asset)
        self._watermark = max(self._watermark, price.event_time)
        self.counters.prices += 1
        self._expire()
        if entry.price <= 0:
            return []
        asset = self.book.asset(price.asset, self.config.margin_for(price.asset))
        revalued = self._revalue(asset)
        touched = self.book.caches[asset].accounts
        self.counters.revaluations += len(revalued)
        self._track_ratios(revalued)
        candidates = self._screen(asset, touched)
        # the policy's clock is the event time of the asset's trusted quote (a HALTED price
        # keeps the last one)
        candidates = self._refine(candidates, asset, entry.event_time)
        return self._evaluate(candidates, price.asset, price.event_time)

    def _next_market(self, previous: AssetMarket | None, price: ConsensusPrice) -> AssetMarket:
        common = {"status": price.status, "sequence": price.sequence,
                  "sources": list(price.sources_used),
                  "unhealthy_chains": sorted(price.unhealthy_chains)}
        valid = math.isfinite(price.price) and price.price > 0
        if price.status is PriceStatus.HALTED:
            if previous is None or previous.price <= 0:
                return AssetMarket(price.asset, price.price if valid else 0.0,
                                   price.confidence, event_time=price.event_time, **common)
            # no trusted price: keep the last mark, and widen its band to cover the
            # untrusted candidate, so margin is computed on the worse side of both
            wider = previous.confidence
            if valid:
                wider = max(wider, abs(price.price - previous.price) + price.confidence)
            return replace(previous, confidence=wider, **common)
        returns, intervals = list(previous.returns) if previous else [], \
            list(previous.return_intervals_ms) if previous else []
        if previous is not None and previous.price > 0:
            cap = self.config.vol_window_capacity
            returns = [*returns, log_return(previous.price, price.price)][-cap:]
            intervals = [*intervals, max(0, price.event_time - previous.event_time)][-cap:]
        return AssetMarket(price.asset, price.price, price.confidence,
                           event_time=price.event_time, returns=returns,
                           return_intervals_ms=intervals, **common)

    def _quote(self, asset: int) -> Quote | None:
        entry = self._market.get(self.book.asset_names[asset])
        if entry is None or entry.price <= 0:
            return None
        return Quote(entry.price, entry.confidence, entry.event_time)

    def _revalue(self, asset: int) -> IntArray:
        """Revalue `asset` and every asset whose rows changed since its last revaluation;
        return the accounts whose figures may have moved."""
        todo = {asset, *self.book.stale_assets(), *self._value_dirty}
        self._value_dirty.clear()
        parts = []
        if self._changed:
            parts.append(np.fromiter(self._changed, dtype=np.int64, count=len(self._changed)))
            self._changed.clear()
        for code in sorted(todo, key=lambda c: self.book.asset_names[c]):
            quote = self._quote(code)
            if quote is not None:
                parts.append(self.book.revalue(code, quote))
        self.book.refresh_totals()
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(parts))

    def _track_ratios(self, accounts: IntArray) -> None:
        """Lowest margin ratio and maintenance breaches at the mark price (where a venue
        liquidates; the policy itself acts on the adverse edge of the oracle band); dirty
        accounts that moved enough."""
        if len(accounts) == 0:
            return
        cols = self._rules
        book = self.book.accounts
        ratio = margin_ratio(book["equity"][accounts], book["mm"][accounts])
        cols["valued"][accounts] = True
        cols["projected_fresh"][accounts] = False
        lowest = np.minimum(cols["min_ratio"][accounts], ratio)
        breach = ratio < 1.0
        step = 1.0 - self.config.persist_ratio_step
        persisted = cols["persisted_min"][accounts]
        moved = (lowest < np.where(persisted > 0, persisted * step, persisted / step)) | (
            breach & ~cols["breached"][accounts])
        cols["min_ratio"][accounts] = lowest
        cols["breached"][accounts] |= breach
        fresh = accounts[moved & ~cols["marked_dirty"][accounts]]
        cols["marked_dirty"][fresh] = True
        for index in fresh:
            self._dirty.add(self._records[int(index)].account_id)

    def _screen(self, asset: int, touched: IntArray) -> list[int]:
        """Accounts that may need a command after a price update of `asset`."""
        cols = self._rules
        book = self.book
        parts = [touched[book.accounts["ratio"][touched]
                         < cols["ladder_top"][touched] * (1 + _SLACK)]]
        groups = book.caches[asset].groups
        owners = book.groups["account"][groups]
        g = book.groups
        drift = np.abs(g["delta"][groups] - cols["delta_target"][owners])
        parts.append(owners[cols["has_delta"][owners]
                            & (drift > cols["delta_threshold"][owners] * (1 - _SLACK))])
        with_vol = cols["has_vol"][owners] & (g["option_base"][groups] > 0)
        if with_vol.any():
            parts.append(self._screen_vol(asset, groups[with_vol], owners[with_vol]))
        parts.append(np.flatnonzero(cols["pending"][: len(self._records)] > 0))
        candidates = np.unique(np.concatenate(parts))
        keep = candidates[cols["has_rules"][candidates]]
        return keep[np.argsort(self._id_rank()[keep], kind="stable")].tolist()

    def _id_rank(self) -> IntArray:
        """Each account's position in account-id order (recomputed after new accounts)."""
        if self._rank is None or len(self._rank) != len(self._records):
            ids = [record.account_id for record in self._records]
            order = sorted(range(len(ids)), key=ids.__getitem__)
            rank = np.empty(len(ids), dtype=np.int64)
            rank[order] = np.arange(len(ids))
            self._rank = rank
        return self._rank

    def _screen_vol(self, asset: int, groups: IntArray, owners: IntArray) -> IntArray:
        cols = self._rules
        g = self.book.groups
        vega = g["vega_abs"][groups]
        implied = np.where(vega > 0, g["vega_vol"][groups] / np.where(vega > 0, vega, 1.0), 0.0)
        realized = np.zeros(len(groups))
        windows = cols["vol_window"][owners]
        name = self.book.asset_names[asset]
        for window in np.unique(windows):
            rv = self._realized(name, int(window))
            realized[windows == window] = rv if rv is not None else 0.0
        vol = np.maximum(implied, realized)
        wanted = np.clip(cols["vol_target"][owners] / np.where(vol > 0, vol, 1.0),
                         cols["min_scale"][owners], 1.0)
        scale = g["option_abs"][groups] / g["option_base"][groups]
        tolerance = self.config.policy.vol_scale_tolerance
        loose = tolerance * (1 - _SLACK)
        calm = cols["vol_target"][owners] >= vol * (1.0 + loose)
        off = (vol > 0) & ((scale - wanted > loose) | (calm & (scale < 1.0 - loose)))
        gamma = np.abs(g["gamma"][groups]) > cols["max_gamma"][owners] * (1 - _SLACK)
        return owners[off | gamma]

    def _realized(self, asset: str, window: int) -> float | None:
        entry = self._market.get(asset)
        if entry is None:
            return None
        return realized_vol(entry.returns, entry.return_intervals_ms, window,
                            self.config.policy.min_vol_observations)

    # --- second stage of the screen ----------------------------------------------------------

    def _refresh_guards(self, indices: Sequence[int]) -> None:
        """Recompute what the second stage of the screen knows about accounts whose state
        changed (done when they are next screened): quantities and top-ups in flight,
        cooldown ends of their rule labels, when their rate budget frees, and whether they
        have reserve left to top up from.

        Also forgets which blocked rules they were refused for: after a change, a blocked
        rule is recorded again (the first time it is blocked). Each account's figures are
        its own; the arrays are written once for all of them.
        """
        if not len(indices):
            return
        cols = self._rules
        book = self.book
        guard = self._group_guard
        guard.extend_to(book.groups.size)
        row_ids, group_asset, names = book.row_ids, book.groups.cols["asset"], book.asset_names
        labels = self._labels
        flight_rows: list[int] = []
        flight: list[float] = []
        phantom: list[bool] = []
        top_up: list[float] = []
        no_reserve: list[bool] = []
        ruled: list[int] = []
        rate_free: list[int] = []
        groups: list[int] = []
        cools: list[tuple[int, int, int]] = []
        ladder_rows: list[int] = []
        ladder_steps: list[tuple[list[float], list[bool], list[int]]] = []
        for index in indices:
            record = self._records[index]
            in_flight: dict[str, float] = {}
            top_ups: dict[str, float] = {}
            ghost = False
            for pending in record.pending.values():
                pid = pending.position_id
                if pid is not None:
                    in_flight[pid] = in_flight.get(pid, 0.0) + pending.quantity
                    ghost = ghost or pid not in record.positions
                elif pending.amount > 0:
                    top_ups[pending.chain] = top_ups.get(pending.chain, 0.0) + pending.amount
            for row in book.active_rows(index):
                flight_rows.append(row)
                flight.append(in_flight.get(row_ids[row], 0.0))
            phantom.append(ghost)
            top_up.append(math.fsum(top_ups.values()))
            no_reserve.append(all(c.reserve - top_ups.get(chain, 0.0) <= 0
                                  for chain, c in record.collateral.items()))
            rules = record.rules
            ladder_rows.append(index)
            if rules is None:
                ladder_steps.append(([], [], []))
                continue
            limits = rules.limits
            last = record.last_fired
            cooldown = limits.cooldown_ms
            for group in book.account_groups[index]:
                delta, vol, gamma = labels(names[int(group_asset[group])])
                groups.append(group)
                cools.append((_cooling_until(last, delta, cooldown),
                              _cooling_until(last, vol, cooldown),
                              _cooling_until(last, gamma, cooldown)))
            ratios, top_ups_at = self._steps(record.rules_hash, rules)
            ladder_steps.append((ratios, top_ups_at,
                                 [_cooling_until(last, label, cooldown)
                                  for label in _ladder_labels(len(ratios))]))
            ruled.append(index)
            rate_free.append(_rate_free_at(record.recent_commands, limits.max_commands,
                                           limits.rate_window_ms))
        at = np.asarray(indices, dtype=np.int64)
        cols["guard_stale"][at] = False
        cols["projected_fresh"][at] = False
        book.rows["flight"][np.asarray(flight_rows, dtype=np.int64)] = flight
        cols["phantom"][at] = phantom
        cols["top_up"][at] = top_up
        cols["no_reserve"][at] = no_reserve
        cols["refused"][at] = 0
        if groups:
            where = np.asarray(groups, dtype=np.int64)
            table = np.asarray(cools, dtype=np.int64)
            guard["delta_cool"][where] = table[:, 0]
            guard["vol_cool"][where] = table[:, 1]
            guard["gamma_cool"][where] = table[:, 2]
            guard["refused"][where] = 0
        self._ladders.set_many(ladder_rows, ladder_steps)
        if ruled:
            cols["rate_free_at"][np.asarray(ruled, dtype=np.int64)] = rate_free

    def _labels(self, asset: str) -> tuple[str, str, str]:
        """The delta band, volatility scaling and gamma bound labels of `asset`."""
        labels = self._asset_labels.get(asset)
        if labels is None:
            labels = self._asset_labels[asset] = (f"delta_band:{asset}",
                                                  f"vol_scaling:{asset}",
                                                  f"gamma_bound:{asset}")
        return labels

    def _steps(self, rules_hash: str, rules: ScalingRules) -> tuple[list[float], list[bool]]:
        """Ladder step ratios and top-up flags in the policy's order (highest ratio first,
        stable: the order of the labels `margin_ladder[i]`)."""
        cached = self._ladder_steps.get(rules_hash)
        if cached is None:
            ladder = rules.margin_ladder
            steps = sorted(ladder.steps, key=lambda s: -s.margin_ratio) if ladder else []
            cached = ([s.margin_ratio for s in steps],
                      [s.action is LadderAction.TOP_UP for s in steps])
            self._ladder_steps[rules_hash] = cached
        return cached

    def _refine(self, candidates: list[int], asset: int, now: int) -> list[int]:
        """Of the first stage's candidates (in order), those that may emit a command at
        event time `now`, plus those meeting a blocked rule for the first time.

        Why leaving the others out changes no decision: an evaluation that emits no
        command changes nothing but the refusal log. The policy plans on its projection
        (quantities and top-ups in flight included), which `Book.project` reproduces up to
        rounding, and every comparison here is loosened so that rounding can only keep an
        account. The margin ladder plans nothing when no step is breached, when the deepest
        breached step is cooling down and the breach is not severe (checked before any
        plan), or when that step is a top-up with no reserve left; then the delta band,
        volatility scaling and gamma bound see the projection unchanged, and each plans
        nothing unless it wants to and is not cooling down; a non-severe plan is dropped
        when the rate budget is spent. `now` is the policy's clock (the trigger quote's
        event time).
        """
        if not candidates:
            return candidates
        accounts = np.array(candidates, dtype=np.int64)
        cols = self._rules
        self._refresh_guards(accounts[cols["guard_stale"][accounts]].tolist())
        # accounts whose figures did not move since they were last projected (they hold
        # no asset revalued since, and their state is the same) keep their projected ratio
        todo = np.flatnonzero(~cols["projected_fresh"][accounts])
        projected = self.book.project(accounts[todo], cols["top_up"][accounts[todo]])
        fresh = accounts[todo]
        cols["projected_ratio"][fresh] = projected.ratio
        cols["projected_unsure"][fresh] = projected.unsure
        cols["projected_fresh"][fresh] = True
        go, margin_bits = self._margin_screen(accounts, cols["projected_ratio"][accounts], now)
        go |= cols["phantom"][accounts] | cols["projected_unsure"][accounts]
        # every account holding the updated asset was revalued, hence projected just now
        mine = projected.asset == asset
        owner = todo[projected.owner[mine]]
        groups = projected.groups[mine]
        group_go, group_bits = self._rule_screen(accounts[owner], groups, projected, mine, now)
        go[owner[group_go]] = True
        # a blocked rule not refused since the account last changed: evaluate it once
        refused = cols["refused"][accounts]
        go |= (margin_bits & ~refused) != 0
        cols["refused"][accounts] = refused | margin_bits
        guard = self._group_guard["refused"]
        go[owner[(group_bits & ~guard[groups]) != 0]] = True
        guard[groups] |= group_bits
        self.counters.screened_out += len(candidates) - int(go.sum())
        return [candidates[i] for i in np.flatnonzero(go)]

    def _margin_screen(self, accounts: IntArray, ratio: FloatArray,
                       now: int) -> tuple[BoolArray, IntArray]:
        """Accounts whose margin ladder may act (and the bit of the step blocked by its
        cooldown), from their projected margin ratios.

        The ladder acts when the ratio is below a step, unless the deepest breached step is
        cooling down and the breach is not severe (below the last step), or that step is a
        top-up and there is no reserve left. A ratio within rounding of a step could be on
        either side: such an account is always kept.
        """
        steps = self._ladders.ratio[accounts]
        valid = np.isfinite(steps)
        r = ratio[:, None]
        near = (valid & (np.abs(r - steps)
                         <= _PROJECTION_SLACK * np.maximum(np.abs(steps), np.abs(r)))).any(axis=1)
        breached = (valid & (r < steps)).sum(axis=1)
        wants = breached > 0
        deepest = np.maximum(breached - 1, 0)
        cooling = now < self._ladders.cool_until[accounts, deepest]
        empty_top_up = self._ladders.top_up[accounts, deepest] & self._rules["no_reserve"][accounts]
        severe = ratio < self._rules["ladder_bottom"][accounts]
        many = deepest >= _MAX_STEP_BITS
        go = near | many | (wants & ~empty_top_up & (severe | ~cooling))
        blocked = wants & ~near & ~many & ~severe & cooling
        bits = np.where(blocked, np.left_shift(1, np.minimum(deepest, _MAX_STEP_BITS)), 0)
        return go, bits.astype(np.int64)

    def _rule_screen(self, accounts: IntArray, groups: IntArray, projected: Projected,
                     mine: BoolArray, now: int) -> tuple[BoolArray, IntArray]:
        """Groups of the updated asset where the delta band, volatility scaling or gamma
        bound may act (and the bits of the rules held back), from projected figures.

        A rule acts when it wants to and neither its cooldown nor the rate budget holds it
        back; a severe delta drift (beyond the hard limit) is never held back. When the
        margin ladder does not act it changes nothing these rules see.
        """
        cols = self._rules
        guard = self._group_guard
        tol = _PROJECTION_SLACK
        budget = now >= cols["rate_free_at"][accounts]

        def held(wants: BoolArray, cooling: BoolArray, cool_bit: int,
                 rate_bit: int) -> IntArray:
            return (np.where(wants & cooling, cool_bit, 0)
                    | np.where(wants & ~cooling & ~budget, rate_bit, 0))

        drift = np.abs(projected.delta[mine] - cols["delta_target"][accounts])
        delta_wants = cols["has_delta"][accounts] & (
            drift > cols["delta_threshold"][accounts] * (1 - tol))
        severe = drift > cols["delta_hard"][accounts] * (1 - tol)
        delta_cooling = now < guard["delta_cool"][groups]
        go = delta_wants & (severe | (~delta_cooling & budget))
        bits = held(delta_wants & ~severe, delta_cooling, _DELTA_COOLING, _DELTA_RATE)

        has_vol = cols["has_vol"][accounts]
        vol_wants = has_vol & self._vol_off(accounts, groups, projected, mine)
        vol_cooling = now < guard["vol_cool"][groups]
        gamma_wants = has_vol & (np.abs(projected.gamma[mine])
                                 > cols["max_gamma"][accounts] * (1 - tol))
        gamma_cooling = now < guard["gamma_cool"][groups]
        go |= (vol_wants & ~vol_cooling & budget) | (gamma_wants & ~gamma_cooling & budget)
        bits |= held(vol_wants, vol_cooling, _VOL_COOLING, _VOL_RATE)
        bits |= held(gamma_wants, gamma_cooling, _GAMMA_COOLING, _GAMMA_RATE)
        return go, bits.astype(np.int64)

    def _vol_off(self, accounts: IntArray, groups: IntArray, projected: Projected,
                 mine: BoolArray) -> BoolArray:
        """Groups whose option book is off the volatility target by more than the
        tolerance (either way), on projected quantities (loosely: a superset)."""
        cols = self._rules
        base = self.book.groups["option_base"][groups]
        vega = projected.vega_abs[mine]
        implied = np.where(vega > 0, projected.vega_vol[mine] / np.where(vega > 0, vega, 1.0),
                           0.0)
        realized = np.zeros(len(groups))
        windows = cols["vol_window"][accounts]
        name = self.book.asset_names[int(projected.asset[mine][0])] if len(groups) else ""
        with_vol = cols["has_vol"][accounts]
        for window in np.unique(windows[with_vol]):
            rv = self._realized(name, int(window))
            realized[with_vol & (windows == window)] = rv if rv is not None else 0.0
        vol = np.maximum(implied, realized)
        target = cols["vol_target"][accounts]
        wanted = np.clip(target / np.where(vol > 0, vol, 1.0), cols["min_scale"][accounts], 1.0)
        scale = projected.option_abs[mine] / np.where(base > 0, base, 1.0)
        tolerance = self.config.policy.vol_scale_tolerance
        loose = tolerance * (1 - _PROJECTION_SLACK)
        calm = target * (1 + _PROJECTION_SLACK) >= vol * (1.0 + tolerance)
        return (base > 0) & ((scale - wanted > loose) | (calm & (scale < 1.0 - loose)))

    # --- policy ----------------------------------------------------------------------------

    def _market_view(self, trigger: str) -> MarketView:
        quotes = {
            name: QuoteView(name, e.price, e.confidence, e.status, e.event_time, e.sequence,
                            tuple(e.sources))
            for name, e in self._market.items() if e.price > 0
        }
        unhealthy = frozenset(c for e in self._market.values() for c in e.unhealthy_chains)
        return MarketView(quotes, unhealthy, self._realized, quotes[trigger])

    def _view(self, index: int, quotes: Mapping[str, QuoteView]) -> AccountView | None:
        record = self._records[index]
        if record.rules is None:
            return None
        in_flight: dict[str, float] = {}
        top_ups: dict[str, float] = {}
        for pending in record.pending.values():
            if pending.position_id is not None:
                in_flight[pending.position_id] = in_flight.get(pending.position_id, 0.0) \
                    + pending.quantity
            elif pending.amount > 0:
                top_ups[pending.chain] = top_ups.get(pending.chain, 0.0) + pending.amount
        holdings = []
        book = self.book
        row_ids, positions, bases = book.row_ids, record.positions, record.base_quantities
        unit_of, caches, codes = book.rows.cols["unit"], book.caches, book.asset_code
        default_vol = self.config.default_vol
        for row in book.active_rows(index):
            pid = row_ids[row]
            position = positions[pid]
            inst = position.instrument
            if inst.underlying not in quotes:
                continue
            # Book.unit_row, inlined (an option row's unit in its asset's table)
            unit = caches[codes[inst.underlying]].units[int(unit_of[row])] \
                if inst.is_option else None
            vol = position.implied_vol if position.implied_vol is not None else default_vol
            holdings.append(Holding(pid, inst, position.quantity + in_flight.pop(pid, 0.0),
                                    bases.get(pid, 0.0), vol, unit))
        for pending in record.pending.values():
            pid = pending.position_id
            if pid is None or pid not in in_flight:
                continue
            inst = hedge_instrument(pending.instrument_id or "", pending.chain)
            if inst.underlying in quotes:
                holdings.append(Holding(pid, inst, in_flight.pop(pid), 0.0, 0.0, None,
                                        exists=False))
        reserves = {chain: c.reserve - top_ups.get(chain, 0.0)
                    for chain, c in record.collateral.items()}
        return AccountView(
            account_id=record.account_id, version=record.version, rules=record.rules,
            rules_hash=record.rules_hash, holdings=tuple(holdings),
            equity_mark=float(book.accounts["equity"][index]),
            pending_top_up=math.fsum(top_ups.values()), reserves=reserves,
            k=float(book.accounts["k"][index]), first_chain=record.first_chain(),
            last_fired=record.last_fired, recent_commands=record.recent_commands,
            config_hash=self.config_hash)

    def _evaluate(self, candidates: list[int], trigger: str, now: int) -> list[ScalingCommand]:
        """Run the policy on `candidates` (in order): the accounts `decide_many` covers
        together, the others one by one with `decide`; same outcomes either way."""
        if not candidates:
            return []
        market = self._market_view(trigger)
        views: list[tuple[int, AccountView]] = []
        for index in candidates:
            view = self._view(index, market.quotes)
            if view is None or not view.holdings:
                continue
            self.counters.evaluations += 1
            views.append((index, view))
        policy, params, grid = self.config.policy, self.config.margin_for, self.config.grid
        together: dict[int, Outcome] = {}
        if self._fast_policy and len(views) >= self._batch_min:
            covered_views = [(index, view) for index, view in views
                             if covered(view, trigger, market)]
            outcomes = decide_many([with_hedge(view, policy, trigger)
                                    for _, view in covered_views],
                                   market, policy, params, grid, trigger, self.batch_stats,
                                   min(self._batch_min, MIN_REDUCING))
            together = {index: outcome for (index, _), outcome
                        in zip(covered_views, outcomes, strict=True)}
        commands: list[ScalingCommand] = []
        for index, view in views:
            outcome = together.get(index)
            if outcome is None:
                outcome = decide(view, market, policy, params, grid, [trigger])
            self._note_refusals(outcome.refusals)
            if outcome.commands:
                self._record_outcome(index, outcome.commands, outcome.pending, outcome.fired,
                                     now)
                commands.extend(outcome.commands)
        return commands

    def _record_outcome(self, index: int, commands: list[ScalingCommand],
                        pending: list[PendingCommand], fired: list[str], now: int) -> None:
        record = self._records[index]
        record.version += 1
        for entry in pending:
            record.pending[entry.command_id] = entry
            self._schedule_expiry(record, entry)
        self._count_pending(index)
        for label in fired:
            record.last_fired[label] = now
        window = record.rules.limits.rate_window_ms if record.rules else 0
        record.recent_commands = [t for t in record.recent_commands if now - t < window] \
            + [now] * len(commands)
        self._rules["guard_stale"][index] = True
        self._dirty.add(record.account_id)
        self.counters.commands += len(commands)
        for command in commands:
            key = command.reason.value
            self.counters.by_reason[key] = self.counters.by_reason.get(key, 0) + 1

    def _note_refusals(self, refusals: list[Refusal]) -> None:
        room = self.config.max_refusals - len(self._refusals)
        if room < len(refusals):
            self.counters.refusals_dropped += len(refusals) - max(room, 0)
        self._refusals.extend(refusals[: max(room, 0)])

    # --- materialization -------------------------------------------------------------------

    def _materialize(self, index: int) -> AccountState:
        record = self._records[index]
        cols = self._rules
        record.min_margin_ratio = float(cols["min_ratio"][index])
        record.breached_maintenance = bool(cols["breached"][index])
        return to_state(record, self._valuation(index) if cols["valued"][index] else None)

    def _valuation(self, index: int) -> Valuation:
        book = self.book
        a = book.accounts
        g = book.groups
        exposures = []
        for group in book.account_groups_sorted(index):
            name = book.asset_names[int(g["asset"][group])]
            entry = self._market.get(name)
            if entry is None or not any(int(book.rows["group"][row]) == group
                                        for row in book.active_rows(index)):
                continue
            exposures.append(Exposure(name, entry.price, float(g["delta"][group]),
                                      float(g["gamma"][group]), float(g["vega"][group]),
                                      float(g["theta"][group])))
        return Valuation(
            event_time=int(a["valued_at"][index]), equity=float(a["equity_adverse"][index]),
            initial_margin=float(a["im"][index]), maintenance_margin=float(a["mm"][index]),
            margin_ratio=float(a["ratio"][index]), stress_loss=float(a["stress"][index]),
            exposures=exposures)


class _Ladders:
    """Every account's ladder steps in the policy's order (highest ratio first), padded to
    one width: ratio (-inf where there is no step), whether the step tops up, and the event
    time until which its label cools down."""

    def __init__(self) -> None:
        self.ratio = np.full((64, 1), -math.inf)
        self.top_up = np.zeros((64, 1), dtype=bool)
        self.cool_until = np.full((64, 1), _PAST, dtype=np.int64)

    def ensure(self, index: int, width: int) -> None:
        """Room for account `index` with `width` steps."""
        rows, cols = self.ratio.shape
        if index < rows and width <= cols:
            return
        rows = max(rows, 1)
        while rows <= index:
            rows *= 2
        cols = max(cols, width)
        ratio = np.full((rows, cols), -math.inf)
        top_up = np.zeros((rows, cols), dtype=bool)
        cool_until = np.full((rows, cols), _PAST, dtype=np.int64)
        old_rows, old_cols = self.ratio.shape
        ratio[:old_rows, :old_cols] = self.ratio
        top_up[:old_rows, :old_cols] = self.top_up
        cool_until[:old_rows, :old_cols] = self.cool_until
        self.ratio, self.top_up, self.cool_until = ratio, top_up, cool_until

    def set_many(self, indices: list[int],
                 steps: list[tuple[list[float], list[bool], list[int]]]) -> None:
        """`set` for several accounts (each index once)."""
        if not indices:
            return
        width = max(1, max(len(ratios) for ratios, _, _ in steps))
        self.ensure(max(indices), width)
        cols = self.ratio.shape[1]
        ratio = np.full((len(indices), cols), -math.inf)
        top_up = np.zeros((len(indices), cols), dtype=bool)
        cool = np.full((len(indices), cols), _PAST, dtype=np.int64)
        for k, (ratios, top_ups, cool_until) in enumerate(steps):
            n = len(ratios)
            ratio[k, :n] = ratios
            top_up[k, :n] = top_ups
            cool[k, :n] = cool_until
        at = np.asarray(indices, dtype=np.int64)
        self.ratio[at] = ratio
        self.top_up[at] = top_up
        self.cool_until[at] = cool

    def set(self, index: int, ratios: list[float], top_ups: list[bool],
            cool_until: list[int]) -> None:
        """The steps of account `index`."""
        self.ensure(index, len(ratios))
        n = len(ratios)
        self.ratio[index] = -math.inf
        self.ratio[index, :n] = ratios
        self.top_up[index] = False
        self.top_up[index, :n] = top_ups
        self.cool_until[index] = _PAST
        self.cool_until[index, :n] = cool_until


def _held_order(entry: tuple[int, str, str, int, int, RiskInput]) -> tuple[int, str, str, int,
                                                                          int]:
    return entry[:5]


def _cooling_until(last_fired: Mapping[str, int], label: str, cooldown_ms: int) -> int:
    """Event time until which `label` cools down (_PAST if it never fired)."""
    fired = last_fired.get(label)
    return _PAST if fired is None else fired + cooldown_ms


_LADDER_LABELS: list[str] = []


def _ladder_labels(n: int) -> list[str]:
    """The labels margin_ladder[0..n-1]."""
    while len(_LADDER_LABELS) < n:
        _LADDER_LABELS.append(f"margin_ladder[{len(_LADDER_LABELS)}]")
    return _LADDER_LABELS[:n]


def _rate_free_at(times: list[int], max_commands: int, window_ms: int) -> int:
    """First event time at which fewer than `max_commands` of `times` lie within the rate
    window (the policy counts t with now - t < window_ms)."""
    if max_commands <= 0:
        return _NEVER
    if len(times) < max_commands:
        return _PAST
    return sorted(times)[len(times) - max_commands] + window_ms


def _validate_price(price: ConsensusPrice) -> None:
    if not price.asset:
        raise DomainError("invalid_price", "asset is empty")
    if not (math.isfinite(price.confidence) and price.confidence >= 0):
        raise DomainError("invalid_price", f"confidence must be finite and >= 0,"
                          f" got {price.confidence!r}")
    if price.status is not PriceStatus.HALTED and not (math.isfinite(price.price)
                                                       and 0 < price.price < MAX_PRICE):
        raise DomainError("invalid_price", f"{price.status.value} price must be finite, > 0"
                          f" and < {MAX_PRICE:g}, got {price.price!r}")

