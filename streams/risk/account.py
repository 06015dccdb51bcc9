"""Account reducer: account events and execution reports applied to an account's records.

`AccountRecord` is the engine's mutable working copy of one `AccountState`; `to_state` and
`from_state` convert between the two. Every function validates its input before changing
anything, so a refused input (DomainError, dead-lettered by the adapter) leaves no trace.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import Enum
from typing import Any

from streams.domain import (
    AccountEvent,
    AccountState,
    Collateral,
    CollateralChanged,
    CommandAction,
    CommandReason,
    ExecutionReport,
    ExecutionStatus,
    Instrument,
    InstrumentKind,
    PendingCommand,
    Position,
    PositionChanged,
    RulesChanged,
    ScalingRules,
    Valuation,
)
from streams.domain.rules import validate_rules
from streams.errors import DomainError

HEDGE_SUFFIX = "-PERP"
# prices and strikes beyond this are data errors, not markets (keeps the models finite)
MAX_PRICE = 1e12


@dataclass
class AccountRecord:
    """Mutable working state of one account inside the engine."""

    account_id: str
    version: int = 0
    last_event_time: int = 0
    positions: dict[str, Position] = field(default_factory=dict)
    collateral: dict[str, Collateral] = field(default_factory=dict)
    rules: ScalingRules | None = None
    rules_hash: str = ""
    pending: dict[str, PendingCommand] = field(default_factory=dict)
    last_fired: dict[str, int] = field(default_factory=dict)
    recent_commands: list[int] = field(default_factory=list)
    base_quantities: dict[str, float] = field(default_factory=dict)
    origin_offsets: dict[str, int] = field(default_factory=dict)
    min_margin_ratio: float = 1e308
    breached_maintenance: bool = False

    def collateral_total(self) -> float:
        """Posted collateral over all chains, USD (summed in chain order of the record)."""
        return math.fsum(c.balance for c in self.collateral.values())

    def first_chain(self) -> str | None:
        """The account's first collateral chain (hedges default to it)."""
        return next(iter(self.collateral), None)


@dataclass(frozen=True, slots=True)
class Change:
    """What an applied input changed, for the engine to sync the columnar book."""

    positions: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    collateral: bool = False
    rules: bool = False


# --- validation ---------------------------------------------------------------------------

def _finite(value: float, what: str, reason: str) -> None:
    if not math.isfinite(value):
        raise DomainError(reason, f"{what} must be finite, got {value!r}")


def validate_instrument(inst: Instrument) -> None:
    """Refuse instruments the engine cannot value."""
    if not inst.instrument_id or not inst.underlying or not inst.chain:
        raise DomainError("invalid_position", "instrument needs an id, an underlying and a chain")
    if inst.is_option:
        if inst.option_type is None or inst.expiry_ms is None or inst.strike is None:
            raise DomainError("invalid_position",
                              f"option {inst.instrument_id} needs option_type, strike and expiry")
        if not (math.isfinite(inst.strike) and 0 < inst.strike < MAX_PRICE):
            raise DomainError("invalid_position",
                              f"option {inst.instrument_id} strike must be in (0, {MAX_PRICE:g})")


def validate_position(position: Position) -> None:
    """Refuse positions with non-finite numbers or incomplete option terms."""
    validate_instrument(position.instrument)
    _finite(position.quantity, "quantity", "invalid_position")
    _finite(position.entry_price, "entry_price", "invalid_position")
    if abs(position.quantity) > MAX_PRICE or abs(position.entry_price) > MAX_PRICE:
        raise DomainError("invalid_position", "quantity and entry_price must be below 1e12")
    vol = position.implied_vol
    if vol is not None and not (math.isfinite(vol) and 0 <= vol <= 10):
        raise DomainError("invalid_position", f"implied_vol must be in [0, 10], got {vol!r}")


# --- rules hash -----------------------------------------------------------------------------

def _canonical(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _canonical(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, list | tuple):
        return [_canonical(x) for x in obj]
    return obj


def rules_hash(rules: ScalingRules | None) -> str:
    """Hex SHA-256 (first 32 digits) of the rules' canonical JSON ("" without rules)."""
    if rules is None:
        return ""
    text = json.dumps(_canonical(rules), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# --- account events -----------------------------------------------------------------------

def validate_event(event: AccountEvent) -> None:
    """Refuse an account event before anything is changed."""
    body = event.body
    if isinstance(body, PositionChanged):
        validate_position(body.position)
    elif isinstance(body, CollateralChanged):
        if not body.chain:
            raise DomainError("invalid_collateral", "chain is empty")
        _finite(body.balance_delta, "balance_delta", "invalid_collateral")
        _finite(body.reserve_delta, "reserve_delta", "invalid_collateral")
    elif isinstance(body, RulesChanged):
        validate_rules(body.rules)
    else:
        raise DomainError("unknown_event", f"account event body {type(body).__name__}")


def apply_event(record: AccountRecord, event: AccountEvent) -> Change:
    """Apply a validated account event: set a position, move collateral or replace rules."""
    body = event.body
    if isinstance(body, PositionChanged):
        position = body.position
        pid = position.position_id
        if position.quantity == 0.0:
            record.positions.pop(pid, None)
            record.base_quantities.pop(pid, None)
            return Change(removed=(pid,))
        record.positions[pid] = position
        if position.instrument.is_option:
            record.base_quantities[pid] = position.quantity
        else:
            record.base_quantities.pop(pid, None)
        return Change(positions=(pid,))
    if isinstance(body, CollateralChanged):
        _move_collateral(record, body.chain, body.balance_delta, body.reserve_delta)
        return Change(collateral=True)
    assert isinstance(body, RulesChanged)
    record.rules = body.rules
    record.rules_hash = rules_hash(body.rules)
    return Change(rules=True)


def _move_collateral(record: AccountRecord, chain: str, balance: float, reserve: float) -> None:
    current = record.collateral.get(chain, Collateral(chain, 0.0, 0.0))
    record.collateral[chain] = Collateral(chain, current.balance + balance,
                                          current.reserve + reserve)


# --- execution reports --------------------------------------------------------------------

def validate_report(report: ExecutionReport) -> None:
    """Refuse a report with numbers that cannot be applied."""
    for name in ("filled_quantity", "fill_price", "fee", "top_up_amount"):
        _finite(getattr(report, name), name, "invalid_report")
    if report.status is ExecutionStatus.FILLED and report.action is CommandAction.TRADE \
            and report.filled_quantity != 0.0:
        option = report.instrument is not None and report.instrument.is_option
        if report.fill_price < 0 or (report.fill_price == 0 and not option):
            raise DomainError("invalid_report", "a filled trade needs fill_price > 0"
                              " (>= 0 for an option)")


def hedge_instrument(instrument_id: str, chain: str) -> Instrument:
    """The perp a delta hedge trades, rebuilt from its id (``<UNDERLYING>-PERP``)."""
    underlying = instrument_id.removesuffix(HEDGE_SUFFIX)
    return Instrument(instrument_id, InstrumentKind.PERP, underlying, chain)


def apply_report(record: AccountRecord, report: ExecutionReport) -> Change | None:
    """Settle the pending command a report is about; None if no such command is pending."""
    pending = record.pending.pop(report.command_id, None)
    if pending is None:
        return None
    if report.status is not ExecutionStatus.FILLED:
        release_cooldown(record, pending)
        return Change()
    if report.action is CommandAction.TOP_UP:
        chain = pending.chain or report.chain
        amount = report.top_up_amount
        _move_collateral(record, chain, amount, -amount)
        return Change(collateral=True)
    return _apply_fill(record, pending, report)


def release_cooldown(record: AccountRecord, pending: PendingCommand) -> None:
    """A command that did nothing frees its rules at once: protection does not wait."""
    for label in pending.rule.split("+") if pending.rule else ():
        if record.last_fired.get(label) == pending.created_at:
            del record.last_fired[label]


def _apply_fill(record: AccountRecord, pending: PendingCommand,
                report: ExecutionReport) -> Change:
    pid = pending.position_id or ""
    dq = report.filled_quantity
    price = report.fill_price
    old = record.positions.get(pid)
    if old is None:
        instrument = report.instrument or hedge_instrument(pending.instrument_id or "",
                                                           pending.chain or report.chain)
        old = Position(pid, instrument, 0.0, price)
    q, entry = old.quantity, old.entry_price
    realized = 0.0
    new_q = q + dq
    if q == 0.0 or (q > 0) == (dq > 0):
        new_entry = (q * entry + dq * price) / new_q if new_q != 0.0 else entry
    else:
        closed = min(abs(dq), abs(q))
        realized = closed * math.copysign(1.0, q) * (price - entry)
        new_entry = entry if (new_q == 0.0 or (new_q > 0) == (q > 0)) else price
    if realized != 0.0 or report.fee != 0.0:
        chain = old.instrument.chain
        _move_collateral(record, chain, realized, 0.0)
        _move_collateral(record, report.chain or chain, -report.fee, 0.0)
    collateral_changed = realized != 0.0 or report.fee != 0.0
    if new_q == 0.0 or abs(new_q) < 1e-12 * max(abs(q), abs(dq), 1.0):
        record.positions.pop(pid, None)
        record.base_quantities.pop(pid, None)
        return Change(removed=(pid,), collateral=collateral_changed)
    if old.instrument.is_option and pending.reason is CommandReason.MARGIN_REDUCE \
            and pid in record.base_quantities and q != 0.0:
        # a margin cut is a new intent: volatility scaling must not buy it back
        record.base_quantities[pid] *= new_q / q
    record.positions[pid] = replace(old, quantity=new_q, entry_price=new_entry)
    return Change(positions=(pid,), collateral=collateral_changed)


# --- conversion -----------------------------------------------------------------------------

def to_state(record: AccountRecord, valuation: Valuation | None) -> AccountState:
    """The Avro record of an account (maps sorted by key, so bytes are reproducible)."""
    return AccountState(
        account_id=record.account_id,
        version=record.version,
        last_event_time=record.last_event_time,
        positions=list(record.positions.values()),
        collateral=list(record.collateral.values()),
        rules=record.rules,
        rules_hash=record.rules_hash,
        pending=list(record.pending.values()),
        last_fired=dict(sorted(record.last_fired.items())),
        recent_commands=list(record.recent_commands),
        valuation=valuation,
        min_margin_ratio=record.min_margin_ratio,
        breached_maintenance=record.breached_maintenance,
        origin_offsets=dict(sorted(record.origin_offsets.items())),
        base_quantities=dict(sorted(record.base_quantities.items())),
    )


def from_state(state: AccountState) -> AccountRecord:
    """The working record of a persisted account state."""
    return AccountRecord(
        account_id=state.account_id,
        version=state.version,
        last_event_time=state.last_event_time,
        positions={p.position_id: p for p in state.positions},
        collateral={c.chain: c for c in state.collateral},
        rules=state.rules,
        rules_hash=state.rules_hash or rules_hash(state.rules),
        pending={p.command_id: p for p in state.pending},
        last_fired=dict(state.last_fired),
        recent_commands=list(state.recent_commands),
        base_quantities=dict(state.base_quantities),
        origin_offsets=dict(state.origin_offsets),
        min_margin_ratio=state.min_margin_ratio,
        breached_maintenance=state.breached_maintenance,
    )
