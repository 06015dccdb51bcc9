"""Sending refused input to aps.deadletter with a machine-readable reason."""

from __future__ import annotations

import logging

from faust.types import EventT, TopicT

from streams.app.metrics import DEAD_LETTERS
from streams.codecs import encode
from streams.domain import DeadLetter

log = logging.getLogger(__name__)


class DeadLetterSink:
    """Dead-letters events of one stage; the worker keeps going."""

    def __init__(self, topic: TopicT, stage: str) -> None:
        self.topic = topic
        self.stage = stage

    def send(self, event: EventT, reason: str, detail: str, event_time: int = -1) -> None:
        """Queue a DeadLetter for `event` (its original bytes are kept verbatim)."""
        message = event.message
        payload = message.value if isinstance(message.value, bytes) else b""
        key = message.key if isinstance(message.key, bytes) else None
        letter = DeadLetter(
            stage=self.stage, reason=reason, detail=detail[:2000],
            source_topic=message.topic, source_partition=message.partition,
            source_offset=message.offset, key=key, payload=payload, event_time=event_time,
        )
        DEAD_LETTERS.labels(self.stage, reason).inc()
        log.warning("dead letter %s from %s[%d]@%d: %s", reason, message.topic,
                    message.partition, message.offset, detail[:200])
        self.topic.send_soon(key=message.topic.encode(), value=encode(letter))
