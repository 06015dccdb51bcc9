"""The engine's settings file: loading, refusals, the hash, and the hash in every command."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from streams.codecs import decode, encode
from streams.config import load_settings
from streams.domain import OptionType, Position, ScalingCommand
from streams.errors import ConfigError
from streams.paths import INFRA_DIR
from streams.risk.engine import EngineConfig, PartitionEngine
from streams.risk.margin import MarginParams, StressGrid
from streams.risk.policy import PolicyConfig
from streams.risk.settings import (
    engine_config_for,
    engine_config_from_env,
    engine_config_hash,
    load_engine_config,
)
from tests.unit.risk.engine_helpers import Feeder, option, rules
from tests.unit.risk.test_policy_scenarios import hedged_straddle

# the digest of EngineConfig(): changes only when a default (or a setting) is added or changed
DEFAULT_HASH = "16695f0ef9271e56fad8b12d819109d0"

FULL = """
rate = 0.03
default_vol = 0.7
default_confidence_k = 3
vol_window_capacity = 256
report_grace_ms = 5000
persist_ratio_step = 0.1
max_refusals = 500
max_clock_advance_ms = 60000

[margin]
linear_mm_rate = 0.02
linear_im_rate = 0.04
option_floor_rate = 0.02
option_im_factor = 2.0

[margin_by_asset.SOL]
linear_mm_rate = 0.05
linear_im_rate = 0.1

[margin_by_asset.BTC]
option_im_factor = 1.25

[grid]
spot_range = 0.2
spot_steps = 4
vol_shift = 0.1
min_vol = 0.02

[policy]
vol_scale_tolerance = 0.05
gamma_target_fraction = 0.8
protective_slippage_bps = 200
min_vol_observations = 20
default_chain = "arbitrum"
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return path


# --- loading ---------------------------------------------------------------------------------

def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_engine_config(_file(tmp_path, "")) == EngineConfig()


def test_the_example_file_lists_exactly_the_defaults() -> None:
    assert load_engine_config(INFRA_DIR / "engine.example.toml") == EngineConfig()


def test_the_example_file_sets_every_setting() -> None:
    # every field of every nested table is written out (so the file documents them all)
    text = (INFRA_DIR / "engine.example.toml").read_text()
    for cls in (EngineConfig, MarginParams, StressGrid, PolicyConfig):
        for f in fields(cls):
            if f.name in ("margin", "grid", "policy", "margin_by_asset"):
                continue
            assert f"\n{f.name} = " in text, f"{cls.__name__}.{f.name} is not in the example"


def test_a_full_file_sets_every_field(tmp_path: Path) -> None:
    config = load_engine_config(_file(tmp_path, FULL))
    assert config == EngineConfig(
        rate=0.03, default_vol=0.7, default_confidence_k=3.0, vol_window_capacity=256,
        report_grace_ms=5000, persist_ratio_step=0.1, max_refusals=500,
        max_clock_advance_ms=60_000,
        margin=MarginParams(0.02, 0.04, 0.02, 2.0),
        # sorted by asset; keys left out take the MarginParams defaults, not [margin]'s
        margin_by_asset=(("BTC", MarginParams(option_im_factor=1.25)),
                         ("SOL", MarginParams(linear_mm_rate=0.05, linear_im_rate=0.1))),
        grid=StressGrid(spot_range=0.2, spot_steps=4, vol_shift=0.1, min_vol=0.02),
        policy=PolicyConfig(0.05, 0.8, 200.0, 20, "arbitrum"))
    assert isinstance(config.default_confidence_k, float)  # an integer in a float field
    assert config.margin_for("SOL").linear_mm_rate == 0.05
    assert config.margin_for("ETH") == config.margin


def test_a_nested_table_alone_keeps_the_other_defaults(tmp_path: Path) -> None:
    config = load_engine_config(_file(tmp_path, "[policy]\ndefault_chain = \"ethereum\"\n"))
    assert config == EngineConfig(policy=PolicyConfig(default_chain="ethereum"))


@pytest.mark.parametrize(("text", "key"), [
    ("rat = 0.01\n", "'rat'"),
    ("[margin]\nlinear_mm = 0.01\n", "'margin.linear_mm'"),
    ("[margin_by_asset.BTC]\nfloor = 0.1\n", "'margin_by_asset.BTC.floor'"),
    ("[policy]\ndefault_chian = \"x\"\n", "'policy.default_chian'"),
    ("[risk]\nrate = 0.0\n", "'risk'"),
])
def test_an_unknown_key_is_refused_with_its_name_and_the_file(tmp_path: Path, text: str,
                                                              key: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError, match="unknown key") as refused:
        load_engine_config(path)
    assert key in str(refused.value) and str(path) in str(refused.value)


@pytest.mark.parametrize(("text", "key"), [
    ("rate = \"0.01\"\n", "rate"),
    ("max_refusals = 10.5\n", "max_refusals"),
    ("max_refusals = true\n", "max_refusals"),
    ("rate = true\n", "rate"),
    ("margin = 0.01\n", "margin"),
    ("[grid]\nspot_steps = 3.0\n", "grid.spot_steps"),
    ("[policy]\ndefault_chain = 1\n", "policy.default_chain"),
    ("margin_by_asset = [1, 2]\n", "margin_by_asset"),
    ("[margin_by_asset]\nBTC = 0.5\n", "margin_by_asset.BTC"),
])
def test_a_value_of_the_wrong_type_is_refused(tmp_path: Path, text: str, key: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError, match=f"{key} must be") as refused:
        load_engine_config(path)
    assert str(path) in str(refused.value)


def test_a_value_the_settings_refuse_names_its_table(tmp_path: Path) -> None:
    path = _file(tmp_path, "[grid]\nspot_range = 1.5\n")
    with pytest.raises(ConfigError, match=r"\[grid\]: need 0 < spot_range < 1"):
        load_engine_config(path)


def test_bad_toml_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_engine_config(_file(tmp_path, "rate = \n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_engine_config(tmp_path / "missing.toml")


def test_the_environment_names_the_file(tmp_path: Path) -> None:
    path = _file(tmp_path, "rate = 0.05\n")
    assert engine_config_from_env({}) == EngineConfig()
    assert engine_config_from_env({"APS_ENGINE_CONFIG": ""}) == EngineConfig()
    assert engine_config_from_env({"APS_ENGINE_CONFIG": str(path)}) == EngineConfig(rate=0.05)
    settings = load_settings({"APS_ENGINE_CONFIG": str(path)})
    assert settings.engine_config == path
    assert engine_config_for(settings) == EngineConfig(rate=0.05)
    assert engine_config_for(load_settings({})) == EngineConfig()
    assert load_settings({}).describe()["engine_config"] == "(defaults)"


# --- the hash --------------------------------------------------------------------------------

def test_the_default_hash_is_pinned_and_the_same_in_another_process() -> None:
    assert engine_config_hash(EngineConfig()) == DEFAULT_HASH
    code = ("from streams.risk.engine import EngineConfig; from streams.risk.settings import "
            "engine_config_hash; print(engine_config_hash(EngineConfig()))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin",
                                            "PYTHONPATH": ":".join(sys.path)})
    assert other.stdout.strip() == DEFAULT_HASH


def _one_change_each() -> list[EngineConfig]:
    base = EngineConfig()
    return [
        replace(base, rate=0.01), replace(base, default_vol=0.5),
        replace(base, default_confidence_k=2.5), replace(base, vol_window_capacity=100),
        replace(base, report_grace_ms=1), replace(base, persist_ratio_step=0.06),
        replace(base, max_refusals=9_999), replace(base, max_clock_advance_ms=1),
        replace(base, margin=MarginParams(linear_mm_rate=0.011)),
        replace(base, margin=MarginParams(option_im_factor=1.6)),
        replace(base, margin_by_asset=(("BTC", MarginParams()),)),
        replace(base, margin_by_asset=(("ETH", MarginParams()),)),
        replace(base, grid=StressGrid(spot_steps=4)), replace(base, grid=StressGrid(min_vol=0.02)),
        replace(base, policy=PolicyConfig(vol_scale_tolerance=0.2)),
        replace(base, policy=PolicyConfig(min_vol_observations=11)),
        replace(base, policy=PolicyConfig(default_chain="ethereum")),
    ]


def test_changing_any_one_setting_changes_the_hash() -> None:
    hashes = [engine_config_hash(config) for config in _one_change_each()]
    assert DEFAULT_HASH not in hashes
    assert len(set(hashes)) == len(hashes)
    assert all(len(h) == 32 and h == h.lower() and int(h, 16) >= 0 for h in hashes)


def test_equal_configs_hash_alike() -> None:
    assert engine_config_hash(EngineConfig(rate=0.05, policy=PolicyConfig(0.1))) \
        == engine_config_hash(EngineConfig(rate=0.05, policy=PolicyConfig(0.1)))
    # an integer in a float field is the same setting
    assert engine_config_hash(EngineConfig(default_vol=1)) \
        == engine_config_hash(EngineConfig(default_vol=1.0))


def test_a_loaded_file_hashes_as_the_config_it_describes(tmp_path: Path) -> None:
    config = load_engine_config(_file(tmp_path, FULL))
    assert engine_config_hash(config) == engine_config_hash(replace(config))
    assert engine_config_hash(config) != DEFAULT_HASH


# --- the hash in every command ---------------------------------------------------------------

def _commands(config: EngineConfig) -> list[ScalingCommand]:
    feed = Feeder(PartitionEngine(config))
    hedged_straddle(feed)
    feed.price("BTC", 60_000.0, 0)
    return feed.price("BTC", 63_000.0, 1_000)


def test_every_command_carries_its_engines_config_hash() -> None:
    default = _commands(EngineConfig())
    assert default and all(c.provenance.config_hash == DEFAULT_HASH for c in default)
    other_config = EngineConfig(persist_ratio_step=0.2)  # decides alike, hashes otherwise
    other = _commands(other_config)
    assert [c.provenance.config_hash for c in other] == [engine_config_hash(other_config)]
    assert other[0].provenance.config_hash != DEFAULT_HASH
    assert replace(other[0], provenance=replace(other[0].provenance,
                                                config_hash=DEFAULT_HASH)) == default[0]
    assert decode(encode(other[0]), ScalingCommand) == other[0]


def test_the_batched_policy_sets_the_hash_too() -> None:
    config = EngineConfig(rate=0.0, max_refusals=77)
    engine = PartitionEngine(config, batch_min=1)
    feed = Feeder(engine)
    positions = [Position("c", option(60_000.0, OptionType.CALL), -1.0, 2_800.0, 0.6)]
    for n in range(3):
        feed.account(f"a{n}", positions, 4_000.0, 1_000.0, rules(cooldown_ms=0))
    feed.price("BTC", 60_000.0, 0)
    commands = feed.price("BTC", 75_000.0, 1_000)
    assert commands and engine.batch_stats.accounts > 0
    assert {c.provenance.config_hash for c in commands} == {engine_config_hash(config)}
