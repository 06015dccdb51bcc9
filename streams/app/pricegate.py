"""At most one consensus price per asset in flight between a worker's consensus and risk stages.

When the risk stage is slower than the market (a busy machine, a large book), every price
the consensus stage writes to risk.inputs would wait behind the ones before it, and the
risk stage would spend its time on prices that are already superseded: the delay grows
exactly when the market moves. The gate keeps that queue at one price per asset: the
consensus stage publishes an asset's price only once the risk stage of this worker has
applied the asset's previous published price on every partition it owns; meanwhile it
keeps only the newest price of that asset (the older one is superseded, counted in
``aps_conflated_prices_total``) and publishes it the moment the risk stage catches up.

What the gate holds back is never in risk.inputs, so a replay of risk.inputs is exact: the
log records what the risk stage saw. A worker that owns no risk.inputs partition (several
workers, the consensus on another one) gates nothing. A price held when a worker dies is
not lost: the consensus stage stores what the gate holds with its state and offers it
again on restart (streams.app.consensus_agent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streams.app.metrics import CONFLATED, GATED


@dataclass
class _InFlight:
    sequence: int
    waiting: set[int]
    held: tuple[int, Callable[[], None]] | None = None


class PriceGate:
    """Decides when a consensus price may be published (one worker, one event loop)."""

    def __init__(self) -> None:
        self._local: frozenset[int] = frozenset()
        self._in_flight: dict[str, _InFlight] = {}

    def assign(self, partitions: Iterable[int]) -> None:
        """The risk.inputs partitions this worker's risk stage owns now (the whole set)."""
        self._local = frozenset(partitions)
        for asset, flight in list(self._in_flight.items()):
            self._done_on(asset, flight.waiting - self._local)

    def offer(self, asset: str, sequence: int, publish: Callable[[], None]) -> bool:
        """Publish now (True) or hold `publish` until the asset's previous price is applied
        (False; a price held before it is dropped as superseded)."""
        flight = self._in_flight.get(asset)
        if flight is not None and flight.waiting:
            if flight.held is not None:
                CONFLATED.inc()
            flight.held = (sequence, publish)
            GATED.inc()
            return False
        self._publish(asset, sequence, publish)
        return True

    def applied(self, asset: str, sequence: int, partition: int) -> None:
        """The risk stage applied (or refused) price `sequence` of `asset` on `partition`."""
        flight = self._in_flight.get(asset)
        if flight is not None and sequence >= flight.sequence:
            self._done_on(asset, {partition})

    def held(self) -> int:
        """Prices waiting to be published."""
        return sum(1 for flight in self._in_flight.values() if flight.held is not None)

    def _done_on(self, asset: str, partitions: set[int]) -> None:
        flight = self._in_flight[asset]
        flight.waiting -= partitions
        if not flight.waiting and flight.held is not None:
            self._publish(asset, *flight.held)

    def _publish(self, asset: str, sequence: int, publish: Callable[[], None]) -> None:
        self._in_flight[asset] = _InFlight(sequence, set(self._local))
        publish()
