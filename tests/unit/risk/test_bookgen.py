"""The generated book: reproducible, sized like a venue's, starting above its ladders."""

from __future__ import annotations

import json

import pytest

from streams.domain import AccountEvent, CollateralChanged, PositionChanged, RulesChanged
from streams.errors import ConfigError, DomainError
from streams.risk.bookgen import (
    DESK_PRICES,
    account_events,
    account_states,
    format_book,
    generate_accounts,
    generate_book,
    generate_desk,
    parse_book,
)
from streams.risk.engine import PartitionEngine
from tests.unit.risk.test_engine import price_input

PRICES = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0}


def test_same_seed_same_book_and_another_seed_another() -> None:
    assert generate_accounts(PRICES, 50, seed=3) == generate_accounts(PRICES, 50, seed=3)
    assert generate_accounts(PRICES, 50, seed=3) != generate_accounts(PRICES, 50, seed=4)


def test_book_mixes_kinds_assets_and_chains() -> None:
    book = generate_accounts(PRICES, 600, seed=1, chains=("ethereum", "arbitrum"))
    kinds = {a.kind for a in book}
    assert kinds == {"directional", "seller", "buyer"}
    assets = {p.instrument.underlying for a in book for p in a.positions}
    assert assets == set(PRICES)
    assert {c.chain for a in book for c in a.collateral} == {"ethereum", "arbitrum"}
    assert all(a.rules is not None and a.rules.margin_ladder is not None for a in book)
    with_reserve = sum(a.collateral[0].reserve > 0 for a in book) / len(book)
    assert 0.45 < with_reserve < 0.75


def test_fixed_positions_per_account() -> None:
    book = generate_accounts({"BTC": 60_000.0}, 200, seed=2, positions_per_account=3)
    assert {len(a.positions) for a in book} == {3}


def test_every_account_starts_above_its_ladder() -> None:
    book = generate_accounts(PRICES, 400, seed=9)
    engine = PartitionEngine(states=account_states(book))
    for seq, (asset, price) in enumerate(sorted(PRICES.items()), start=1):
        engine.apply(price_input(asset, price, seq, 0))
    starting_below = []
    for account in book:
        top = max(s.margin_ratio for s in account.rules.margin_ladder.steps)  # type: ignore[union-attr]
        figures = engine.figures(account.account_id)
        assert figures is not None
        if figures.margin_ratio < top:
            starting_below.append(account.account_id)
    # perp entries carry a little noise, so a handful may start just under a floor step
    assert len(starting_below) <= 4


def test_events_create_the_book() -> None:
    book = generate_accounts({"ETH": 3_000.0}, 5, seed=1)
    events = account_events(book, start_ms=42)
    assert all(isinstance(e, AccountEvent) and e.event_time == 42 for e in events)
    assert len({e.event_id for e in events}) == len(events)
    first = [e for e in events if e.account_id == book[0].account_id]
    assert isinstance(first[0].body, CollateralChanged)
    assert isinstance(first[-1].body, RulesChanged)
    assert sum(isinstance(e.body, PositionChanged) for e in first) == len(book[0].positions)
    assert generate_book({"ETH": 3_000.0}, 5, seed=1, start_ms=42) == account_events(
        generate_accounts({"ETH": 3_000.0}, 5, seed=1, start_ms=42), start_ms=42)


def test_book_file_round_trip_and_minimal_form() -> None:
    book = generate_accounts({"BTC": 60_000.0}, 20, seed=1)
    assert parse_book(format_book(book)) == book
    minimal = [{"account_id": "x", "collateral": [{"chain": "solana", "balance": 1000,
                                                    "reserve": 0}],
                "positions": [{"position_id": "p", "quantity": 0.1, "entry_price": 60000,
                               "instrument": {"instrument_id": "BTC-PERP", "kind": "PERP",
                                              "underlying": "BTC", "chain": "solana"}}]}]
    (account,) = parse_book(json.dumps(minimal))
    assert account.rules is None and account.positions[0].instrument.strike is None


@pytest.mark.parametrize("text, error", [
    ("not json", ConfigError),
    ('{"accounts": 3}', ConfigError),
    ('[{"collateral": []}]', ConfigError),
    ('[{"account_id": "a"}, {"account_id": "a"}]', ConfigError),
    ('[{"account_id": "a", "collateral": [{"chain": "x", "balance": "lots"}]}]', ConfigError),
    ('[{"account_id": "a", "colateral": []}]', ConfigError),
    ('[{"account_id": "a", "positions": [{"position_id": "p", "quantity": 1,'
     ' "entry_price": 1, "instrument": {"instrument_id": "o", "kind": "OPTION",'
     ' "underlying": "BTC", "chain": "x"}}]}]', DomainError),
])
def test_bad_book_files_are_refused_clearly(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_book(text)


def test_the_desk_book_holds_one_to_five_options_and_perps_on_ten_assets() -> None:
    book = generate_desk(800, seed=2)
    assert {len(a.positions) for a in book} == {1, 2, 3, 4, 5}
    assert {p.instrument.underlying for a in book for p in a.positions} == set(DESK_PRICES)
    assert {c.chain for a in book for c in a.collateral} == {"ethereum", "arbitrum", "solana"}
    kinds = {p.instrument.kind.value for a in book for p in a.positions}
    assert kinds == {"OPTION", "PERP"}
    assert generate_desk(50, seed=2) == generate_desk(50, seed=2)
    # the benchmark's book: every account on one asset
    btc = generate_desk(200, seed=2, home="BTC")
    assert {p.instrument.underlying for a in btc for p in a.positions} == {"BTC"}
    # every account starts above its ladder
    engine = PartitionEngine(states=account_states(btc))
    engine.apply(price_input("BTC", 60_000.0, 1, 0))
    tops = {a.account_id: max(s.margin_ratio for s in a.rules.margin_ladder.steps)  # type: ignore[union-attr]
            for a in btc}
    assert all(engine.figures(i).margin_ratio > top for i, top in tops.items())  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="home"):
        generate_desk(5, home="NOPE")
