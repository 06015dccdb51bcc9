"""A generated book of accounts, sized from the first prices of a path, with a fixed seed.

Used by `aps simulate` (when no --book is given), the bundled `make run` scenario and
`aps bench risk`. The assumptions are written out in docs/risk.md ("Generated book"); in
short, three kinds of accounts on a listed option chain:

- directional perp traders (45%): one perp (65% long), leverage drawn log-normally around
  5x (1.5x..40x);
- option sellers (30%): short puts, calls or strangles, delta-hedged with the perp;
- option buyers (25%): long calls or puts plus a directional perp.

Account notional is log-normal around $50k ($2k..$5M). Collateral is notional / leverage
for directional traders, and an initial margin ratio of 2.5..6 times the maintenance
margin for option accounts (computed with the engine's own margin model). 60% of accounts
have a reserve for top-ups (25%..100% of their collateral). Every account carries scaling
rules: a four-step margin ladder, and for option sellers a delta band and volatility
scaling. Options come from one listed chain per asset (1, 7, 30 and 90-day expiries,
strikes at 70%..130% of the price), marked on a volatility smile.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np

from streams.codecs.avro import to_datum
from streams.domain import (
    AccountEvent,
    AccountState,
    Collateral,
    CollateralChanged,
    CommandLimits,
    ConsensusPrice,
    DeltaBandRule,
    Instrument,
    InstrumentKind,
    LadderAction,
    MarginLadder,
    MarginStep,
    OptionType,
    Position,
    PositionChanged,
    PriceStatus,
    PricingModel,
    RiskInput,
    RulesChanged,
    ScalingRules,
    VolScalingRule,
)
from streams.errors import ConfigError
from streams.risk.account import rules_hash, validate_position, validate_rules
from streams.risk.engine import PartitionEngine
from streams.risk.pricing import option_greeks
from streams.risk.volatility import YEAR_MS

DEFAULT_CHAINS = ("ethereum", "arbitrum", "solana")
DAY_MS = 24 * 3600 * 1000
EXPIRY_DAYS = (1, 7, 30, 90)
MONEYNESS = (0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.3)
BASE_VOL = {"BTC": 0.55, "ETH": 0.70, "SOL": 0.90}
OTHER_VOL = 0.85
ARCHETYPES = ("directional", "seller", "buyer")
ARCHETYPE_WEIGHTS = (0.45, 0.30, 0.25)
LADDER = MarginLadder(
    steps=[MarginStep(1.8, LadderAction.TOP_UP, 0.5), MarginStep(1.5, LadderAction.TOP_UP, 1.0),
           MarginStep(1.3, LadderAction.REDUCE, 0.5), MarginStep(1.15, LadderAction.REDUCE, 1.0)],
    target_ratio=2.2, confidence_k=2.0)
# distance to liquidation, share of the price, of each generated ladder step and target
CUSHIONS = (0.10, 0.07, 0.045, 0.03)
TARGET_CUSHION = 0.12
# ... or this share of the account's own starting distance to liquidation, if smaller
RELATIVE_CUSHIONS = (0.6, 0.45, 0.3, 0.2)
RELATIVE_TARGET = 0.8
NO_RESERVE_FRACTIONS = (0.25, 0.5, 0.5, 1.0)
# the desk book's ten assets and their starting prices (generate_desk)
DESK_PRICES = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0, "BNB": 600.0, "XRP": 0.6,
               "DOGE": 0.15, "AVAX": 35.0, "LINK": 15.0, "ARB": 1.1, "OP": 2.5}
LIMITS = CommandLimits(cooldown_ms=30_000, max_commands=60, rate_window_ms=600_000,
                       min_trade_notional=50.0, max_command_notional=1_000_000.0,
                       slippage_bps=50.0, deadline_ms=120_000)


@dataclass(frozen=True, slots=True)
class BookAccount:
    """One account of a book: collateral per chain, positions and rules."""

    account_id: str
    collateral: list[Collateral]
    positions: list[Position]
    rules: ScalingRules | None = None
    kind: str = field(default="", compare=False)


def base_vol(asset: str) -> float:
    """Typical at-the-money implied volatility of an asset."""
    return BASE_VOL.get(asset, OTHER_VOL)


def smile_vol(asset: str, spot: float, strike: float, days: float) -> float:
    """Mark implied volatility on a simple smile: convex in log-moneyness, short dates up."""
    m = math.log(strike / spot)
    term = 1.0 + 0.15 * max(0.0, (30.0 - days) / 30.0)
    return base_vol(asset) * term * (1.0 + 2.0 * m * m)


def nice_strike(value: float) -> float:
    """A listed-looking strike: two significant digits (three above 1000)."""
    if value <= 0:
        return value
    digits = 3 if value >= 1000 else 2
    scale = 10 ** (math.floor(math.log10(value)) - digits + 1)
    return float(round(value / scale) * scale)


@dataclass(frozen=True, slots=True)
class ListedOption:
    """One instrument of the listed chain with its mark at generation time."""

    instrument: Instrument
    vol: float
    mark: float
    delta: float
    gamma: float


def listed_chain(asset: str, spot: float, chain: str, start_ms: int) -> list[ListedOption]:
    """The listed options of `asset` on `chain` (BSM on ethereum, Black-76 elsewhere)."""
    model = PricingModel.BSM if chain == "ethereum" else PricingModel.BLACK76
    out = []
    for days in EXPIRY_DAYS:
        expiry = start_ms + days * DAY_MS
        for m in MONEYNESS:
            strike = nice_strike(spot * m)
            for kind in (OptionType.CALL, OptionType.PUT):
                iid = f"{asset}-{days}D-{strike:g}-{kind.value[0]}"
                inst = Instrument(iid, InstrumentKind.OPTION, asset, chain, kind, strike,
                                  expiry, model)
                out.append((inst, smile_vol(asset, spot, strike, days), days))
    greeks = option_greeks(
        np.full(len(out), spot), [i.strike for i, _, _ in out],
        [d * DAY_MS / YEAR_MS for _, _, d in out], 0.0, 0.0, [v for _, v, _ in out],
        [i.option_type is OptionType.CALL for i, _, _ in out],
        [i.model is PricingModel.BLACK76 for i, _, _ in out])
    return [ListedOption(inst, vol, float(greeks.price[k]), float(greeks.delta[k]),
                         float(greeks.gamma[k]))
            for k, (inst, vol, _) in enumerate(out)]


class _Generator:
    def __init__(self, prices: Mapping[str, float], seed: int, chains: Sequence[str],
                 start_ms: int, positions_per_account: int | None,
                 home: str | None = None) -> None:
        if not prices:
            raise ValueError("need at least one asset price")
        if not chains:
            raise ValueError("need at least one chain")
        self.prices = dict(sorted(prices.items()))
        self.assets = list(self.prices)
        self.rng = np.random.default_rng(seed)
        self.chains = list(chains)
        self.start_ms = start_ms
        self.fixed = positions_per_account
        if home is not None and home not in self.prices:
            raise ValueError(f"home asset {home!r} has no price")
        self.home = home
        self.listed = {(a, c): listed_chain(a, p, c, start_ms)
                       for a, p in self.prices.items() for c in self.chains}

    def perp(self, asset: str, chain: str) -> Instrument:
        return Instrument(f"{asset}-PERP", InstrumentKind.PERP, asset, chain)

    def pick_options(self, asset: str, chain: str, count: int, side: str) -> list[ListedOption]:
        listed = self.listed[(asset, chain)]
        spot = self.prices[asset]
        chosen = []
        for _ in range(count):
            if side == "seller":
                want_put = self.rng.random() < 0.55
                low, high = (0.8, 0.97) if want_put else (1.03, 1.2)
            else:
                want_put = self.rng.random() < 0.45
                low, high = (0.85, 1.0) if want_put else (1.0, 1.15)
            days = int(self.rng.choice(EXPIRY_DAYS, p=(0.15, 0.35, 0.35, 0.15)))
            kind = OptionType.PUT if want_put else OptionType.CALL
            pool = [o for o in listed
                    if o.instrument.option_type is kind
                    and o.instrument.expiry_ms == self.start_ms + days * DAY_MS
                    and low * spot <= (o.instrument.strike or 0) <= high * spot]
            if not pool:
                pool = [o for o in listed if o.instrument.option_type is kind]
            chosen.append(pool[int(self.rng.integers(len(pool)))])
        return chosen

    def account(self, number: int) -> tuple[BookAccount, float | None]:
        """One account and, for directional ones, its collateral (else None: sized later)."""
        account_id = f"acct-{number:06d}"
        kind = str(self.rng.choice(ARCHETYPES, p=ARCHETYPE_WEIGHTS))
        if self.fixed == 1:
            kind = "directional"
        asset = self.home or self.assets[int(self.rng.integers(len(self.assets)))]
        chain = self.chains[int(self.rng.integers(len(self.chains)))]
        spot = self.prices[asset]
        notional = float(np.clip(self.rng.lognormal(math.log(50_000.0), 1.2), 2_000, 5e6))
        positions: list[Position] = []
        collateral: float | None = None
        rules = ScalingRules(margin_ladder=LADDER, limits=LIMITS)
        if kind == "directional":
            leverage = float(np.clip(self.rng.lognormal(math.log(5.0), 0.6), 1.5, 40.0))
            side = 1.0 if self.rng.random() < 0.65 else -1.0
            entry = spot * (1.0 + self.rng.normal(0.0, 0.01))
            positions.append(Position(f"{account_id}-perp", self.perp(asset, chain),
                                      side * notional / spot, entry))
            collateral = notional / leverage
            extra = (self.fixed - 1) if self.fixed else 0
            for k, option in enumerate(self.pick_options(asset, chain, extra, "buyer")):
                qty = 0.1 * notional / spot
                positions.append(Position(f"{account_id}-opt{k}", option.instrument, qty,
                                          option.mark, option.vol))
                collateral += qty * option.mark
        else:
            count = (self.fixed - 1) if self.fixed else int(self.rng.integers(1, 4))
            options = self.pick_options(asset, chain, max(count, 0), kind)
            sign = -1.0 if kind == "seller" else 1.0
            option_delta = 0.0
            gamma = 0.0
            for k, option in enumerate(options):
                share = notional / spot / max(len(options), 1)
                qty = sign * share * (1.0 if kind == "seller" else 0.5)
                positions.append(Position(f"{account_id}-opt{k}", option.instrument, qty,
                                          option.mark, option.vol))
                option_delta += qty * option.delta
                gamma += qty * option.gamma
            if kind == "seller":
                hedge = -option_delta
                rules = ScalingRules(
                    delta_band=DeltaBandRule(band=max(0.1 * notional / spot, 1e-9),
                                             hard_limit=max(0.3 * notional / spot, 3e-9)),
                    vol_scaling=VolScalingRule(vol_target=1.5 * base_vol(asset),
                                               max_gamma=max(2.5 * abs(gamma), 1e-12),
                                               window=30, min_scale=0.2),
                    margin_ladder=LADDER, limits=LIMITS)
            else:
                hedge = (1.0 if self.rng.random() < 0.6 else -1.0) * 0.5 * notional / spot
            if not self.fixed or len(positions) < self.fixed:
                positions.append(Position(f"{account_id}-perp", self.perp(asset, chain), hedge,
                                          spot))
        reserve_share = float(self.rng.uniform(0.25, 1.0)) if self.rng.random() < 0.6 else 0.0
        ratio = float(self.rng.uniform(2.5, 6.0))
        account = BookAccount(account_id, [Collateral(chain, 0.0, reserve_share)], positions,
                              rules, kind)
        return account, collateral if collateral is not None else -ratio


def generate_accounts(prices: Mapping[str, float], accounts: int, seed: int = 7,
                      chains: Sequence[str] = DEFAULT_CHAINS, start_ms: int = 0,
                      positions_per_account: int | None = None) -> list[BookAccount]:
    """A book of `accounts` accounts on the assets of `prices` (see the module docstring).

    Same arguments, same book. `positions_per_account` forces every account to hold that
    many positions (the benchmark's 100,000 x 3 book).
    """
    gen = _Generator(prices, seed, chains, start_ms, positions_per_account)
    return _sized([gen.account(n) for n in range(accounts)], gen.prices, start_ms)


def generate_desk(accounts: int, prices: Mapping[str, float] = DESK_PRICES, seed: int = 7,
                  chains: Sequence[str] = DEFAULT_CHAINS, start_ms: int = 0,
                  home: str | None = None, max_positions: int = 5) -> list[BookAccount]:
    """A desk-sized book: like `generate_accounts`, but every account holds 1 to
    `max_positions` positions (uniform), on 10 assets (`DESK_PRICES`) over 3 chains.

    An account holding one position holds a perp; with n > 1, a directional account
    holds its perp and n - 1 long options, an option seller or buyer n - 1 options and a
    perp. `home` puts every account on that asset (the benchmark's book, where one price
    update revalues all of them); by default each account's asset is drawn uniformly.
    """
    if max_positions < 1:
        raise ValueError("max_positions must be >= 1")
    gen = _Generator(prices, seed, chains, start_ms, None, home)
    drafts: list[tuple[BookAccount, float]] = []
    for n in range(accounts):
        gen.fixed = int(gen.rng.integers(1, max_positions + 1))
        drafts.append(gen.account(n))  # type: ignore[arg-type]
    return _sized(drafts, gen.prices, start_ms)


def _sized(drafts: Sequence[tuple[BookAccount, float]], prices: Mapping[str, float],
           start_ms: int) -> list[BookAccount]:
    """The drafts with their collateral and ladders set from their initial risk."""
    risk = _initial_risk(drafts, prices, start_ms)
    book = []
    for (draft, sizing), (mm, dollar_delta, value) in zip(drafts, risk, strict=True):
        collateral = sizing if sizing >= 0 else -sizing * max(mm, 1.0)
        chain = draft.collateral[0].chain
        reserve = draft.collateral[0].reserve * collateral
        rules = draft.rules
        if rules is not None:
            start_ratio = (collateral + value) / mm if mm > 0 else math.inf
            ladder = cushion_ladder(mm, dollar_delta, start_ratio, has_reserve=reserve > 0)
            rules = replace(rules, margin_ladder=ladder)
        book.append(BookAccount(draft.account_id, [Collateral(chain, collateral, reserve)],
                                draft.positions, rules, draft.kind))
    return book


def cushion_ladder(maintenance: float, dollar_delta: float, start_ratio: float,
                   has_reserve: bool = True) -> MarginLadder:
    """The generated accounts' ladder, set by distance to liquidation in price terms.

    With dollar delta D and maintenance MM, a price move of x costs about x * |D|, so the
    margin ratio at which the account is x away from maintenance is 1 + x * |D| / MM. Each
    step sits at the smaller of an absolute cushion (CUSHIONS) and a share of the account's
    own starting cushion (RELATIVE_CUSHIONS), so every account starts above its ladder, and
    never below LADDER's ratios (which is what delta-hedged option books, with D near 0,
    get). Without a reserve there is nothing to top up from: every step reduces.
    """
    leverage = abs(dollar_delta) / maintenance if maintenance > 0 else 0.0
    start = (start_ratio - 1.0) / leverage if leverage > 0 else math.inf
    steps = []
    for k, floor in enumerate(LADDER.steps):
        cushion = min(CUSHIONS[k], RELATIVE_CUSHIONS[k] * start)
        action, fraction = floor.action, floor.fraction
        if not has_reserve:
            action, fraction = LadderAction.REDUCE, NO_RESERVE_FRACTIONS[k]
        steps.append(MarginStep(max(floor.margin_ratio, 1.0 + cushion * leverage), action,
                                fraction))
    cushion = min(TARGET_CUSHION, RELATIVE_TARGET * start)
    target = max(LADDER.target_ratio, 1.0 + cushion * leverage)
    return MarginLadder(steps, target, LADDER.confidence_k)


def _initial_risk(drafts: Sequence[tuple[BookAccount, float]], prices: Mapping[str, float],
                  start_ms: int) -> list[tuple[float, float, float]]:
    """Maintenance margin, dollar delta and PnL of each draft account (engine's model)."""
    engine = PartitionEngine(states=[AccountState(d.account_id, positions=d.positions)
                                     for d, _ in drafts])
    for seq, (asset, price) in enumerate(sorted(prices.items()), start=1):
        engine.apply(RiskInput("bookgen", 0, seq, ConsensusPrice(
            asset, start_ms, price, 0.0, PriceStatus.OK, 0.0, [], [], [], seq)))
    out = []
    for draft, _ in drafts:
        state = engine.state(draft.account_id)
        valuation = state.valuation if state else None
        if valuation is None:
            out.append((0.0, 0.0, 0.0))
            continue
        dollar_delta = math.fsum(abs(e.delta) * e.spot for e in valuation.exposures)
        out.append((valuation.maintenance_margin, dollar_delta, valuation.equity))
    return out


def account_events(book: Sequence[BookAccount], start_ms: int = 0) -> list[AccountEvent]:
    """The account events that create `book`: collateral, positions, then rules."""
    events = []
    for account in book:
        n = 0

        def event(body: object, account: BookAccount = account) -> AccountEvent:
            nonlocal n
            n += 1
            return AccountEvent(f"book-{account.account_id}-{n}", account.account_id,
                                start_ms, body)  # type: ignore[arg-type]

        for c in account.collateral:
            events.append(event(CollateralChanged(c.chain, c.balance, c.reserve)))
        for p in account.positions:
            events.append(event(PositionChanged(p)))
        if account.rules is not None:
            events.append(event(RulesChanged(account.rules)))
    return events


def generate_book(prices: Mapping[str, float], accounts: int, seed: int = 7,
                  chains: Sequence[str] = DEFAULT_CHAINS, start_ms: int = 0,
                  positions_per_account: int | None = None) -> list[AccountEvent]:
    """The generated book as account events (what a scenario producer sends)."""
    return account_events(generate_accounts(prices, accounts, seed, chains, start_ms,
                                            positions_per_account), start_ms)


def account_states(book: Sequence[BookAccount]) -> list[AccountState]:
    """The book as engine states (a faster load than replaying its events)."""
    return [AccountState(
        account_id=a.account_id, positions=list(a.positions), collateral=list(a.collateral),
        rules=a.rules, rules_hash=rules_hash(a.rules),
        base_quantities={p.position_id: p.quantity for p in a.positions
                         if p.instrument.is_option},
    ) for a in book]


def strip_rules(book: Sequence[BookAccount]) -> list[BookAccount]:
    """The same book without scaling rules (the no-policy run)."""
    return [BookAccount(a.account_id, a.collateral, a.positions, None, a.kind) for a in book]


# --- the book file (aps simulate --book) -------------------------------------------------------

def parse_book(text: str) -> list[BookAccount]:
    """Accounts from a book file: JSON, a list of accounts or {"accounts": [...]}.

    Each account: {"account_id", "collateral": [{"chain", "balance", "reserve"}],
    "positions": [Position records], "rules": ScalingRules record or null}; records use the
    Avro field names of schemas/ (enums as their symbols, optional fields may be left out).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"book file is not JSON: {exc}") from None
    items = data.get("accounts") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigError('book file must be a list of accounts or {"accounts": [...]}')
    book = []
    seen: set[str] = set()
    for n, item in enumerate(items):
        try:
            account = _account_from_json(item)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"book account #{n}: {type(exc).__name__}: {exc}") from None
        if account.account_id in seen:
            raise ConfigError(f"book account #{n}: duplicate account_id {account.account_id!r}")
        seen.add(account.account_id)
        for position in account.positions:
            validate_position(position)
        if account.rules is not None:
            validate_rules(account.rules)
        book.append(account)
    return book


def _account_from_json(item: dict) -> BookAccount:
    unknown = sorted(set(item) - {"account_id", "collateral", "positions", "rules"})
    if unknown:
        raise ValueError(f"unknown account field(s) {', '.join(unknown)}")
    rules = item.get("rules")
    return BookAccount(
        account_id=str(item["account_id"]),
        collateral=[_from_json(Collateral, c) for c in item.get("collateral", [])],
        positions=[_from_json(Position, p) for p in item.get("positions", [])],
        rules=_from_json(ScalingRules, rules) if rules is not None else None,
    )


def _from_json(tp: Any, value: Any) -> Any:
    """A domain value from JSON: fields left out take their dataclass defaults."""
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union,
                                                                  types.UnionType) else None
    if members is not None:
        if value is None:
            return None
        present = [m for m in members if m is not type(None)]
        return _from_json(present[0], value)
    origin = typing.get_origin(tp)
    if origin is list:
        return [_from_json(typing.get_args(tp)[0], v) for v in value]
    if origin is dict:
        return {str(k): _from_json(typing.get_args(tp)[1], v) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"{tp.__name__} must be an object, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"{tp.__name__} has no field(s) {', '.join(unknown)}")
        return tp(**{name: _from_json(hints[name], v) for name, v in value.items()})
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {value!r}")
        return value
    if tp is str and not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def format_book(book: Sequence[BookAccount]) -> str:
    """A book file for `book` (what `aps simulate --save-book` writes)."""
    accounts = [{
        "account_id": a.account_id,
        "collateral": [to_datum(c) for c in a.collateral],
        "positions": [to_datum(p) for p in a.positions],
        "rules": to_datum(a.rules) if a.rules is not None else None,
    } for a in book]
    return json.dumps({"accounts": accounts}, indent=1) + "\n"
