"""APS's consumer acks an agent input only once its batch was processed: a message Faust's
stream skips (fetched in an earlier consumer generation, or taken while a rebalance has
flow control suspended) stays unacked, so no commit passes an input no stage processed."""

from __future__ import annotations

from typing import Any

from faust.transport.consumer import ConsumerMessage
from faust.types import TP

from streams.app.factory import ApsApp

TOPIC = "risk.inputs"
PARTITION = TP(TOPIC, 0)


def _messages(count: int) -> list[ConsumerMessage]:
    return [ConsumerMessage(TOPIC, 0, offset, 0, 0, None, b"k", b"v", None, tp=PARTITION)
            for offset in range(count)]


def _consumer() -> Any:
    """APS's consumer of an app whose agent reads TOPIC."""
    app = ApsApp("ack-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    app.topics.acking_topics.add(TOPIC)  # as for the source topic of an agent
    return app.consumer


def test_a_message_skipped_by_the_stream_is_not_acked() -> None:
    consumer = _consumer()
    skipped = _messages(1)[0]
    consumer._unacked_messages.add(skipped)  # as the stream tracks it when it takes it
    assert skipped.ack(consumer) is False  # what Faust's stream does with a skipped event
    assert not skipped.acked
    assert list(consumer._acked[PARTITION]) == []  # nothing a commit could pass
    assert skipped not in consumer._unacked_messages  # a rebalance does not wait for it


def test_the_messages_of_a_processed_batch_are_acked() -> None:
    consumer = _consumer()
    batch = _messages(3)
    consumer.mark_processed(batch)
    assert all(message.ack(consumer) for message in batch)
    assert sorted(consumer._acked[PARTITION]) == [0, 1, 2]
    again = _messages(1)[0]  # a later copy of offset 0 (delivered again) needs its own batch
    assert again.ack(consumer) is False


def test_messages_of_topics_without_acks_pass_through() -> None:
    consumer = _consumer()
    other = ConsumerMessage("aps-risk-accounts-changelog", 0, 5, 0, 0, None, b"k", b"v", None,
                            tp=TP("aps-risk-accounts-changelog", 0))
    other.ack(consumer)
    assert other.acked
