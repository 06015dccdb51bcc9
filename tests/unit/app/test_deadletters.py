"""Dead letters stay within the producer's limits whatever the refused record was."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streams.app.deadletters import MAX_KEY_BYTES, MAX_PAYLOAD_BYTES, DeadLetterSink
from streams.codecs import decode
from streams.domain import DeadLetter


class _Topic:
    """Collects what would be sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_soon(self, **kwargs: Any) -> None:
        self.sent.append(kwargs)


def _event(value: object, key: object = b"k") -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic="oracle.ticks", partition=0,
                                                   offset=7, key=key, value=value))


def test_a_huge_record_leaves_a_bounded_dead_letter_that_says_how_big_it_was() -> None:
    topic = _Topic()
    DeadLetterSink(topic, "consensus").send(_event(b"\x01" * 1_040_000, b"k" * 5000),
                                            "malformed_avro", "x" * 10_000)
    (sent,) = topic.sent
    assert len(sent["value"]) < MAX_PAYLOAD_BYTES + 4_000
    letter = decode(sent["value"], DeadLetter)
    assert letter.payload == b"\x01" * MAX_PAYLOAD_BYTES
    assert "first 65536 of 1040000 bytes kept" in letter.detail
    assert letter.key is not None and len(letter.key) == MAX_KEY_BYTES


def test_a_null_record_is_dead_lettered_with_an_empty_payload() -> None:
    topic = _Topic()
    DeadLetterSink(topic, "risk").send(_event(None, None), "bad_framing", "null value")
    letter = decode(topic.sent[0]["value"], DeadLetter)
    assert letter.payload == b"" and letter.key is None and letter.source_offset == 7
