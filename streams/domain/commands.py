"""Scaling commands (imperative) and execution reports (what happened)."""

from __future__ import annotations

from dataclasses import dataclass

from streams.domain.enums import (
    CommandAction,
    CommandReason,
    ExecutionStatus,
    PriceStatus,
    Side,
)
from streams.domain.instruments import Instrument


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a command acted on, so an auditor can see why from the command alone."""

    asset: str
    price: float
    confidence: float
    price_event_time: int
    price_status: PriceStatus
    sources: list[str]
    state_version: int
    rules_hash: str
    # digest of the engine's settings the command was decided under (streams.risk.settings)
    config_hash: str


@dataclass(frozen=True, slots=True)
class ScalingCommand:
    """An instruction to a chain executor (topic exec.<chain>.commands)."""

    command_id: str
    account_id: str
    chain: str
    reason: CommandReason
    rule: str
    trigger: dict[str, float]
    action: CommandAction
    instrument: Instrument | None
    side: Side | None
    quantity: float
    amount: float
    limit_price: float
    slippage_bps: float
    reduce_only: bool
    created_at: int
    deadline: int
    provenance: Provenance
    signature: str = ""


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """What an executor did with one command (topic execution.reports)."""

    report_id: str
    command_id: str
    account_id: str
    chain: str
    status: ExecutionStatus
    reason: str
    action: CommandAction
    instrument: Instrument | None
    filled_quantity: float
    fill_price: float
    fee: float
    top_up_amount: float
    executed_at: int
    venue: str
    signature: str = ""


@dataclass(frozen=True, slots=True)
class ActionRefused:
    """A rule that wanted to act and did not (topic risk.refusals): the engine's record of
    a decision not taken, so an auditor sees every held-back command, not only those sent.

    `reason` is the policy's code (cooldown, rate_limited, max_notional, degraded ...),
    `values` the numbers that decided it, `event_time` the event time of the input being
    applied; `partition`/`input_offset` locate that input on risk.inputs (-1 if unknown).
    """

    account_id: str
    rule: str
    reason: str
    detail: str
    values: dict[str, float]
    event_time: int
    partition: int = -1
    input_offset: int = -1
