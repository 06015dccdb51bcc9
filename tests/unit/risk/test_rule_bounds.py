"""Bounds of the scaling rules: rules inside `RULE_BOUNDS` are accepted, any one field pushed
outside is refused with reason ``invalid_rules`` naming the field, the value and the bound;
a refused RulesChanged event leaves the account's previous rules in place."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.codecs import decode, encode
from streams.domain import (
    AccountEvent,
    CommandLimits,
    DeltaBandRule,
    LadderAction,
    MarginLadder,
    MarginStep,
    RiskInput,
    RulesChanged,
    ScalingRules,
    VolScalingRule,
)
from streams.domain.rules import RULE_BOUNDS, Bound, validate_rules
from streams.errors import DomainError, InvalidRulesError
from streams.risk.bookgen import format_book, generate_accounts, generate_desk, parse_book
from streams.scenario.bundled import bundled_scenario
from tests.unit.risk.engine_helpers import Feeder

# --- strategies -------------------------------------------------------------------------------


def _inside(bound: Bound, low: float | None = None) -> st.SearchStrategy[Any]:
    """Values the bound admits (at least `low` when given)."""
    floor = bound.low if low is None else max(bound.low, low)
    if bound.kind == "integer":
        return st.integers(math.ceil(floor), int(bound.high))
    return st.floats(floor, bound.high, exclude_min=bound.low_open and floor == bound.low,
                     allow_nan=False)


def _outside(bound: Bound) -> st.SearchStrategy[Any]:
    """Values the bound refuses: below, above, and (for numbers) NaN and infinities."""
    below = bound.low if bound.low_open else math.nextafter(bound.low, -math.inf)
    above = math.nextafter(bound.high, math.inf)
    if bound.kind == "integer":
        low = int(bound.low) if bound.low_open else int(bound.low) - 1
        return st.one_of(st.integers(max_value=low), st.integers(min_value=int(bound.high) + 1),
                         st.sampled_from([float(bound.low + bound.high) / 2, True]))
    return st.one_of(st.floats(max_value=below), st.floats(min_value=above),
                     st.sampled_from([math.nan, math.inf, -math.inf]))


@st.composite
def valid_rules(draw: st.DrawFn) -> ScalingRules:
    """Rules with every field drawn inside its bound (and the relations kept)."""
    b = RULE_BOUNDS
    band = draw(_inside(b["delta_band.band"]))
    delta = DeltaBandRule(
        band=band, hard_limit=draw(_inside(b["delta_band.hard_limit"], band)),
        target=draw(_inside(b["delta_band.target"])),
        hysteresis=draw(_inside(b["delta_band.hysteresis"])),
        hedge_chain=draw(st.one_of(st.none(), st.text(min_size=1, max_size=64))))
    vol = VolScalingRule(vol_target=draw(_inside(b["vol_scaling.vol_target"])),
                         max_gamma=draw(_inside(b["vol_scaling.max_gamma"])),
                         window=draw(_inside(b["vol_scaling.window"])),
                         min_scale=draw(_inside(b["vol_scaling.min_scale"])))
    steps = [MarginStep(draw(_inside(b["margin_ladder.steps.margin_ratio"])),
                        draw(st.sampled_from(list(LadderAction))),
                        draw(_inside(b["margin_ladder.steps.fraction"])))
             for _ in range(draw(st.integers(1, int(b["margin_ladder.steps"].high))))]
    ladder = MarginLadder(steps, draw(_inside(b["margin_ladder.target_ratio"])),
                          draw(_inside(b["margin_ladder.confidence_k"])))
    min_trade = draw(_inside(b["limits.min_trade_notional"]))
    limits = CommandLimits(
        cooldown_ms=draw(_inside(b["limits.cooldown_ms"])),
        max_commands=draw(_inside(b["limits.max_commands"])),
        rate_window_ms=draw(_inside(b["limits.rate_window_ms"])),
        min_trade_notional=min_trade,
        max_command_notional=draw(_inside(b["limits.max_command_notional"], min_trade)),
        slippage_bps=draw(_inside(b["limits.slippage_bps"])),
        deadline_ms=draw(_inside(b["limits.deadline_ms"])))
    return ScalingRules(
        delta_band=draw(st.sampled_from([delta, None])),
        vol_scaling=draw(st.sampled_from([vol, None])),
        margin_ladder=draw(st.sampled_from([ladder, None])), limits=limits)


NUMERIC_FIELDS = sorted(k for k, v in RULE_BOUNDS.items() if v.kind != "length")


def _with(rules: ScalingRules, key: str, value: Any) -> tuple[ScalingRules, str]:
    """`rules` with the field `key` of RULE_BOUNDS set to `value`; also the field's path."""
    record, name = key.rsplit(".", 1)
    if record == "margin_ladder.steps":
        ladder = rules.margin_ladder or MarginLadder([MarginStep(1.5, LadderAction.TOP_UP,
                                                                 0.5)], 2.0)
        steps = list(ladder.steps)
        steps[-1] = dataclasses.replace(steps[-1], **{name: value})
        path = f"margin_ladder.steps[{len(steps) - 1}].{name}"
        return dataclasses.replace(rules, margin_ladder=dataclasses.replace(ladder,
                                                                            steps=steps)), path
    defaults = {"delta_band": DeltaBandRule(1.0, 3.0), "vol_scaling": VolScalingRule(0.8, 1.0),
                "margin_ladder": MarginLadder([MarginStep(1.5, LadderAction.TOP_UP, 0.5)], 2.0),
                "limits": CommandLimits()}
    current = getattr(rules, record) or defaults[record]
    return dataclasses.replace(rules, **{record: dataclasses.replace(current,
                                                                       **{name: value})}), key


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(valid_rules())
def test_rules_inside_the_bounds_are_accepted(rules: ScalingRules) -> None:
    validate_rules(rules)


@settings(max_examples=600, deadline=None)
@given(valid_rules(), st.sampled_from(NUMERIC_FIELDS), st.data())
def test_any_one_field_outside_its_bound_is_refused_by_name(
        rules: ScalingRules, key: str, data: st.DataObject) -> None:
    value = data.draw(_outside(RULE_BOUNDS[key]), label="value")
    bad, path = _with(rules, key, value)
    with pytest.raises(InvalidRulesError) as info:
        validate_rules(bad)
    assert info.value.reason == "invalid_rules"
    assert info.value.field == path
    assert info.value.detail.startswith(f"{path} = {value!r}, must be ")


def test_every_field_of_every_rule_record_has_a_bound() -> None:
    records = {"delta_band": DeltaBandRule, "vol_scaling": VolScalingRule,
               "margin_ladder": MarginLadder, "margin_ladder.steps": MarginStep,
               "limits": CommandLimits}
    wanted = {f"{path}.{f.name}" for path, record in records.items()
              for f in dataclasses.fields(record) if f.name != "action"}
    assert wanted == set(RULE_BOUNDS)


# --- the absurd values of the issue -------------------------------------------------------------

THIRTY_YEARS_MS = 30 * 365 * 86_400_000


@pytest.mark.parametrize(("rules", "field", "bound"), [
    (ScalingRules(limits=CommandLimits(deadline_ms=THIRTY_YEARS_MS)), "limits.deadline_ms",
     "an integer in [1000, 86400000] ms"),
    (ScalingRules(limits=CommandLimits(max_command_notional=1e300)),
     "limits.max_command_notional", "a number in (0, 1e+12] USD (and >= min_trade_notional)"),
    (ScalingRules(delta_band=DeltaBandRule(band=math.nan, hard_limit=1.0)), "delta_band.band",
     "a number in [1e-12, 1e+12] units"),
    (ScalingRules(limits=CommandLimits(cooldown_ms=-1)), "limits.cooldown_ms",
     "an integer in [0, 86400000] ms"),
    (ScalingRules(margin_ladder=MarginLadder([MarginStep(1.5, LadderAction.REDUCE, 1.5)], 2.0)),
     "margin_ladder.steps[0].fraction", "a number in (0, 1]"),
    (ScalingRules(margin_ladder=MarginLadder([], 2.0)), "margin_ladder.steps",
     "a list of length in [1, 16] steps"),
    (ScalingRules(vol_scaling=VolScalingRule(vol_target=0.8, max_gamma=1.0, window=10**6)),
     "vol_scaling.window", "an integer in [2, 512] returns"),
    (ScalingRules(delta_band=DeltaBandRule(band=1.0, hard_limit=0.5)), "delta_band.hard_limit",
     ">= delta_band.band (1.0)"),
    (ScalingRules(limits=CommandLimits(min_trade_notional=5e5, max_command_notional=1e5)),
     "limits.max_command_notional", ">= limits.min_trade_notional (500000.0)"),
    (ScalingRules(delta_band=DeltaBandRule(band=1.0, hard_limit=2.0, hedge_chain="")),
     "delta_band.hedge_chain", "a string of length in [1, 64] characters (or null)"),
    (ScalingRules(limits=CommandLimits(cooldown_ms=1.5)),  # type: ignore[arg-type]
     "limits.cooldown_ms", "an integer in [0, 86400000] ms"),
    (ScalingRules(margin_ladder=MarginLadder(
        [MarginStep(1.5, "SELL", 0.5)], 2.0)),  # type: ignore[arg-type]
     "margin_ladder.steps[0].action", "TOP_UP or REDUCE"),
])
def test_absurd_values_are_refused_with_field_value_and_bound(
        rules: ScalingRules, field: str, bound: str) -> None:
    with pytest.raises(InvalidRulesError) as info:
        validate_rules(rules)
    assert isinstance(info.value, DomainError) and info.value.reason == "invalid_rules"
    assert info.value.field == field
    assert info.value.bound == bound
    assert field in info.value.detail and bound in info.value.detail


# --- what the project itself produces ----------------------------------------------------------


def test_the_defaults_the_scenario_and_the_generated_books_lie_inside_the_bounds() -> None:
    validate_rules(ScalingRules())
    scenario = bundled_scenario(accounts=200, seed=3, duration_s=60)
    rules = [e.body.rules for e in scenario.account_events if isinstance(e.body, RulesChanged)]
    books = [*generate_accounts({"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}, 500, seed=1),
             *generate_desk(500, seed=2), *generate_desk(200, seed=3, home="DOGE")]
    rules += [a.rules for a in books if a.rules is not None]
    assert len(rules) > 1000
    for r in rules:
        validate_rules(r)


# --- the engine: a refused RulesChanged keeps the previous rules --------------------------------


def test_a_rules_change_out_of_bounds_is_refused_and_the_account_keeps_its_rules() -> None:
    feed = Feeder()
    good = ScalingRules(delta_band=DeltaBandRule(band=1.0, hard_limit=3.0))
    feed.account("a", [], 10_000.0, account_rules=good)
    before = feed.engine.state("a")
    assert before is not None and before.rules == good
    absurd = ScalingRules(delta_band=DeltaBandRule(band=1.0, hard_limit=3.0),
                          limits=CommandLimits(deadline_ms=THIRTY_YEARS_MS))
    wire = encode(feed.entry("account.events", AccountEvent("ev-bad", "a", 0,
                                                            RulesChanged(absurd))))
    with pytest.raises(InvalidRulesError) as info:
        feed.engine.apply(decode(wire, RiskInput))
    assert info.value.reason == "invalid_rules"
    assert "limits.deadline_ms = 946080000000" in info.value.detail
    after = feed.engine.state("a")
    assert after is not None
    assert after.rules == good and after.rules_hash == before.rules_hash
    assert after.version == before.version


def test_a_book_file_with_rules_out_of_bounds_is_refused() -> None:
    book = generate_accounts({"BTC": 60_000.0}, 1, seed=1)
    data = json.loads(format_book(book))
    items = data["accounts"] if isinstance(data, dict) else data
    items[0]["rules"]["limits"]["deadline_ms"] = THIRTY_YEARS_MS
    with pytest.raises(InvalidRulesError, match=r"limits\.deadline_ms = 946080000000"):
        parse_book(json.dumps(data))
    assert parse_book(format_book(book))[0].rules == book[0].rules
