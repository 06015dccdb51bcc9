"""ClickHouse fixtures (a pytest plugin loaded by tests/conftest.py).

- `clickhouse_server_url`: APS_TEST_CLICKHOUSE_URL if set, else a throw-away server
  started from the installed binary for the whole session. A missing binary skips loudly
  on a laptop and fails in CI (tests.conftest.missing_component).
- `archive_backend`: each test runs twice, against embedded chdb (a fresh directory) and
  against the server (a fresh database, dropped afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from streams.archive.backends import ArchiveBackend, ChdbBackend, ServerBackend
from streams.errors import InfraError
from streams.infra.clickhouse import ClickHouseServer


@pytest.fixture(scope="session")
def clickhouse_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """clickhouse:// URL of a real server's default database."""
    external = os.environ.get("APS_TEST_CLICKHOUSE_URL")
    if external:
        yield external
        return
    from tests.conftest import missing_component  # conftest loads this plugin

    server = ClickHouseServer(base_dir=tmp_path_factory.mktemp("clickhouse"))
    try:
        server.start()
    except InfraError as exc:
        missing_component(f"ClickHouse server could not start: {exc}")
        raise
    try:
        yield server.url
    finally:
        server.stop()


def database_url(url: str, database: str) -> str:
    """`url` pointing at another database of the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@pytest.fixture
def server_database_url(clickhouse_server_url: str) -> Iterator[str]:
    """URL of a fresh database on the test server, dropped after the test."""
    name = f"aps_test_{uuid.uuid4().hex[:12]}"
    url = database_url(clickhouse_server_url, name)
    yield url
    admin = ServerBackend(database_url(clickhouse_server_url, "default"))
    try:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
    finally:
        admin.close()


@pytest.fixture(params=["chdb", "server"])
def archive_backend(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveBackend]:
    """An empty archive, embedded (chdb) or on the server: the same test runs on both."""
    if request.param == "chdb":
        backend: ArchiveBackend = ChdbBackend(tmp_path_factory.mktemp("chdb") / "archive")
    else:
        backend = ServerBackend(request.getfixturevalue("server_database_url"))
    try:
        yield backend
    finally:
        backend.close()
