"""Per-hop latency of the decision loop, measured from the records' own Kafka timestamps.

Every record carries the wall-clock time its producer created it (the Kafka timestamp).
A stage that consumes record A and produces record B observes ``now - timestamp(A)`` as
the latency of the hop A -> B when it sends B. Prices written to risk.inputs also carry the
Kafka timestamp of the oracle observation they came from in the header ``aps-tick-ts``, so
the risk stage can observe the whole tick -> command path as well. A command carries the
risk.inputs coordinates of the input whose application emitted it in the header
``aps-input`` (``<partition>:<offset>``): that input, not the price its provenance names,
is what the decision waited for (a command can be decided on an earlier quote once a later
input settles fills or moves the watermark), and it is what both hops from the risk stage
are measured from, here and by `aps run` (streams.run.hops).

Hops (label `hop` of `aps_hop_seconds`):

    tick_to_price          consensus: observation consumed -> consensus price sent
    price_to_risk_input    consensus price sent -> its entries on risk.inputs sent (the
                           consensus stage writes both in one step since the sequencer
                           no longer relays prices: this hop is now only that step)
    risk_input_to_command  risk: entry on risk.inputs -> command sent
    tick_to_command        risk: the observation behind a price -> command sent
    command_to_report      executor: command -> execution report sent
    report_to_risk_input   sequencer: execution report -> its entry on risk.inputs

`aps_stage_wait_seconds{stage}` is how far behind a stage is when it starts a batch (now
minus the Kafka timestamp of the batch's oldest record), and `aps_stage_wait_max_seconds`
the worst of it since the process started: a stage that keeps up waits only for the broker.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from faust.types import EventT
from prometheus_client import Gauge, Histogram

TICK_TS_HEADER = "aps-tick-ts"
INPUT_HEADER = "aps-input"

_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

HOP_SECONDS = Histogram("aps_hop_seconds", "Latency of one hop of the decision loop, from "
                        "the consumed record's Kafka timestamp", ["hop"], buckets=_BUCKETS)
STAGE_WAIT = Histogram("aps_stage_wait_seconds", "Age of a batch's oldest record when its "
                       "stage starts processing it", ["stage"], buckets=_BUCKETS)
STAGE_WAIT_MAX = Gauge("aps_stage_wait_max_seconds", "Worst aps_stage_wait_seconds since the "
                       "process started", ["stage"])
_worst_wait: dict[str, float] = {}


def record_ms(event: EventT) -> int | None:
    """Kafka timestamp of an event's record, epoch ms (None if the broker gave none)."""
    stamp = event.message.timestamp
    return round(stamp * 1000) if stamp else None


def observe_hop(hop: str, since_ms: int | None, now_ms: float | None = None) -> None:
    """Observe `hop` as the time from `since_ms` (a Kafka timestamp) to now."""
    if since_ms is None or since_ms <= 0:
        return
    now = time.time() * 1000 if now_ms is None else now_ms
    HOP_SECONDS.labels(hop).observe(max(0.0, (now - since_ms) / 1000))


def observe_batch_start(stage: str, events: Sequence[EventT]) -> None:
    """Observe how old the oldest record of a batch is as its stage starts on it."""
    stamps = [event.message.timestamp for event in events if event.message.timestamp]
    if not stamps:
        return
    wait = max(0.0, time.time() - min(stamps))
    STAGE_WAIT.labels(stage).observe(wait)
    if wait > _worst_wait.get(stage, -1.0):
        _worst_wait[stage] = wait
        STAGE_WAIT_MAX.labels(stage).set(wait)


def tick_ts_header(tick_ms: int | None) -> list[tuple[str, bytes]]:
    """Headers carrying the Kafka timestamp of the observation behind a price."""
    return [] if tick_ms is None else [(TICK_TS_HEADER, str(tick_ms).encode())]


def header_tick_ms(event: EventT) -> int | None:
    """The ``aps-tick-ts`` header of an event's record, epoch ms (None if absent)."""
    headers = event.message.headers or ()
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == TICK_TS_HEADER and value:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def input_header(partition: int, offset: int) -> tuple[str, bytes]:
    """The ``aps-input`` header of a command emitted by risk.inputs record (partition,
    offset)."""
    return INPUT_HEADER, f"{partition}:{offset}".encode()


def parse_input_header(headers: Sequence[tuple[str, bytes | None]] | None
                       ) -> tuple[int, int] | None:
    """(partition, offset) of a command's ``aps-input`` header; None if absent or garbled."""
    for key, value in headers or ():
        if key == INPUT_HEADER and value:
            partition, _, offset = value.decode("ascii", "replace").partition(":")
            try:
                return int(partition), int(offset)
            except ValueError:
                return None
    return None
