"""Sending refused input to aps.deadletter with a machine-readable reason.

A dead letter keeps the refused record's bytes so it can be inspected and replayed, but
never more than `MAX_PAYLOAD_BYTES` of them (and `MAX_KEY_BYTES` of its key): a record
close to the broker's size limit would otherwise make a dead letter larger than the
producer may send, and the stage would fail on every restart. A truncated payload says so
in the detail, with the original size.
"""

from __future__ import annotations

import logging

from faust.types import EventT
from faust.types.tuples import FutureMessage

from streams.app.batchsend import OutputTopic
from streams.app.metrics import DEAD_LETTERS
from streams.codecs import encode
from streams.domain import DeadLetter

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_KEY_BYTES = 1024
MAX_DETAIL_CHARS = 2000


class DeadLetterSink:
    """Dead-letters events of one stage; the worker keeps going."""

    def __init__(self, topic: OutputTopic, stage: str) -> None:
        self.topic = topic
        self.stage = stage

    def send(self, event: EventT, reason: str, detail: str,
             event_time: int = -1) -> FutureMessage:
        """Queue a DeadLetter for `event`, keeping its bytes (bounded, see module docstring);
        the returned future resolves once the broker has it."""
        message = event.message
        return self.send_raw(message.topic, message.partition, message.offset,
                             message.key if isinstance(message.key, bytes) else None,
                             message.value if isinstance(message.value, bytes) else b"",
                             reason, detail, event_time)

    def send_raw(self, topic: str, partition: int, offset: int, key: bytes | None,
                 payload: bytes, reason: str, detail: str,
                 event_time: int = -1) -> FutureMessage:
        """Queue a DeadLetter for the record at `topic`[`partition`]@`offset` (one read
        outside a Faust stream), as `send` does."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            detail = (f"{detail[:MAX_DETAIL_CHARS - 120]} [payload truncated: first "
                      f"{MAX_PAYLOAD_BYTES} of {len(payload)} bytes kept]")
            payload = payload[:MAX_PAYLOAD_BYTES]
        if key is not None and len(key) > MAX_KEY_BYTES:
            key = key[:MAX_KEY_BYTES]
        letter = DeadLetter(
            stage=self.stage, reason=reason, detail=detail[:MAX_DETAIL_CHARS],
            source_topic=topic, source_partition=partition,
            source_offset=offset, key=key, payload=payload, event_time=event_time,
        )
        DEAD_LETTERS.labels(self.stage, reason).inc()
        log.warning("dead letter %s from %s[%d]@%d: %s", reason, topic, partition, offset,
                    detail[:200])
        return self.topic.send_soon(key=topic.encode(), value=encode(letter))
