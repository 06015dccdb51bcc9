"""Settings: defaults, parsing, refusal of unknown keys, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.app.partitioning import account_partition
from streams.clock import EventTimeClock
from streams.config import load_settings
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
