"""Envelopes: the ordered risk log entry and the dead letter."""

from __future__ import annotations

from dataclasses import dataclass

from streams.domain.account import AccountEvent
from streams.domain.commands import ExecutionReport
from streams.domain.oracle import ConsensusPrice


@dataclass(frozen=True, slots=True)
class RiskInput:
    """One entry of a risk partition's ordered log (topic risk.inputs)."""

    origin_topic: str
    origin_partition: int
    origin_offset: int
    body: AccountEvent | ConsensusPrice | ExecutionReport


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input that could not be processed, with a machine-readable reason."""

    stage: str
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    payload: bytes
    event_time: int = -1
