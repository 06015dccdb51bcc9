"""Sequencer: merges account events and execution reports into risk.inputs.

risk.inputs is the one ordered log per risk partition that the risk agent consumes and an
audit replays: an account's events and reports go to the account's partition, and the
consensus agent copies every price to every partition, so each partition sees prices and
account changes in one recorded order. Each entry carries its origin coordinates so
duplicates (a re-run after a crash) are recognised downstream. A batch returns (and its
input may be committed) only once the broker has every entry and dead letter it caused
(streams.app.delivery): a crash can forward an input twice, never lose it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

import faust
from faust.types import EventT, TopicT

from streams.app.batchsend import OutputTopic
from streams.app.deadletters import DeadLetterSink
from streams.app.delivery import delivered
from streams.app.factory import batch_agent
from streams.app.latency import observe_hop, record_ms
from streams.app.metrics import MESSAGES
from streams.app.partitioning import account_partition
from streams.codecs import decode, encode_risk_input
from streams.config import Settings
from streams.domain import AccountEvent, ExecutionReport
from streams.errors import CodecError
from streams.topics import ACCOUNT_EVENTS, EXECUTION_REPORTS

STAGE = "sequencer"
BATCH = 2000

_BODY_TYPES: dict[str, type] = {
    ACCOUNT_EVENTS: AccountEvent,
    EXECUTION_REPORTS: ExecutionReport,
}


class Sequencer:
    """Turns source events into risk.inputs entries on the right partitions."""

    def __init__(self, partitions: int, risk_inputs: OutputTopic,
                 dead_letters: DeadLetterSink) -> None:
        self.partitions = partitions
        self.risk_inputs = risk_inputs
        self.dead_letters = dead_letters

    async def process(self, events: Sequence[EventT]) -> None:
        """Forward one batch in order; return once the broker has all of it."""
        sent = [self._forward(event) for event in events]
        MESSAGES.labels(STAGE).inc(len(events))
        await delivered(sent)

    def _forward(self, event: EventT) -> Awaitable[Any] | None:
        """Send the event's entry (or its dead letter); the future of the send."""
        message = event.message
        body_type = _BODY_TYPES[message.topic]
        try:
            body = decode(message.value, body_type)
        except CodecError as exc:
            return self.dead_letters.send(event, exc.reason, str(exc))
        entry = encode_risk_input(message.topic, message.partition, message.offset, message.value)
        account_id = body.account_id
        future = self.risk_inputs.send_soon(
            key=account_id.encode(), value=entry,
            partition=account_partition(account_id, self.partitions))
        if isinstance(body, ExecutionReport):
            observe_hop("report_to_risk_input", record_ms(event))
        return future


def install_sequencer(app: faust.App, settings: Settings, *, sources: TopicT,
                      risk_inputs: OutputTopic, dead_letters: OutputTopic) -> Sequencer:
    """Add the sequencer agent to `app`."""
    sequencer = Sequencer(settings.partitions, risk_inputs, DeadLetterSink(dead_letters, STAGE))

    batch_agent(app, sources, name="sequencer", stage=STAGE, size=BATCH,
                process=sequencer.process)

    return sequencer
