"""Produces a scenario's account events and oracle observations (Avro) to the broker."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import Producer

from streams.codecs import encode
from streams.domain import AccountEvent, OracleObservation
from streams.errors import InfraError
from streams.infra.broker import producer_config
from streams.topics import ACCOUNT_EVENTS, ORACLE_TICKS


class ScenarioProducer:
    """An idempotent producer for scenario inputs."""

    def __init__(self, bootstrap: str, *, idempotent: bool = False) -> None:
        self._producer = Producer(producer_config(bootstrap, idempotent=idempotent))
        self._errors: list[str] = []

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)

    def send_account_events(self, events: Sequence[AccountEvent]) -> None:
        """Send account events keyed by account id and wait until all are delivered."""
        for event in events:
            self._produce(ACCOUNT_EVENTS, event.account_id.encode(), encode(event))
        self.flush()

    def send_raw(self, topic: str, key: bytes, value: bytes) -> None:
        """Send arbitrary bytes (used to show that malformed input is dead-lettered)."""
        self._produce(topic, key, value)

    def send_observations(self, observations: Sequence[OracleObservation], speed: float,
                          on_progress: Callable[[int], None] | None = None) -> None:
        """Send observations in order, paced so event time runs `speed` times faster than
        wall time (speed <= 0 sends as fast as possible)."""
        if not observations:
            return
        first = observations[0].received_at
        started = time.monotonic()
        for index, observation in enumerate(observations):
            if speed > 0:
                due = started + (observation.received_at - first) / 1000.0 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    self._producer.poll(0)
                    time.sleep(delay)
            key = f"{observation.chain}/{observation.feed_id}".encode()
            self._produce(ORACLE_TICKS, key, encode(observation))
            if on_progress is not None and index % 50 == 0:
                on_progress(index)
        self.flush()
        if on_progress is not None:
            on_progress(len(observations))

    def close(self) -> None:
        """Release the producer (before the broker goes away, so it does not retry)."""
        self._producer.close()

    def flush(self, timeout: float = 60.0) -> None:
        """Wait for every message to be acknowledged; raise if any failed."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise InfraError(f"{remaining} message(s) not delivered within {timeout:.0f}s")
        if self._errors:
            raise InfraError(f"delivery failed: {self._errors[0]} ({len(self._errors)} errors)")
