"""The consensus stage and the risk engine together (the code the workers run, without the
broker): a manipulated feed moves no decision, stale sources make the policy hold."""

from __future__ import annotations

from dataclasses import replace

from streams.config import Settings
from streams.domain import (
    AccountEvent,
    Collateral,
    ConsensusPrice,
    Instrument,
    InstrumentKind,
    LadderAction,
    MarginLadder,
    MarginStep,
    OracleSource,
    Position,
    PriceStatus,
    RiskInput,
    ScalingCommand,
    ScalingRules,
)
from streams.oracle.consensus import ConsensusEngine
from streams.oracle.feeds import load_feeds
from streams.oracle.synthetic import Silence, Spike, observations_from_paths, random_walk_paths
from streams.risk.bookgen import BookAccount, account_events
from streams.risk.engine import PartitionEngine

START = 1_768_478_400_000
PRICES = {"BTC": 64_000.0, "ETH": 3_200.0, "SOL": 150.0}
FEEDS = load_feeds(Settings().feeds_file)


def _book(reserve: bool = True) -> list[AccountEvent]:
    """Accounts short ETH perps at 10x with a margin ladder: a calm market leaves them alone,
    a 30% jump of the ETH price would send every one of them down the ladder."""
    ladder = MarginLadder([MarginStep(1.6, LadderAction.TOP_UP, 0.5),
                           MarginStep(1.3, LadderAction.REDUCE, 0.5)], target_ratio=2.0)
    book = []
    for n in range(20):
        perp = Instrument("ETH-PERP", InstrumentKind.PERP, "ETH", "arbitrum")
        quantity = -(5 + n) * 1.0
        collateral = abs(quantity) * PRICES["ETH"] / 10.0
        cover = collateral if reserve else 0.0
        book.append(BookAccount(f"short-{n:02d}", [Collateral("arbitrum", collateral, cover)],
                                [Position(f"p{n}", perp, quantity, PRICES["ETH"])],
                                ScalingRules(margin_ladder=ladder)))
    return account_events(book, START)


def _consensus(faults: list[object]) -> list[ConsensusPrice]:
    paths = random_walk_paths(PRICES, START, 600, seed=5, annual_vol=0.25)
    engine = ConsensusEngine(FEEDS)
    prices: list[ConsensusPrice] = []
    for observation in observations_from_paths(paths, FEEDS, seed=5, faults=faults):
        prices += engine.observe(observation).prices
    return prices


def _decide(prices: list[ConsensusPrice], reserve: bool = True) -> list[ScalingCommand]:
    engine = PartitionEngine()
    for offset, event in enumerate(_book(reserve)):
        engine.apply(RiskInput("account.events", 0, offset, event))
    commands = []
    for offset, price in enumerate(prices):
        commands += engine.apply(RiskInput("oracle.prices", 0, offset, price))
    return commands


def _accounts(commands: list[ScalingCommand]) -> set[str]:
    return {c.account_id for c in commands}


SPIKE = Spike("solana", START + 120_000, START + 180_000, 1.30, OracleSource.PYTH, "ETH")


def test_a_spiking_feed_moves_neither_the_price_nor_any_decision() -> None:
    honest = _consensus([])
    spiked = _consensus([SPIKE])
    honest_high = max(p.price for p in honest if p.asset == "ETH")
    assert max(p.price for p in spiked if p.asset == "ETH") <= honest_high * 1.001
    assert _decide(honest) == [] and _decide(spiked) == []


def test_the_same_spike_trusted_blindly_would_have_caused_commands() -> None:
    # proves the previous test can fail: feed the manipulated price straight to the engine
    blind = [replace(p, price=p.price * 1.30)
             if p.asset == "ETH" and SPIKE.start_ms <= p.event_time < SPIKE.end_ms else p
             for p in _consensus([])]
    assert len(_accounts(_decide(blind))) == 20


def _rally(prices: list[ConsensusPrice]) -> list[ConsensusPrice]:
    """ETH climbs 0.5% per price after the sources went quiet, up to +30%: the shorts walk
    down their margin ladder."""
    out, step = [], 0
    for price in prices:
        if price.asset == "ETH" and price.event_time > START + 200_000:
            step += 1
            price = replace(price, price=price.price * (1 + min(0.30, 0.005 * step)))
        out.append(price)
    return out


def test_stale_sources_make_the_price_untrusted_and_the_policy_opens_no_risk() -> None:
    # both Pyth feeds of ETH go quiet (Chainlink rounds stay fresh for their 1 h heartbeat)
    silent = [Silence(chain, START + 60_000, START + 600_000, OracleSource.PYTH, "ETH")
              for chain in ("solana", "arbitrum")]
    prices = _consensus(silent)
    late_eth = [p for p in prices if p.asset == "ETH" and p.event_time > START + 200_000]
    assert late_eth and all(p.status is not PriceStatus.OK for p in late_eth)
    jumped = _rally(prices)
    trusted = [replace(p, status=PriceStatus.OK) if p.asset == "ETH" else p for p in jumped]
    # without a reserve to top up from, the ladder reduces; on a trusted price it may trade
    # freely, on the untrusted one only reduce-only trades may go out
    assert [c for c in _decide(trusted, reserve=False) if c.instrument is not None]
    held = [c for c in _decide(jumped, reserve=False) if c.instrument is not None]
    assert held and all(c.reduce_only for c in held)
