"""Fixtures built in code, in the exact shapes the two oracle families publish."""

from __future__ import annotations

from streams.domain import ChainlinkRound, OracleObservation, OracleSource, PythPriceUpdate
from streams.oracle.consensus import ConsensusEngine, Outcome
from streams.oracle.feeds import FeedRegistry, loads_feeds
from streams.oracle.normalize import compose_round_id

T0_S = 1_700_000_000
T0 = T0_S * 1000

CL_ETH = "0x5f4eC3Df9cbd43714FE2740f5E3616155c5b8419"   # ETH/USD proxy, Ethereum
CL_ARB = "0x639Fe6ab55C921f74e7fac1ee960C0B6293ba612"   # ETH/USD proxy, Arbitrum
PYTH_ETH = "ff61491a931112ddf1bd8147cd1b641375f79f5825126d665480874634fd0ace"
SEQUENCER = "0xFdB631F5EE196F0ed6FAa767959853A9F217697D"

# One asset priced by three sources on three chains, plus Arbitrum's sequencer feed.
THREE_SOURCES_TOML = f"""
[chains.ethereum]
max_clock_skew_s = 5.0
[chains.arbitrum]
max_clock_skew_s = 5.0
sequencer_feed = "{SEQUENCER}"
sequencer_grace_s = 3600.0
[chains.solana]
max_clock_skew_s = 10.0

[[feeds]]
asset = "ETH"
chain = "ethereum"
source = "chainlink"
feed_id = "{CL_ETH}"
decimals = 8
heartbeat_s = 3600
deviation_bps = 50

[[feeds]]
asset = "ETH"
chain = "arbitrum"
source = "chainlink"
feed_id = "{CL_ARB}"
decimals = 8
heartbeat_s = 86400
deviation_bps = 5

[[feeds]]
asset = "ETH"
chain = "solana"
source = "pyth"
feed_id = "{PYTH_ETH}"
expo = -8
heartbeat_s = 10
"""


def three_sources() -> FeedRegistry:
    """ETH on chainlink@ethereum, chainlink@arbitrum and pyth@solana."""
    return loads_feeds(THREE_SOURCES_TOML)


def chainlink(feed_id: str, received_at: int, price: float | None = None, *,
              chain: str = "ethereum", round_no: int = 1, phase: int = 6,
              updated_at: int | None = None, answer: str | None = None,
              started_at: int | None = None, answered_in_round: str | None = None
              ) -> OracleObservation:
    """A Chainlink round as latestRoundData returns it (8 decimals by default)."""
    round_id = str(compose_round_id(phase, round_no))
    updated = received_at // 1000 if updated_at is None else updated_at
    body = ChainlinkRound(
        round_id=round_id,
        answer=answer if answer is not None else str(round((price or 0.0) * 1e8)),
        started_at=updated if started_at is None else started_at,
        updated_at=updated,
        answered_in_round=round_id if answered_in_round is None else answered_in_round,
    )
    return OracleObservation(chain, OracleSource.CHAINLINK, feed_id, received_at, body)


def pyth(received_at: int, price: float, *, conf_bps: float = 5.0, chain: str = "solana",
         feed_id: str = PYTH_ETH, publish_time: int | None = None, expo: int = -8
         ) -> OracleObservation:
    """A Pyth update as a Hermes parsed[] entry carries it."""
    scale = 10 ** -expo
    mantissa = round(price * scale)
    conf = max(1, round(price * conf_bps / 1e4 * scale))
    body = PythPriceUpdate(price=mantissa, conf=conf, expo=expo,
                           publish_time=received_at // 1000 if publish_time is None
                           else publish_time, ema_price=mantissa, ema_conf=conf)
    return OracleObservation(chain, OracleSource.PYTH, feed_id, received_at, body)


def sequencer(received_at: int, status: int, since_s: int, round_no: int) -> OracleObservation:
    """A round of Arbitrum's sequencer-uptime feed: 0 = up, 1 = down, since `since_s`."""
    round_id = str(compose_round_id(1, round_no))
    body = ChainlinkRound(round_id=round_id, answer=str(status), started_at=since_s,
                          updated_at=received_at // 1000, answered_in_round=round_id)
    return OracleObservation("arbitrum", OracleSource.CHAINLINK, SEQUENCER, received_at, body)


def warm(engine: ConsensusEngine, at: int = T0, price: float = 2000.0) -> Outcome:
    """Give every source of the three-source registry a fresh value at `at`; last outcome."""
    engine.observe(chainlink(CL_ETH, at, price, round_no=100))
    engine.observe(chainlink(CL_ARB, at, price, chain="arbitrum", phase=3, round_no=500))
    return engine.observe(pyth(at, price))
