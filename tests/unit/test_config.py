"""Settings: defaults, parsing, refusal of unknown keys, masking."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.app.partitioning import account_partition
from streams.clock import EventTimeClock
from streams.config import check_keys, load_settings
from streams.errors import ConfigError
from streams.topics import exec_commands, schema_for_topic, topic_specs


def test_defaults_are_the_embedded_stack() -> None:
    settings = load_settings({})
    assert settings.embedded_broker and settings.embedded_archive
    assert settings.partitions == 4 and settings.chains == ("ethereum", "arbitrum", "solana")


def test_environment_is_parsed() -> None:
    settings = load_settings({"APS_KAFKA_BOOTSTRAP": "k:9092", "APS_PARTITIONS": "8",
                              "APS_CHAINS": "base, arbitrum", "APS_DATA_DIR": "/tmp/x",
                              "APS_CLICKHOUSE_URL": "clickhouse://u:secret@h:9000/db"})
    assert settings.kafka_bootstrap == "k:9092" and settings.partitions == 8
    assert settings.chains == ("base", "arbitrum") and settings.data_dir == Path("/tmp/x")
    assert "secret" not in str(settings.describe())


@pytest.mark.parametrize("env", [{"APS_KAFKA_BOOTSTAP": "x"}, {"APS_PARTITIONS": "four"},
                                 {"APS_PARTITIONS": "0"}, {"APS_CHAINS": " , "},
                                 {"APS_CLICKHOUSE_URL": "http://h:8123"}])
def test_bad_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_settings(env)


def test_command_key_is_never_shown() -> None:
    settings = load_settings({"APS_COMMAND_KEY": "hunter2"})
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.describe())


def test_topics_expand_per_chain() -> None:
    names = {spec.name: spec for spec in topic_specs(load_settings({"APS_PARTITIONS": "6"}))}
    assert names[exec_commands("solana")].partitions == 6
    assert names["oracle.ticks"].partitions == 1
    assert schema_for_topic("exec.base.commands") == "aps.ScalingCommand"
    assert schema_for_topic("nope") is None


def test_account_partition_is_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    kafka = DefaultPartitioner()
    for account in ("acct-1", "acct-2", "whale", "α"):
        assert account_partition(account, 8) == kafka(account.encode(), list(range(8)),
                                                      list(range(8)))


def test_event_time_clock_is_monotonic() -> None:
    clock = EventTimeClock()
    assert clock.observe(10) == 10 and clock.observe(5) == 10 and clock.now() == 10


def test_aps_run_sizes_its_topics_to_its_one_worker_unless_told_otherwise() -> None:
    from streams.run.runner import stack_settings
    assert stack_settings(load_settings({})).partitions == 1
    assert stack_settings(load_settings({}), 3).partitions == 3
    assert stack_settings(load_settings({"APS_PARTITIONS": "4"})).partitions == 4
    external = load_settings({"APS_KAFKA_BOOTSTRAP": "kafka:9092"})
    assert stack_settings(external).partitions == external.partitions == 4


def test_report_key_is_never_shown() -> None:
    settings = load_settings({"APS_REPORT_KEY": "hunter3"})
    assert "hunter3" not in repr(settings) and "hunter3" not in str(settings.describe())
    assert load_settings({}).describe()["report_key"] == "<dev key>"


@pytest.mark.parametrize(("env", "variable"), [
    ({"APS_REPORT_KEY": "r" * 64}, "APS_COMMAND_KEY"),
    ({"APS_COMMAND_KEY": "c" * 64}, "APS_REPORT_KEY"),
    ({"APS_COMMAND_KEY": "k" * 64, "APS_REPORT_KEY": "k" * 64}, "APS_REPORT_KEY"),
])
def test_development_or_shared_keys_are_refused_outside_the_embedded_stack(
        env: dict[str, str], variable: str) -> None:
    settings = load_settings({"APS_KAFKA_BOOTSTRAP": "kafka:9092", **env})
    with pytest.raises(ConfigError, match=f"{variable}.*openssl rand -hex 32"):
        check_keys(settings)


def test_own_keys_outside_and_dev_keys_inside_the_embedded_stack_are_accepted() -> None:
    check_keys(load_settings({"APS_KAFKA_BOOTSTRAP": "kafka:9092", "APS_COMMAND_KEY": "c" * 64,
                              "APS_REPORT_KEY": "r" * 64}))
    check_keys(load_settings({}))


@pytest.mark.parametrize("process", [["worker"], ["executor", "--chain", "arbitrum"]])
def test_a_process_with_a_dev_key_exits_with_one_line(process: list[str],
                                                      tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("APS_")}
    env.update(APS_KAFKA_BOOTSTRAP="127.0.0.1:1", APS_DATA_DIR=str(tmp_path),
               APS_REPORT_KEY="r" * 64, COLUMNS="200")
    done = subprocess.run([sys.executable, "-m", "streams", *process], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "APS_COMMAND_KEY" in lines[0] and "openssl rand -hex 32" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
