"""Typed settings. The one module that reads the environment.

Every setting has a sensible default for the embedded stack (Tansu broker + chdb), so
`make run` needs no configuration. Unknown ``APS_*`` variables are refused: a typo such
as ``APS_KAFKA_BOOTSTAP`` must not silently fall back to the embedded broker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from streams.errors import ConfigError
from streams.paths import INFRA_DIR

DEFAULT_CHAINS = ("ethereum", "arbitrum", "solana")
DEV_COMMAND_KEY = "aps-dev-only-command-key"
DEV_REPORT_KEY = "aps-dev-only-report-key"
_DEV_KEYS = {"command_key": DEV_COMMAND_KEY, "report_key": DEV_REPORT_KEY}
_KEY_VARIABLES = {"command_key": "APS_COMMAND_KEY", "report_key": "APS_REPORT_KEY"}

# variables read by tests and tooling, not by the pipeline itself
_PASSTHROUGH = {"APS_HOME", "APS_TEST_CLICKHOUSE_URL", "APS_TEST_KAFKA_BOOTSTRAP"}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker, executor, archiver or CLI needs to know about its environment."""

    kafka_bootstrap: str | None = None
    clickhouse_url: str | None = None
    data_dir: Path = Path(".aps")
    partitions: int = 4
    chains: tuple[str, ...] = DEFAULT_CHAINS
    feeds_file: Path = INFRA_DIR / "feeds.toml"
    chains_file: Path = INFRA_DIR / "chains.toml"
    # the risk engine's settings file (streams.risk.settings); None: the defaults
    engine_config: Path | None = None
    command_key: str = field(default=DEV_COMMAND_KEY, repr=False)
    report_key: str = field(default=DEV_REPORT_KEY, repr=False)
    web_port: int = 6066
    log_level: str = "warn"
    fetch_wait_ms: int = 20
    # how long the risk stage may hold applied inputs before it persists their state
    # (streams.app.risk_agent); 0 persists after every batch
    risk_persist_ms: int = 200
    # names of the fields set explicitly (from APS_* variables or overrides), so a tool can
    # tell "the default" from "asked for"
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def embedded_broker(self) -> bool:
        """True when APS starts its own Kafka-protocol broker (Tansu)."""
        return self.kafka_bootstrap is None

    @property
    def embedded_archive(self) -> bool:
        """True when the archive is embedded ClickHouse (chdb) in `data_dir`."""
        return self.clickhouse_url is None

    @property
    def chdb_path(self) -> Path:
        """Data directory of the embedded ClickHouse."""
        return self.data_dir / "chdb"

    def describe(self) -> dict[str, str]:
        """Settings for display, secrets masked."""
        out = {}
        for f in fields(self):
            if f.name == "given":
                continue
            value = getattr(self, f.name)
            if f.name in _DEV_KEYS:
                value = "<dev key>" if value == _DEV_KEYS[f.name] else "****"
            elif f.name == "clickhouse_url" and value:
                value = _mask_url(value)
            elif f.name == "engine_config" and value is None:
                value = "(defaults)"
            out[f.name] = str(value) if value is not None else "(embedded)"
        return out


_ENV = {
    "APS_KAFKA_BOOTSTRAP": "kafka_bootstrap",
    "APS_CLICKHOUSE_URL": "clickhouse_url",
    "APS_DATA_DIR": "data_dir",
    "APS_PARTITIONS": "partitions",
    "APS_CHAINS": "chains",
    "APS_FEEDS_FILE": "feeds_file",
    "APS_CHAINS_FILE": "chains_file",
    "APS_ENGINE_CONFIG": "engine_config",
    "APS_COMMAND_KEY": "command_key",
    "APS_REPORT_KEY": "report_key",
    "APS_WEB_PORT": "web_port",
    "APS_LOG_LEVEL": "log_level",
    "APS_FETCH_WAIT_MS": "fetch_wait_ms",
    "APS_RISK_PERSIST_MS": "risk_persist_ms",
}


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from ``APS_*`` environment variables, then explicit overrides."""
    env = os.environ if env is None else env
    unknown = sorted(k for k in env if k.startswith("APS_") and k not in _ENV
                     and k not in _PASSTHROUGH)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(_ENV)}")
    values: dict[str, object] = {}
    for var, name in _ENV.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        values[name] = _parse(var, name, raw)
    values.update(overrides)
    settings = Settings(**values, given=frozenset(values))  # type: ignore[arg-type]
    if settings.partitions < 1:
        raise ConfigError("APS_PARTITIONS must be >= 1")
    if settings.fetch_wait_ms < 1:
        raise ConfigError("APS_FETCH_WAIT_MS must be >= 1")
    if settings.risk_persist_ms < 0:
        raise ConfigError("APS_RISK_PERSIST_MS must be >= 0")
    return settings


def check_keys(settings: Settings) -> None:
    """Refuse the development keys outside the embedded development stack.

    With APS_KAFKA_BOOTSTRAP set, the signing keys must be secrets of the deployment: a
    development key is public (it is in this file), so a command or report signed with it
    proves nothing. The two keys must also differ, so that holding one does not let a
    process forge what the other authenticates. Raises ConfigError with one line saying
    which variable to set and how.
    """
    if settings.embedded_broker:
        return
    for name, dev_key in _DEV_KEYS.items():
        if getattr(settings, name) == dev_key:
            var = _KEY_VARIABLES[name]
            raise ConfigError(f"{var} is the development key, refused with APS_KAFKA_BOOTSTRAP "
                              f"set: export {var}=$(openssl rand -hex 32) (the same value for "
                              "every worker and executor)")
    if settings.command_key == settings.report_key:
        raise ConfigError("APS_COMMAND_KEY and APS_REPORT_KEY are the same key: give each "
                          "its own secret, e.g. export APS_REPORT_KEY=$(openssl rand -hex 32)")


def _parse(var: str, name: str, raw: str) -> object:
    if name in ("partitions", "web_port", "fetch_wait_ms", "risk_persist_ms"):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{var} must be an integer, got {raw!r}") from None
    if name in ("data_dir", "feeds_file", "chains_file", "engine_config"):
        return Path(raw)
    if name == "chains":
        chains = tuple(c.strip() for c in raw.split(",") if c.strip())
        if not chains:
            raise ConfigError(f"{var} names no chain")
        return chains
    if name == "clickhouse_url" and not raw.startswith(("clickhouse://", "clickhouses://")):
        raise ConfigError(f"{var} must be a clickhouse:// URL, got {_mask_url(raw)!r}")
    return raw


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:****@{host}"
