"""A throw-away ClickHouse server for tests and development (the Debian/official binary).

Everything the server writes stays in one directory: data, tmp, user files, format
schemas, preprocessed configs and logs. The config is written there too (a minimal one,
so nothing of /etc/clickhouse-server is needed); it is accepted by ClickHouse 18.16
(Debian's package) as well as by current releases. The server runs in its own process
group, which is stopped and removed on exit.

    with ClickHouseServer() as server:
        backend = ServerBackend(server.url)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape

from streams.errors import InfraError
from streams.infra.ports import free_port, wait_for_port

CANDIDATE_BINARIES = ("/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server")


class ClickHouseMissingError(InfraError):
    """No clickhouse-server binary on this machine."""


def clickhouse_server_command() -> list[str]:
    """argv prefix that starts a ClickHouse server, or ClickHouseMissingError."""
    found = shutil.which("clickhouse-server") or next(
        (path for path in CANDIDATE_BINARIES if os.access(path, os.X_OK)), None)
    if found:
        return [found]
    single = shutil.which("clickhouse")  # official single binary: `clickhouse server`
    if single:
        return [single, "server"]
    raise ClickHouseMissingError(
        "clickhouse-server is not installed (Debian/Ubuntu: `apt-get install "
        "clickhouse-server`); or point APS_TEST_CLICKHOUSE_URL at a running server")


_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{dir}/log/server.log</log>
        <errorlog>{dir}/log/error.log</errorlog>
        <size>10M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{tcp_port}</tcp_port>
    <http_port>{http_port}</http_port>
    <path>{dir}/data/</path>
    <tmp_path>{dir}/data/tmp/</tmp_path>
    <user_files_path>{dir}/data/user_files/</user_files_path>
    <format_schema_path>{dir}/data/format_schemas/</format_schema_path>
    <users_config>{dir}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"""

_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default></default></quotas>
</yandex>
"""


class ClickHouseServer:
    """A ClickHouse server on 127.0.0.1 with free ports and a private directory."""

    def __init__(self, base_dir: Path | None = None, *, tcp_port: int | None = None,
                 http_port: int | None = None) -> None:
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="aps-ch-"))
        self.tcp_port = tcp_port or free_port()
        self.http_port = http_port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """clickhouse:// URL of the default database (APS_CLICKHOUSE_URL form)."""
        return f"clickhouse://default:@127.0.0.1:{self.tcp_port}/default"

    def url_for(self, database: str) -> str:
        """clickhouse:// URL of another database on this server."""
        return f"clickhouse://default:@127.0.0.1:{self.tcp_port}/{database}"

    def start(self, timeout: float = 60.0) -> ClickHouseServer:
        """Write the config, start the server and wait until it answers a query."""
        try:
            command = clickhouse_server_command()
            config = self._write_config()
            with open(self.base_dir / "log" / "stdout.log", "ab") as stdout:
                self._proc = subprocess.Popen(
                    [*command, f"--config-file={config}"], cwd=self.base_dir,
                    stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)
            wait_for_port("127.0.0.1", self.tcp_port, timeout, "ClickHouse server")
            self._wait_ready(time.monotonic() + timeout)
        except InfraError as exc:
            detail = self._log_tail()
            self.stop()
            if detail:
                raise InfraError(f"{exc}\n{detail}") from exc
            raise
        except BaseException:
            self.stop()
            raise
        return self

    def _write_config(self) -> Path:
        (self.base_dir / "log").mkdir(parents=True, exist_ok=True)
        (self.base_dir / "data").mkdir(exist_ok=True)
        directory = escape(str(self.base_dir.resolve()))
        config = self.base_dir / "config.xml"
        config.write_text(_CONFIG.format(dir=directory, tcp_port=self.tcp_port,
                                         http_port=self.http_port))
        (self.base_dir / "users.xml").write_text(_USERS)
        return config

    def _wait_ready(self, deadline: float) -> None:
        from clickhouse_driver import Client

        while True:
            client = Client("127.0.0.1", port=self.tcp_port, connect_timeout=2)
            try:
                client.execute("SELECT 1")
                return
            except Exception as exc:
                if time.monotonic() > deadline or (self._proc and self._proc.poll() is not None):
                    raise InfraError(f"ClickHouse server did not become ready: {exc}") from exc
                time.sleep(0.1)
            finally:
                client.disconnect()

    def _log_tail(self, lines: int = 20) -> str:
        for name in ("error.log", "stdout.log"):
            path = self.base_dir / "log" / name
            if path.exists() and path.stat().st_size:
                return f"last lines of {path}:\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """Stop the server's process group and remove its directory (if this made it)."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=5)
            self._proc = None
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> ClickHouseServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
