"""Start-up checks of the pipeline processes: an operator error becomes one clear line.

`aps worker`, `aps executor`, `aps archiver`, `aps run` and `aps topics` call `preflight`
before starting anything (Faust, the embedded stack, the archive). Each check raises
ConfigError (the setting is wrong: the message names the variable and what to set) or
InfraError (the broker does not answer: the message names the address), never a raw
traceback and never a hang:

- the signing keys are not the public development keys outside the embedded stack
  (streams.config.check_keys), for the processes that sign or verify;
- the data directory (APS_DATA_DIR) can be created and written;
- the feeds file (APS_FEEDS_FILE) and the chains file (APS_CHAINS_FILE) can be read and
  parsed, for the processes that use them;
- the web port (APS_WEB_PORT) is free on 127.0.0.1;
- the broker (APS_KAFKA_BOOTSTRAP) answers a metadata request within `BROKER_TIMEOUT_S`;
- the topics that already exist have the partition counts the configuration expects
  (APS_PARTITIONS); missing topics are left to `aps topics` / Faust to create.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.config import Settings, check_keys
from streams.errors import ConfigError, InfraError
from streams.infra.broker import client_config
from streams.topics import TopicSpec, topic_specs

BROKER_TIMEOUT_S = 10.0
WEB_HOST = "127.0.0.1"
MAX_LISTED_TOPICS = 4

# librdkafka logs every failed connection attempt to stderr; the check reports the outcome
_RDKAFKA_LOG = logging.getLogger("streams.preflight.librdkafka")
_RDKAFKA_LOG.addHandler(logging.NullHandler())
_RDKAFKA_LOG.propagate = False


@dataclass(frozen=True, slots=True)
class Checks:
    """Which checks a command needs (the broker ones need a bootstrap address)."""

    keys: bool = False
    data_dir: bool = True
    feeds: bool = False
    chains: bool = False
    web_port: bool = False
    partitions: bool = True
    extra_topics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PartitionMismatch:
    """An existing topic whose partition count differs from the configuration's."""

    topic: str
    actual: int
    wanted: int


def preflight(settings: Settings, checks: Checks, bootstrap: str | None = None,
              broker_timeout: float = BROKER_TIMEOUT_S) -> None:
    """Run the checks `checks` asks for, local ones first; with `bootstrap`, also reach the
    broker and (if `checks.partitions`) compare the existing topics' partition counts.

    Raises ConfigError or InfraError with a one-line message.
    """
    if checks.keys:
        check_keys(settings)
    if checks.data_dir:
        check_data_dir(settings.data_dir)
    if checks.feeds:
        check_feeds_file(settings.feeds_file)
    if checks.chains:
        check_chains_file(settings.chains_file)
    if checks.web_port:
        check_web_port(settings.web_port)
    if bootstrap is None:
        return
    existing = broker_topics(bootstrap, broker_timeout)
    if checks.partitions:
        specs = [*topic_specs(settings),
                 *(TopicSpec(name, settings.partitions, "") for name in checks.extra_topics)]
        check_partitions(existing, specs, settings.partitions, bootstrap)


def check_data_dir(path: Path) -> None:
    """Create the data directory (and its parents) if needed; it must be writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"APS_DATA_DIR {path} cannot be created: "
                          f"{exc.strerror or exc}; set APS_DATA_DIR to a writable "
                          "directory") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"APS_DATA_DIR {path} is not writable; set APS_DATA_DIR to a "
                          "writable directory")


def check_feeds_file(path: Path) -> None:
    """The feeds file must be readable and describe a valid feed registry."""
    from streams.oracle.feeds import load_feeds

    _load("APS_FEEDS_FILE", "feeds", path, load_feeds)


def check_chains_file(path: Path) -> None:
    """The chains file must be readable and describe valid chain profiles."""
    from streams.executors.chains import load_chain_profiles

    _load("APS_CHAINS_FILE", "chains", path, load_chain_profiles)


def _load(variable: str, what: str, path: Path, loader: Callable[[Path], object]) -> None:
    """Call `loader(path)`; its errors, and unreadable files, become ConfigError naming
    `variable`."""
    try:
        path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {what} file {path}: "
                          f"{exc.strerror or exc}") from None
    try:
        loader(path)
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if variable in text else f"{variable}: {text}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{variable}: {what} file {path} is not valid: {exc}") from None


def check_web_port(port: int, host: str = WEB_HOST) -> None:
    """Nothing may listen on host:port yet (the process serves /metrics there)."""
    if not 0 < port < 65536:
        raise ConfigError(f"APS_WEB_PORT {port} is not a TCP port (1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # the server sets SO_REUSEADDR too: a closed connection's TIME_WAIT is no conflict
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"APS_WEB_PORT {port} is not free on {host} "
                              f"({exc.strerror or exc}): another process listens there; set "
                              "APS_WEB_PORT to a free port") from None


def broker_topics(bootstrap: str, timeout: float = BROKER_TIMEOUT_S) -> dict[str, int]:
    """Partition count of every topic on the broker at `bootstrap`; InfraError naming the
    address if it does not answer within `timeout` seconds."""
    admin = AdminClient(client_config(bootstrap, logger=_RDKAFKA_LOG))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc
        raise InfraError(f"cannot reach the Kafka broker at {bootstrap} (APS_KAFKA_BOOTSTRAP)"
                         f" within {timeout:.0f} s: {reason}; start it (`aps broker`) or "
                         "point APS_KAFKA_BOOTSTRAP at a running one") from None
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()
            if topic.error is None}


def partition_mismatches(existing: Mapping[str, int],
                         specs: Iterable[TopicSpec]) -> list[PartitionMismatch]:
    """The specs' topics that exist with another partition count, in spec order."""
    return [PartitionMismatch(s.name, existing[s.name], s.partitions) for s in specs
            if s.name in existing and existing[s.name] != s.partitions]


def mismatch_message(mismatches: list[PartitionMismatch], configured: int,
                     bootstrap: str) -> str:
    """One line: what the topics have, what the configuration wants, and what to set."""
    actual = {m.actual for m in mismatches}
    if len(actual) == 1 and all(m.wanted == configured for m in mismatches):
        count = actual.pop()
        names = _names([m.topic for m in mismatches])
        return (f"the topics on {bootstrap} have {count} partitions ({names}) but "
                f"APS_PARTITIONS={configured}; set APS_PARTITIONS={count} to use them "
                "(or delete the topics and create them again with `aps topics`)")
    listed = "; ".join(f"{m.topic} has {m.actual}, wants {m.wanted}"
                       for m in mismatches[:MAX_LISTED_TOPICS])
    more = len(mismatches) - MAX_LISTED_TOPICS
    tail = f"; and {more} more" if more > 0 else ""
    return (f"topic partition counts on {bootstrap} differ from the configuration "
            f"(APS_PARTITIONS={configured}, infra/topics.toml): {listed}{tail}; set "
            "APS_PARTITIONS to match or delete the topics and create them again")


def check_partitions(existing: Mapping[str, int], specs: Iterable[TopicSpec],
                     configured: int, bootstrap: str) -> None:
    """ConfigError (`mismatch_message`) if an existing topic has another partition count."""
    mismatches = partition_mismatches(existing, specs)
    if mismatches:
        raise ConfigError(mismatch_message(mismatches, configured, bootstrap))


def _names(topics: list[str]) -> str:
    shown = ", ".join(topics[:MAX_LISTED_TOPICS])
    more = len(topics) - MAX_LISTED_TOPICS
    return f"{shown} and {more} more" if more > 0 else shown
