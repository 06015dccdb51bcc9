"""Shared fixtures: the real Kafka-protocol broker (and, via the plugin, ClickHouse)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from streams.infra.broker import EmbeddedBroker

pytest_plugins = ["tests.clickhouse_fixtures"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_component(reason: str) -> None:
    """Skip loudly on a developer machine; fail in CI, where every component must exist."""
    if IN_CI:
        pytest.fail(f"required component missing in CI: {reason}")
    pytest.skip(f"SKIPPED, component missing: {reason}")


@pytest.fixture
def listening() -> Iterator[int]:
    """A port another socket listens on (127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """bootstrap.servers of a real broker: APS_TEST_KAFKA_BOOTSTRAP, or an embedded Tansu."""
    external = os.environ.get("APS_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    try:
        broker = EmbeddedBroker(log_path=log).start()
    except Exception as exc:
        missing_component(f"Tansu broker could not start: {exc}")
        raise
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
