"""Chain profiles: the bundled file, settlement latency, and refusal of bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.executors import load_chain_profiles
from streams.paths import INFRA_DIR

GOOD_DEFAULT = """
[default]
block_time_ms = 1000
confirmations = 2
fee_bps = 5.0
base_slippage_bps = 5.0
impact_bps_per_million = 10.0
"""


def test_the_bundled_profiles_cover_the_default_chains() -> None:
    profiles = load_chain_profiles(INFRA_DIR / "chains.toml")
    assert set(profiles.by_chain) >= {"ethereum", "arbitrum", "solana"}
    assert profiles.profile("ethereum").settlement_ms == 12_000
    assert profiles.profile("arbitrum").venue().name == "sim-arbitrum"


def test_settlement_is_block_time_times_confirmations(tmp_path: Path) -> None:
    path = tmp_path / "chains.toml"
    path.write_text(GOOD_DEFAULT)
    profile = load_chain_profiles(path).profile("anychain")
    assert profile.settlement_ms == 2000
    assert profile.venue().settlement_ms == 2000


@pytest.mark.parametrize(("text", "message"), [
    ("", "a \\[default\\] profile is required"),
    (GOOD_DEFAULT.replace("confirmations = 2", "confirmations = -1"), "confirmations"),
    (GOOD_DEFAULT.replace("fee_bps = 5.0", "fee_bps = nan"), "fee_bps"),
    (GOOD_DEFAULT + "colour = 'red'\n", "unknown \\['colour'\\]"),
    (GOOD_DEFAULT + "[extra]\nx = 1\n", "unknown section"),
    ("not toml [", "not valid TOML"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "chains.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_chain_profiles(path)


def test_a_missing_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="APS_CHAINS_FILE"):
        load_chain_profiles(tmp_path / "nope.toml")
