"""APS's consumer acks an agent input only once its batch was processed: a message Faust's
stream skips (fetched in an earlier consumer generation, or taken while a rebalance has
flow control suspended) stays unacked, so no commit passes an input no stage processed."""

from __future__ import annotations

import asyncio
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


def test_no_commit_passes_a_refused_input() -> None:
    consumer = _consumer()
    first, *later = _messages(4)
    assert first.ack(consumer) is False  # skipped by the stream
    consumer.mark_processed(later)
    assert all(message.ack(consumer) for message in later)
    # Faust alone would commit 4 here: no committed offset is known, so it checks no gap
    assert consumer._new_offset(PARTITION) is None
    again = _messages(1)[0]  # delivered again from the committed offset, then processed
    consumer.mark_processed([again])
    assert again.ack(consumer)
    assert consumer._new_offset(PARTITION) == 4


def test_a_refused_input_behind_the_committed_offset_holds_nothing_back() -> None:
    consumer = _consumer()
    consumer._committed_offset[PARTITION] = 2
    stale, _, head, after = _messages(4)
    assert stale.ack(consumer) is False  # an old copy of an input committed already
    consumer.mark_processed([head, after])
    assert head.ack(consumer) and after.ack(consumer)
    assert consumer._new_offset(PARTITION) == 4


def test_a_single_refused_input_at_the_committed_offset_is_not_passed() -> None:
    consumer = _consumer()
    consumer._committed_offset[PARTITION] = 2
    _, _, head, after = _messages(4)
    assert head.ack(consumer) is False
    consumer.mark_processed([after])
    assert after.ack(consumer)
    assert consumer._new_offset(PARTITION) is None  # Faust's own check lets 4 through


def test_a_revoked_partition_forgets_its_refused_inputs() -> None:
    consumer = _consumer()
    assert _messages(1)[0].ack(consumer) is False
    asyncio.run(consumer.on_partitions_revoked({PARTITION}))
    assert PARTITION not in consumer._refused


def test_inputs_never_delivered_before_acked_ones_are_read_again_not_committed() -> None:
    async def run() -> None:
        consumer = _consumer()
        sought: list[tuple[TP, int]] = []

        async def seek(tp: TP, offset: int) -> None:
            sought.append((tp, offset))
        consumer.seek = seek
        consumer._expected[PARTITION] = 0  # where the consumer was sought to
        later = _messages(6)[3:]  # 0..2 never reached the stream
        consumer.mark_processed(later)
        assert all(message.ack(consumer) for message in later)
        # Faust alone would commit 6 here: no committed offset is known
        assert consumer._new_offset(PARTITION) is None
        await asyncio.sleep(0)
        assert sought == [(PARTITION, 0)]
        assert consumer._new_offset(PARTITION) is None
        await asyncio.sleep(0)
        assert sought == [(PARTITION, 0)]  # not sought again for the same gap at once
        again = _messages(3)  # delivered again and processed
        consumer.mark_processed(again)
        assert all(message.ack(consumer) for message in again)
        assert consumer._new_offset(PARTITION) == 6
        assert consumer._expected[PARTITION] == 6
    asyncio.run(run())


def test_copies_of_committed_inputs_do_not_move_the_commit_back() -> None:
    consumer = _consumer()
    consumer._expected[PARTITION] = 3
    copies_and_new = _messages(5)[1:]  # 1 and 2 were committed already
    consumer.mark_processed(copies_and_new)
    assert all(message.ack(consumer) for message in copies_and_new)
    assert consumer._new_offset(PARTITION) == 5


def test_offsets_absent_from_the_log_are_not_a_gap_to_read_again() -> None:
    consumer = _consumer()
    consumer._expected[PARTITION] = 0
    consumer._gap[PARTITION].addi(0, 3)  # what Faust records between two fetched records
    later = _messages(6)[3:]
    consumer.mark_processed(later)
    assert all(message.ack(consumer) for message in later)
    assert consumer._new_offset(PARTITION) == 6
    assert PARTITION not in consumer._read_again_at
