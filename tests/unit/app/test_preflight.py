"""Start-up checks (streams.app.preflight): each operator error is one ConfigError or
InfraError naming the setting, never a raw exception."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from streams.app.preflight import (
    Checks,
    PartitionMismatch,
    broker_topics,
    check_chains_file,
    check_data_dir,
    check_feeds_file,
    check_partitions,
    check_web_port,
    mismatch_message,
    partition_mismatches,
    preflight,
)
from streams.config import Settings, load_settings
from streams.errors import ConfigError, InfraError
from streams.paths import INFRA_DIR
from streams.topics import TopicSpec, topic_specs

# --- data dir -----------------------------------------------------------------------------------


def test_a_data_dir_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"APS_DATA_DIR .*file/sub cannot be created"):
        check_data_dir(tmp_path / "file" / "sub")


def test_a_data_dir_that_is_a_regular_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="APS_DATA_DIR"):
        check_data_dir(tmp_path / "file")


def test_a_data_dir_in_proc_is_refused() -> None:
    with pytest.raises(ConfigError, match="APS_DATA_DIR /proc/x cannot be created"):
        check_data_dir(Path("/proc/x"))


def test_a_missing_data_dir_is_created(tmp_path: Path) -> None:
    check_data_dir(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()


# --- feeds and chains files ---------------------------------------------------------------------


@pytest.mark.parametrize(("check", "variable"), [(check_feeds_file, "APS_FEEDS_FILE"),
                                                 (check_chains_file, "APS_CHAINS_FILE")])
def test_missing_unreadable_and_malformed_files_name_their_variable(
        tmp_path: Path, check: object, variable: str) -> None:
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[chains\n")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("nothing = 1\n")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    for path in (tmp_path / "missing.toml", tmp_path, bad_toml, wrong, binary):
        with pytest.raises(ConfigError) as info:
            check(path)  # type: ignore[operator]
        assert str(info.value).startswith(f"{variable}: ") or variable in str(info.value)
        assert "\n" not in str(info.value)


def test_the_bundled_feeds_and_chains_files_pass() -> None:
    check_feeds_file(INFRA_DIR / "feeds.toml")
    check_chains_file(INFRA_DIR / "chains.toml")


# --- web port -----------------------------------------------------------------------------------


def test_a_web_port_someone_listens_on_is_refused(listening: int) -> None:
    with pytest.raises(ConfigError, match=f"APS_WEB_PORT {listening} is not free on 127.0.0.1"):
        check_web_port(listening)


def test_a_free_web_port_passes_and_stays_free(listening: int) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    check_web_port(port)
    check_web_port(port)


@pytest.mark.parametrize("port", [0, -1, 70_000])
def test_a_web_port_outside_the_tcp_range_is_refused(port: int) -> None:
    with pytest.raises(ConfigError, match="not a TCP port"):
        check_web_port(port)


# --- broker -------------------------------------------------------------------------------------


def test_an_unreachable_broker_is_reported_by_address_within_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(InfraError, match=r"cannot reach the Kafka broker at 127\.0\.0\.1:1 "):
        broker_topics("127.0.0.1:1", timeout=1.0)
    assert time.monotonic() - started < 5.0


# --- partitions ---------------------------------------------------------------------------------


def _specs(partitions: int) -> list[TopicSpec]:
    return topic_specs(load_settings({}, partitions=partitions))


def test_existing_topics_with_the_configured_counts_pass_and_missing_ones_are_ignored() -> None:
    existing = {s.name: s.partitions for s in _specs(4)}
    del existing["risk.inputs"]
    assert partition_mismatches(existing, _specs(4)) == []
    check_partitions(existing, _specs(4), 4, "b:9092")


def test_topics_made_with_another_default_count_say_what_to_set() -> None:
    existing = {s.name: s.partitions for s in _specs(8)}
    mismatches = partition_mismatches(existing, _specs(4))
    assert {m.actual for m in mismatches} == {8} and {m.wanted for m in mismatches} == {4}
    assert "oracle.ticks" not in {m.topic for m in mismatches}  # one partition either way
    with pytest.raises(ConfigError) as info:
        check_partitions(existing, _specs(4), 4, "b:9092")
    text = str(info.value)
    assert text.startswith("the topics on b:9092 have 8 partitions (oracle.prices, ")
    assert "but APS_PARTITIONS=4; set APS_PARTITIONS=8 to use them" in text
    assert "and 4 more" in text and "\n" not in text


def test_mixed_counts_are_listed_topic_by_topic() -> None:
    mismatches = [PartitionMismatch("oracle.ticks", 3, 1), PartitionMismatch("risk.inputs", 8, 4)]
    text = mismatch_message(mismatches, 4, "b:9092")
    assert "oracle.ticks has 3, wants 1; risk.inputs has 8, wants 4" in text
    assert "set APS_PARTITIONS=" not in text


def test_preflight_runs_local_checks_before_the_broker(tmp_path: Path, listening: int) -> None:
    (tmp_path / "file").write_text("x")
    settings = Settings(data_dir=tmp_path / "file", web_port=listening)
    with pytest.raises(ConfigError, match="APS_DATA_DIR"):
        preflight(settings, Checks(web_port=True), "127.0.0.1:1")
    settings = Settings(data_dir=tmp_path / "d", web_port=listening)
    with pytest.raises(ConfigError, match="APS_WEB_PORT"):
        preflight(settings, Checks(web_port=True), "127.0.0.1:1")
    preflight(Settings(data_dir=tmp_path / "d"), Checks(feeds=True, chains=True), None)
