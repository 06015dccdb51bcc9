"""The engine's fast paths change no decision.

- The screen (streams.risk.engine) skips accounts whose rules are all held back (cooldown,
  rate limit, a top-up step with no reserve left): on a crash, an engine that runs the
  policy on every account of every price update emits exactly the same commands and ends
  in exactly the same states.
- The policy's projection of an account on one underlying (Python floats) is bit-identical
  to the numpy model it replaces.
- The refusal log records a blocked rule once per blocked situation, not on every price.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain import (
    CollateralChanged,
    DeltaBandRule,
    ExecutionStatus,
    Instrument,
    InstrumentKind,
    OptionType,
    Position,
    PriceStatus,
    ScalingCommand,
)
from streams.risk.bookgen import account_events, generate_accounts
from streams.risk.engine import PartitionEngine, _rate_free_at
from streams.risk.margin import MarginParams, StressGrid
from streams.risk.policy import Holding, Projection, QuoteView
from streams.risk.stress import FIRST_SCENARIO
from streams.scenario.paths import crash_paths
from tests.unit.risk.engine_helpers import Feeder, option, rules

START_MS = 1_768_478_400_000


class EvaluateEveryAccount(PartitionEngine):
    """The reference: the policy runs on every account with rules that holds the updated
    asset or has a command in flight (what the engine did before it screened on blocked
    rules), in account-id order."""

    def _screen(self, asset: int, touched: np.ndarray) -> list[int]:
        cols = self._rules
        pending = np.flatnonzero(cols["pending"][: len(self._records)] > 0)
        candidates = np.union1d(touched, pending).astype(np.int64)
        candidates = candidates[cols["has_rules"][candidates]]
        return sorted(candidates.tolist(), key=lambda i: self._records[i].account_id)

    def _refine(self, candidates: list[int], asset: int, now: int) -> list[int]:
        return candidates


def crash_feed(accounts: int, seed: int) -> tuple[list, list[tuple[str, int, float, float,
                                                                  PriceStatus, list[str]]]]:
    """A generated book's events and a short crash of three assets, with an oracle band,
    some DEGRADED and HALTED prices and, now and then, an unhealthy chain."""
    paths = crash_paths(START_MS, 150, seed=seed, crash_start_s=30, crash_len_s=60)
    first = {asset: path[0][1] for asset, path in paths.items()}
    book = generate_accounts(first, accounts, seed, start_ms=START_MS)
    ticks = sorted((t, asset, p) for asset, path in paths.items() for t, p in path)
    prices = []
    for n, (t, asset, p) in enumerate(ticks):
        status = PriceStatus.HALTED if n % 97 == 50 else (
            PriceStatus.DEGRADED if n % 41 == 7 else PriceStatus.OK)
        unhealthy = ["arbitrum"] if n % 59 == 13 else []
        prices.append((asset, t, p, p * 5e-4, status, unhealthy))
    return account_events(book, START_MS), prices


def run(engine: PartitionEngine, events: list, prices: list, reports: str
        ) -> list[list[ScalingCommand]]:
    """Feed the log; report commands at the next price of their asset (`reports`: none,
    filled, or mixed: every third rejected)."""
    feed = Feeder(engine)
    for event in events:
        feed.apply(feed.entry("account.events", event))
    queue: list[ScalingCommand] = []
    out = []
    for asset, t, p, conf, status, unhealthy in prices:
        due = [c for c in queue if c.provenance.asset == asset]
        queue = [c for c in queue if c.provenance.asset != asset]
        for command in due:
            rejected = reports == "mixed" and int(command.command_id, 16) % 3 == 0
            feed.report(command, ExecutionStatus.REJECTED if rejected else
                        ExecutionStatus.FILLED,
                        price=command.trigger.get("reference_price"), time_ms=t)
        commands = feed.price(asset, p, t, confidence=conf, status=status,
                              unhealthy=unhealthy)
        out.append(commands)
        if reports != "none":
            queue += commands
    return out


@pytest.mark.parametrize(("reports", "seed"), [("none", 7), ("filled", 11), ("mixed", 5)])
def test_the_screen_changes_no_command_on_a_crash(reports: str, seed: int) -> None:
    events, prices = crash_feed(40, seed)
    fast, reference = PartitionEngine(), EvaluateEveryAccount()
    fast_out = run(fast, events, prices, reports)
    reference_out = run(reference, events, prices, reports)
    assert sum(map(len, reference_out)) > 50, "the crash must make the policy act"
    for step, (got, want) in enumerate(zip(fast_out, reference_out, strict=True)):
        assert got == want, f"commands differ at price {step}"
    assert list(fast.accounts()) == list(reference.accounts())
    assert fast.market_state() == reference.market_state()
    # and the screen did its job: the policy ran on a small share of those accounts
    assert fast.counters.evaluations * 10 < reference.counters.evaluations
    assert fast.counters.screened_out > fast.counters.evaluations


def test_a_blocked_rule_is_refused_once_per_situation() -> None:
    feed = Feeder()
    positions = [Position("c", option(60_000.0, OptionType.CALL), -1.0, 2_800.0, 0.6),
                 Position("p", option(60_000.0, OptionType.PUT), -1.0, 2_800.0, 0.6)]
    feed.account("mm", positions, 50_000.0, 0.0,
                 rules(delta=DeltaBandRule(band=0.1, hard_limit=0.35), margin=None,
                       cooldown_ms=60_000))
    feed.price("BTC", 60_000.0, 0)
    first = feed.price("BTC", 63_000.0, 1_000)
    assert len(first) == 1
    feed.report(first[0], price=63_000.0, time_ms=1_100)
    feed.engine.take_refusals()
    # out of the band again within the cooldown: refused, and recorded once
    assert feed.price("BTC", 66_000.0, 20_000) == []
    assert [(r.rule, r.code) for r in feed.engine.take_refusals()] == [
        ("delta_band:BTC", "cooldown")]
    evaluations = feed.engine.counters.evaluations
    for i in range(5):
        assert feed.price("BTC", 66_000.0 + 50.0 * i, 21_000 + 1_000 * i) == []
    assert feed.engine.take_refusals() == []
    assert feed.engine.counters.evaluations == evaluations
    # a change of the account is a new situation: the refusal is recorded again
    feed.event("mm", CollateralChanged("arbitrum", 1_000.0, 0.0), 26_500)
    assert feed.price("BTC", 66_300.0, 27_000) == []
    assert [r.code for r in feed.engine.take_refusals()] == ["cooldown"]
    # the cooldown over, the rule acts
    assert len(feed.price("BTC", 66_300.0, 62_000)) == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 100), max_size=12), st.integers(0, 6), st.integers(0, 50),
       st.integers(-20, 160))
def test_the_rate_budget_frees_exactly_when_the_policy_counts_a_free_slot(
        times: list[int], max_commands: int, window: int, now: int) -> None:
    recent = sum(1 for t in times if now - t < window)  # the policy's count
    free = now >= _rate_free_at(times, max_commands, window)
    assert free == (max_commands - recent > 0)


# --- the projection's one-underlying path ----------------------------------------------------

def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


_UNIT = st.one_of(st.just(0.0), st.floats(-1e4, 1e4, allow_nan=False))
_QUANTITY = st.one_of(st.just(0.0), st.just(-0.0), st.floats(-50.0, 50.0))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(_UNIT, min_size=1, max_size=1)),
                min_size=1, max_size=5),
       st.data(), st.floats(1.0, 1e5), st.one_of(st.just(0.0), st.floats(0.0, 500.0)),
       st.sampled_from([0.0, 1.0, 2.0, 2.5]),
       st.one_of(st.just(0.0), st.floats(-1e6, 1e6)))
def test_the_one_underlying_projection_is_bit_identical_to_the_array_model(
        kinds: list[list[float] | None], data: st.DataObject, spot: float, confidence: float,
        k: float, equity: float) -> None:
    grid = StressGrid()
    width = FIRST_SCENARIO + grid.size
    holdings = []
    for n, kind in enumerate(kinds):
        unit = None
        if kind is not None:
            unit = np.array(data.draw(st.lists(_UNIT, min_size=width, max_size=width)))
        instrument = Instrument(f"X{n}", InstrumentKind.PERP, "BTC", "arbitrum")
        holdings.append(Holding(f"p{n}", instrument, 0.0, 0.0, 0.0, unit))
    quotes = {"BTC": QuoteView("BTC", spot, confidence, PriceStatus.OK, 0, 1)}
    projection = Projection(holdings, quotes, k, lambda _: MarginParams(), grid)
    q = np.array(data.draw(st.lists(_QUANTITY, min_size=len(kinds), max_size=len(kinds))))
    fast = projection.risk(q, equity)
    arrays = projection.risk_arrays(q, equity)
    for field in ("equity_adverse", "maintenance", "ratio", "stress_loss"):
        assert _bits(getattr(fast, field)) == _bits(getattr(arrays, field)), field
    assert _bits(fast.delta[0]) == _bits(float(arrays.delta[0]))
    assert _bits(fast.gamma[0]) == _bits(float(arrays.gamma[0]))


def test_numpy_min_and_max_return_the_second_zero_on_a_tie() -> None:
    # what the one-underlying path relies on to give the same signed zeros as numpy
    one = np.ones(1)
    for a, b in ((0.0, -0.0), (-0.0, 0.0)):
        for fn in (np.maximum, np.minimum):
            got = float(fn(a * one, b * one)[0])
            assert math.copysign(1.0, got) == math.copysign(1.0, b)
            got = float(fn(a, b * one)[0])
            assert math.copysign(1.0, got) == math.copysign(1.0, b)
    assert math.copysign(1.0, float(np.array([-0.0]).sum())) == 1.0
