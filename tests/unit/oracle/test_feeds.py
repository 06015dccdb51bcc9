"""The feed registry: the shipped infra/feeds.toml, strict parsing, and chains as config."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.domain import OracleSource
from streams.errors import ConfigError
from streams.oracle.consensus import ConsensusEngine
from streams.oracle.feeds import SequencerFeed, load_feeds, loads_feeds
from streams.paths import INFRA_DIR
from tests.unit.oracle.helpers import T0, THREE_SOURCES_TOML, chainlink, pyth


def test_shipped_registry_prices_three_assets_on_three_chains() -> None:
    registry = load_feeds(INFRA_DIR / "feeds.toml")
    assert registry.assets == ("BTC", "ETH", "SOL")
    for asset in registry.assets:
        feeds = registry.feeds_for(asset)
        assert {(f.chain, f.source) for f in feeds} == {
            ("ethereum", OracleSource.CHAINLINK), ("arbitrum", OracleSource.CHAINLINK),
            ("solana", OracleSource.PYTH), ("arbitrum", OracleSource.PYTH)}
        assert all(f.exponent == -8 for f in feeds)
    assert [s.chain for s in registry.sequencers] == ["arbitrum"]
    assert registry.consensus.min_sources == 2


def test_lookup_ignores_case_and_0x_prefix() -> None:
    registry = loads_feeds(THREE_SOURCES_TOML)
    eth = registry.lookup("ethereum", OracleSource.CHAINLINK,
                          "5F4EC3DF9CBD43714FE2740F5E3616155C5B8419")
    assert eth is not None and eth.asset == "ETH" and eth.exponent == -8
    seq = registry.lookup("arbitrum", OracleSource.CHAINLINK,
                          "0xfdb631f5ee196f0ed6faa767959853a9f217697d")
    assert isinstance(seq, SequencerFeed) and seq.grace_s == 3600.0
    assert registry.lookup("solana", OracleSource.CHAINLINK, eth.feed_id) is None


@pytest.mark.parametrize("edit, message", [
    (("heartbeat_s = 10", "heartbeat_s = 10\nheartbeet = 3"), "unknown key"),
    (('source = "pyth"', 'source = "redstone"'), "chainlink or pyth"),
    (("expo = -8", "decimals = 8"), "pyth feed has expo"),
    (("expo = -8", "expo = -40"), "expo must be in"),
    (("decimals = 8\nheartbeat_s = 3600", "decimals = 8.5\nheartbeat_s = 3600"), "integer"),
    (('chain = "solana"', 'chain = "solanna"'), "not declared"),
    (("heartbeat_s = 10", "heartbeat_s = 10\nweight = 0"), "weight > 0"),
    (("[chains.solana]", "[consensus]\nmin_sources = 4\n[chains.solana]"), "min_sources"),
    (("[chains.solana]", "[consensus]\nquorum = 2\n[chains.solana]"), "unknown key"),
])
def test_bad_configuration_is_refused(edit: tuple[str, str], message: str) -> None:
    old, new = edit
    assert old in THREE_SOURCES_TOML
    with pytest.raises(ConfigError, match=message):
        loads_feeds(THREE_SOURCES_TOML.replace(old, new, 1))


def test_the_same_feed_twice_is_refused() -> None:
    duplicate = THREE_SOURCES_TOML.split("[[feeds]]")[1]
    with pytest.raises(ConfigError, match="configured twice"):
        loads_feeds(THREE_SOURCES_TOML + "\n[[feeds]]" + duplicate)


def test_adding_a_chain_is_configuration_only() -> None:
    base_chain = ('[chains.base]\nmax_clock_skew_s = 2.0\n'
                  'sequencer_feed = "0xBCF85224fc0756B9Fa45aA7892530B47e10b6433"\n[chains.solana]')
    base = (THREE_SOURCES_TOML.replace("[chains.solana]", base_chain)
            + '\n[[feeds]]\nasset = "ETH"\nchain = "base"\nsource = "chainlink"\n'
              'feed_id = "0x71041dddad3595F9CEd3DcCFBe3D1F4b0a16Bb70"\ndecimals = 8\n'
              'heartbeat_s = 1200\ndeviation_bps = 15\n')
    registry = loads_feeds(base)
    engine = ConsensusEngine(registry)
    engine.observe(pyth(T0, 2000.0))
    out = engine.observe(chainlink("0x71041dddad3595F9CEd3DcCFBe3D1F4b0a16Bb70", T0 + 100,
                                   2001.0, chain="base"))
    assert out.accepted
    assert "chainlink@base" in out.prices[-1].sources_used
    assert [s.chain for s in registry.sequencers] == ["arbitrum", "base"]


def test_missing_feeds_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_feeds(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[feeds]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_feeds(bad)
