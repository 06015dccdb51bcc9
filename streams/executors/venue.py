"""A simulated venue: fills at the command's trusted price plus slippage, deterministically.

A command settles `settlement_ms` of event time after it was created (the chain's profile,
infra/chains.toml): the report's `executed_at` is ``created_at + settlement_ms``. The fill
price is the price the command acted on (the instrument's mark the engine put in
``trigger["reference_price"]``, else the provenance price of the underlying), moved against
the trader by a slippage that grows with size; a fill worse than the command's slippage bound
is refused, as a limit order would be. A command that would settle after its deadline, or
that reaches an executor whose clock is already past the deadline, expires unexecuted. Same
command and clock in, same report out: a replayed command produces the identical report,
and an offline run settles it exactly as the live executor does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from streams.domain import (
    CommandAction,
    ExecutionReport,
    ExecutionStatus,
    ScalingCommand,
    Side,
)


class Executor(Protocol):
    """Carries out scaling commands on one chain."""

    chain: str

    def execute(self, command: ScalingCommand, now_ms: int) -> ExecutionReport:
        """Execute `command` at event time `now_ms` and say what happened."""
        ...

    def refuse(self, command: ScalingCommand, reason: str) -> ExecutionReport:
        """The REJECTED report of a command refused before execution (an executor bound)."""
        ...


@dataclass(frozen=True, slots=True)
class VenueParams:
    """Cost model of a simulated venue."""

    name: str
    fee_bps: float
    base_slippage_bps: float
    impact_bps_per_million: float
    settlement_ms: int = 0


def report_id_for(command_id: str) -> str:
    """Deterministic id of the report for a command."""
    return hashlib.sha256(f"report:{command_id}".encode()).hexdigest()[:32]


class SimulatedVenue:
    """Deterministic fills for one chain."""

    def __init__(self, chain: str, params: VenueParams) -> None:
        self.chain = chain
        self.params = params

    def slippage_bps(self, notional: float) -> float:
        """Price impact of a trade of `notional` USD, in basis points."""
        return self.params.base_slippage_bps + self.params.impact_bps_per_million * notional / 1e6

    def execute(self, command: ScalingCommand, now_ms: int) -> ExecutionReport:
        """Fill, refuse or expire `command`, received when the executor's clock read `now_ms`."""
        executed_at = command.created_at + self.params.settlement_ms
        if max(now_ms, executed_at) > command.deadline:
            late = max(now_ms, executed_at)
            return self._report(command, ExecutionStatus.EXPIRED, late,
                                f"deadline {command.deadline} passed at {late}")
        if command.action is CommandAction.TOP_UP:
            return self._report(command, ExecutionStatus.FILLED, executed_at,
                                top_up_amount=command.amount)
        # options trade at their own mark; the provenance price is the underlying's
        reference = command.trigger.get("reference_price", command.provenance.price)
        notional = abs(command.quantity) * reference
        slip = self.slippage_bps(notional)
        if slip > command.slippage_bps:
            return self._report(command, ExecutionStatus.REJECTED, executed_at,
                                f"slippage {slip:.1f} bps exceeds bound {command.slippage_bps:.1f}")
        sign = 1.0 if command.side is Side.BUY else -1.0
        price = reference * (1.0 + sign * slip / 1e4)
        return self._report(
            command, ExecutionStatus.FILLED, executed_at,
            filled_quantity=sign * abs(command.quantity), fill_price=price,
            fee=abs(command.quantity) * price * self.params.fee_bps / 1e4,
        )

    def refuse(self, command: ScalingCommand, reason: str) -> ExecutionReport:
        """REJECTED with `reason`, at the instant the command would have settled."""
        return self._report(command, ExecutionStatus.REJECTED,
                            command.created_at + self.params.settlement_ms, reason)

    def _report(self, command: ScalingCommand, status: ExecutionStatus, executed_at: int,
                reason: str = "", *, filled_quantity: float = 0.0, fill_price: float = 0.0,
                fee: float = 0.0, top_up_amount: float = 0.0) -> ExecutionReport:
        return ExecutionReport(
            report_id=report_id_for(command.command_id), command_id=command.command_id,
            account_id=command.account_id, chain=self.chain, status=status, reason=reason,
            action=command.action, instrument=command.instrument,
            filled_quantity=filled_quantity, fill_price=fill_price, fee=fee,
            top_up_amount=top_up_amount, executed_at=executed_at, venue=self.params.name,
        )
