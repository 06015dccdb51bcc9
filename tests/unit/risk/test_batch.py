"""The vectorized policy (streams.risk.batch) decides exactly what `decide` decides.

Random books (perps and options, long and short, one or two collateral chains, random
ladders, delta bands, volatility scaling and limits) and random price paths (crashes and
rebounds, oracle bands, now and then a DEGRADED or HALTED price or an unhealthy chain,
fills and rejections) go through an engine with the fast path and through the reference
(`fast_policy=False`: `decide` on every account); commands are compared field by field
at every price, and so are the refusals and the final states.
"""

from __future__ import annotations

import dataclasses
import math

from hypothesis import event, given, settings
from hypothesis import strategies as st

from streams.domain import (
    DeltaBandRule,
    ExecutionStatus,
    LadderAction,
    OptionType,
    Position,
    PriceStatus,
    PricingModel,
    ScalingCommand,
    VolScalingRule,
)
from streams.risk.engine import PartitionEngine
from tests.unit.risk.engine_helpers import Feeder, ladder, option, perp, rules
from tests.unit.risk.test_engine_fast import crash_feed, run

SPOT = {"BTC": 60_000.0, "ETH": 3_000.0}


def differences(got: ScalingCommand, want: ScalingCommand) -> list[str]:
    """Names of the fields in which two commands differ."""
    return [f.name for f in dataclasses.fields(ScalingCommand)
            if getattr(got, f.name) != getattr(want, f.name)]


def assert_same_commands(got: list[list[ScalingCommand]],
                         want: list[list[ScalingCommand]]) -> None:
    assert len(got) == len(want)
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        assert len(a) == len(b), f"price {step}: {len(a)} commands, reference {len(b)}"
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert x == y, f"price {step}, command {k}: {differences(x, y)} differ"


@st.composite
def positions(draw: st.DrawFn, account: str) -> list[Position]:
    out = []
    asset = draw(st.sampled_from(["BTC", "BTC", "BTC", "ETH"]))
    spot = SPOT[asset]
    chain = draw(st.sampled_from(["arbitrum", "solana"]))
    for n in range(draw(st.integers(1, 5))):
        if n and draw(st.booleans()) and draw(st.booleans()):
            asset = "ETH" if asset == "BTC" else "BTC"  # a second underlying now and then
            spot = SPOT[asset]
        size = draw(st.floats(0.05, 20.0)) * 60_000.0 / spot
        sign = draw(st.sampled_from([1.0, -1.0]))
        if draw(st.booleans()):
            out.append(Position(f"{account}-p{n}", perp(asset, chain), sign * size,
                                spot * draw(st.floats(0.97, 1.03))))
            continue
        kind = draw(st.sampled_from([OptionType.PUT, OptionType.CALL]))
        strike = round(spot * draw(st.floats(0.7, 1.3)), -1 if spot > 1_000 else 0)
        days = draw(st.sampled_from([1, 7, 30, 90]))
        model = draw(st.sampled_from([PricingModel.BSM, PricingModel.BLACK76]))
        inst = option(strike, kind, asset, days, chain, model)
        vol = draw(st.one_of(st.none(), st.floats(0.3, 1.5)))
        out.append(Position(f"{account}-o{n}", inst, sign * size,
                            spot * draw(st.floats(0.005, 0.08)), vol))
    return out


@st.composite
def account_rules(draw: st.DrawFn, quantity: float) -> object:
    steps = sorted(draw(st.lists(st.floats(1.05, 3.0), min_size=1, max_size=4, unique=True)),
                   reverse=True)
    actions = [draw(st.sampled_from([LadderAction.TOP_UP, LadderAction.REDUCE]))
               for _ in steps]
    fractions = [draw(st.sampled_from([0.25, 0.5, 1.0])) for _ in steps]
    margin = ladder(*zip(steps, actions, fractions, strict=True),
                    target=steps[0] * draw(st.floats(1.05, 1.6)),
                    k=draw(st.sampled_from([0.0, 1.0, 2.0])))
    band = draw(st.one_of(st.none(), st.floats(0.02, 0.5)))
    delta = None if band is None else DeltaBandRule(
        band=band * quantity, hard_limit=band * quantity * draw(st.floats(1.0, 4.0)),
        target=draw(st.sampled_from([0.0, 0.0, 0.1 * quantity])))
    vol = None
    if draw(st.booleans()):
        vol = VolScalingRule(vol_target=draw(st.floats(0.3, 1.5)),
                             max_gamma=draw(st.floats(1e-7, 1e-3)) * quantity,
                             window=draw(st.sampled_from([5, 10, 30])),
                             min_scale=draw(st.sampled_from([0.1, 0.5])))
    return rules(delta=delta, vol=vol, margin=margin,
                 cooldown_ms=draw(st.sampled_from([0, 2_000, 30_000])),
                 max_commands=draw(st.sampled_from([1, 3, 100])),
                 min_trade=draw(st.sampled_from([0.0, 50.0, 5_000.0])),
                 max_notional=draw(st.sampled_from([1e9, 2e5])))


@st.composite
def books(draw: st.DrawFn) -> list[tuple[str, list[Position], float, float, object, str]]:
    out = []
    for n in range(draw(st.integers(1, 8))):
        account = f"acct-{n:02d}"
        held = draw(positions(account))
        notional = math.fsum(abs(p.quantity) * SPOT[p.instrument.underlying] for p in held)
        quantity = math.fsum(abs(p.quantity) for p in held)
        collateral = notional * draw(st.floats(0.03, 0.4))
        reserve = collateral * draw(st.sampled_from([0.0, 0.3, 1.0]))
        chain = held[0].instrument.chain
        out.append((account, held, collateral, reserve, draw(account_rules(quantity)), chain))
    return out


@st.composite
def paths(draw: st.DrawFn) -> list[tuple[str, int, float, float, PriceStatus, list[str]]]:
    out = []
    prices = dict(SPOT)
    t = 0
    for n in range(draw(st.integers(8, 24))):
        asset = draw(st.sampled_from(["BTC", "BTC", "ETH"]))
        t += draw(st.sampled_from([500, 1_000, 5_000, 40_000]))
        prices[asset] *= math.exp(draw(st.floats(-0.09, 0.05)))
        status = draw(st.sampled_from([PriceStatus.OK] * 8
                                      + [PriceStatus.DEGRADED, PriceStatus.HALTED]))
        unhealthy = draw(st.sampled_from([[]] * 8 + [["arbitrum"]]))
        conf = prices[asset] * draw(st.sampled_from([0.0, 1e-4, 2e-3]))
        out.append((asset, t + n, prices[asset], conf, status, unhealthy))
    return out


def feed(engine: PartitionEngine, book: list, path: list, rejected: set[int]
         ) -> list[list[ScalingCommand]]:
    """Book, then the path; every command reported at the next price of its asset (filled
    at its reference price, or rejected when its position in the log is in `rejected`)."""
    f = Feeder(engine)
    for account, held, collateral, reserve, account_rules_, chain in book:
        f.account(account, held, collateral, reserve, account_rules_, chain)
    out: list[list[ScalingCommand]] = []
    queue: list[ScalingCommand] = []
    sent = 0
    for asset, t, price, conf, status, unhealthy in path:
        due = [c for c in queue if c.provenance.asset == asset]
        queue = [c for c in queue if c.provenance.asset != asset]
        for command in due:
            sent += 1
            f.report(command, ExecutionStatus.REJECTED if sent in rejected
                     else ExecutionStatus.FILLED,
                     price=command.trigger.get("reference_price"), time_ms=t)
        commands = f.price(asset, price, t, confidence=conf, status=status,
                           unhealthy=unhealthy)
        out.append(commands)
        queue += commands
    return out


@settings(max_examples=120, deadline=None)
@given(books(), paths(), st.sets(st.integers(1, 60), max_size=15))
def test_the_fast_path_emits_exactly_the_reference_commands(
        book: list, path: list, rejected: set[int]) -> None:
    fast, reference = PartitionEngine(batch_min=1), PartitionEngine(fast_policy=False)
    want = feed(reference, book, path, rejected)
    assert_same_commands(feed(fast, book, path, rejected), want)
    for reason in sorted({c.reason.value for step in want for c in step}):
        event(f"reference emitted {reason}")
    event(f"vectorized accounts: {'some' if fast.batch_stats.accounts else 'none'}")
    event(f"vectorized cuts: {'some' if fast.batch_stats.reduced else 'none'}")
    assert fast.take_refusals() == reference.take_refusals()
    assert list(fast.accounts()) == list(reference.accounts())
    assert fast.counters.evaluations == reference.counters.evaluations
    assert fast.batch_stats.scalar_risks == 0
    assert reference.batch_stats.accounts == 0


def test_the_fast_path_takes_most_accounts_of_a_crash_and_decides_the_same() -> None:
    events, prices = crash_feed(60, 17)
    fast, reference = PartitionEngine(batch_min=1), PartitionEngine(fast_policy=False)
    got, want = run(fast, events, prices, "mixed"), run(reference, events, prices, "mixed")
    assert sum(map(len, want)) > 50
    assert_same_commands(got, want)
    assert fast.take_refusals() == reference.take_refusals()
    assert list(fast.accounts()) == list(reference.accounts())
    stats = fast.batch_stats
    assert stats.accounts > 0.5 * fast.counters.evaluations
    assert stats.scalar_risks == 0 and stats.risk_rows > stats.accounts
    assert stats.reduced > 0


def test_a_margin_reduction_cuts_the_same_shares_on_both_paths() -> None:
    # short puts hedged with a perp, crashed through every step: contributors ranked,
    # cut one by one, bisected to the target
    book = [("acct-00", [Position("acct-00-o0", option(58_000.0, days=7), -8.0, 900.0, 0.7),
                         Position("acct-00-o1", option(55_000.0, days=30), -6.0, 1_400.0,
                                  0.6),
                         Position("acct-00-p", perp(), 3.0, 60_000.0)],
             60_000.0, 5_000.0,
             rules(margin=ladder((2.0, LadderAction.TOP_UP, 0.5),
                                 (1.6, LadderAction.REDUCE, 0.5),
                                 (1.3, LadderAction.REDUCE, 1.0), target=2.4)), "arbitrum")]
    path = [("BTC", 1_000 * n, 60_000.0 * (1 - 0.02 * n), 5.0, PriceStatus.OK, [])
            for n in range(12)]
    fast, reference = PartitionEngine(batch_min=1), PartitionEngine(fast_policy=False)
    got, want = feed(fast, book, path, set()), feed(reference, book, path, set())
    reasons = {c.reason.value for step in want for c in step}
    assert {"MARGIN_TOP_UP", "MARGIN_REDUCE"} <= reasons
    assert_same_commands(got, want)
    assert fast.batch_stats.accounts > 0
