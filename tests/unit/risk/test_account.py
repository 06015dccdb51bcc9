"""Account reducer: fills, top-ups, settlement of pending commands, validation, conversion."""

from __future__ import annotations

import pytest

from streams.domain import (
    AccountEvent,
    CollateralChanged,
    CommandAction,
    CommandReason,
    DeltaBandRule,
    ExecutionReport,
    ExecutionStatus,
    PendingCommand,
    Position,
    PositionChanged,
    RulesChanged,
    ScalingRules,
)
from streams.errors import DomainError
from streams.risk.account import (
    AccountRecord,
    apply_event,
    apply_report,
    from_state,
    rules_hash,
    to_state,
    validate_event,
    validate_rules,
)
from tests.unit.risk.engine_helpers import option, perp


def record_with(position: Position | None = None, pending: PendingCommand | None = None,
                balance: float = 1_000.0) -> AccountRecord:
    record = AccountRecord("a")
    apply_event(record, AccountEvent("e0", "a", 0, CollateralChanged("arbitrum", balance, 500.0)))
    if position is not None:
        apply_event(record, AccountEvent("e1", "a", 0, PositionChanged(position)))
    if pending is not None:
        record.pending[pending.command_id] = pending
    return record


def trade(command_id: str, position_id: str, quantity: float,
          reason: CommandReason = CommandReason.DELTA_REBALANCE,
          rule: str = "delta_band:BTC") -> PendingCommand:
    return PendingCommand(command_id, reason, "BTC-PERP", quantity, 0.0, 100, 200, rule,
                          position_id, "arbitrum")


def fill(command_id: str, quantity: float, price: float, fee: float = 0.0,
         status: ExecutionStatus = ExecutionStatus.FILLED,
         action: CommandAction = CommandAction.TRADE, amount: float = 0.0,
         instrument=None) -> ExecutionReport:
    return ExecutionReport("r", command_id, "a", "arbitrum", status, "", action,
                           instrument if instrument is not None else perp(), quantity, price,
                           fee, amount, 150, "venue")


@pytest.mark.parametrize("start, dq, price, expect_q, expect_entry, realized", [
    (2.0, 1.0, 130.0, 3.0, 110.0, 0.0),       # adds: average entry
    (2.0, -0.5, 130.0, 1.5, 100.0, 15.0),     # reduces: realizes on the closed part
    (2.0, -3.0, 130.0, -1.0, 130.0, 60.0),    # flips: remainder opened at the fill
    (-2.0, 1.0, 90.0, -1.0, 100.0, 10.0),     # short covered below entry
])
def test_fills_update_quantity_entry_and_realized_pnl(start: float, dq: float, price: float,
                                                      expect_q: float, expect_entry: float,
                                                      realized: float) -> None:
    record = record_with(Position("p", perp(), start, 100.0), trade("c", "p", dq))
    change = apply_report(record, fill("c", dq, price, fee=1.0))
    assert change is not None and change.positions == ("p",)
    position = record.positions["p"]
    assert position.quantity == pytest.approx(expect_q)
    assert position.entry_price == pytest.approx(expect_entry)
    assert record.collateral["arbitrum"].balance == pytest.approx(1_000.0 + realized - 1.0)
    assert record.pending == {}


def test_closing_fill_removes_the_position() -> None:
    record = record_with(Position("p", perp(), 2.0, 100.0), trade("c", "p", -2.0))
    change = apply_report(record, fill("c", -2.0, 90.0))
    assert change is not None and change.removed == ("p",)
    assert "p" not in record.positions
    assert record.collateral["arbitrum"].balance == pytest.approx(980.0)


def test_a_hedge_fill_creates_the_perp_position() -> None:
    record = record_with(pending=trade("c", "hedge:BTC-PERP@arbitrum", -1.5))
    apply_report(record, fill("c", -1.5, 100.0))
    position = record.positions["hedge:BTC-PERP@arbitrum"]
    assert position.quantity == -1.5 and position.instrument == perp()


def test_top_up_moves_reserve_into_collateral() -> None:
    pending = PendingCommand("t", CommandReason.MARGIN_TOP_UP, None, 0.0, 200.0, 100, 200,
                             "margin_ladder[0]", None, "arbitrum")
    record = record_with(pending=pending)
    apply_report(record, fill("t", 0.0, 0.0, action=CommandAction.TOP_UP, amount=200.0))
    assert record.collateral["arbitrum"].balance == 1_200.0
    assert record.collateral["arbitrum"].reserve == 300.0


def test_margin_cut_of_an_option_lowers_its_base_quantity() -> None:
    put = option(90.0)
    record = record_with(Position("o", put, -4.0, 5.0, 0.6),
                         trade("c", "o", 1.0, CommandReason.MARGIN_REDUCE, "margin_ladder[1]"))
    assert record.base_quantities == {"o": -4.0}
    apply_report(record, fill("c", 1.0, 5.0, instrument=put))
    assert record.base_quantities == {"o": pytest.approx(-3.0)}


def test_volatility_cut_keeps_the_base_quantity() -> None:
    put = option(90.0)
    record = record_with(Position("o", put, -4.0, 5.0, 0.6),
                         trade("c", "o", 1.0, CommandReason.VOL_SCALE, "vol_scaling:BTC"))
    apply_report(record, fill("c", 1.0, 5.0, instrument=put))
    assert record.base_quantities == {"o": -4.0}


def test_a_command_that_did_nothing_frees_its_rules() -> None:
    record = record_with(Position("p", perp(), 2.0, 100.0),
                         trade("c", "p", -1.0, rule="margin_ladder[0]+delta_band:BTC"))
    record.last_fired = {"margin_ladder[0]": 100, "delta_band:BTC": 100, "vol_scaling:BTC": 50}
    change = apply_report(record, fill("c", 0.0, 0.0, status=ExecutionStatus.REJECTED))
    assert change is not None and record.pending == {}
    assert record.last_fired == {"vol_scaling:BTC": 50}
    assert record.positions["p"].quantity == 2.0


def test_unknown_command_is_ignored() -> None:
    record = record_with(Position("p", perp(), 2.0, 100.0))
    assert apply_report(record, fill("nope", 1.0, 100.0)) is None
    assert record.positions["p"].quantity == 2.0


def test_rules_are_validated_and_hashed_canonically() -> None:
    rules = ScalingRules(delta_band=DeltaBandRule(band=1.0, hard_limit=3.0))
    assert rules_hash(rules) == rules_hash(ScalingRules(delta_band=DeltaBandRule(1.0, 3.0)))
    assert rules_hash(rules) != rules_hash(ScalingRules()) and len(rules_hash(rules)) == 32
    assert rules_hash(None) == ""
    with pytest.raises(DomainError) as info:
        validate_rules(ScalingRules(delta_band=DeltaBandRule(band=1.0, hard_limit=0.5)))
    assert info.value.reason == "invalid_rules"
    with pytest.raises(DomainError):
        validate_event(AccountEvent("e", "a", 0, RulesChanged(
            ScalingRules(delta_band=DeltaBandRule(band=0.0, hard_limit=1.0)))))


def test_state_conversion_round_trips() -> None:
    record = record_with(Position("p", perp(), 2.0, 100.0), trade("c", "p", -1.0))
    record.rules = ScalingRules()
    record.rules_hash = rules_hash(record.rules)
    record.last_fired = {"b": 2, "a": 1}
    state = to_state(record, None)
    assert list(state.last_fired) == ["a", "b"]
    assert to_state(from_state(state), None) == state
