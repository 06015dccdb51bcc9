"""Instruments, positions and collateral."""

from __future__ import annotations

from dataclasses import dataclass

from streams.domain.enums import InstrumentKind, OptionType, PricingModel


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable instrument: linear (spot, perp, future) or a European option."""

    instrument_id: str
    kind: InstrumentKind
    underlying: str
    chain: str
    option_type: OptionType | None = None
    strike: float | None = None
    expiry_ms: int | None = None
    model: PricingModel | None = None

    @property
    def is_option(self) -> bool:
        """True for options (non-linear payoff)."""
        return self.kind is InstrumentKind.OPTION


@dataclass(frozen=True, slots=True)
class Position:
    """A signed holding of one instrument; quantity is in units of the underlying."""

    position_id: str
    instrument: Instrument
    quantity: float
    entry_price: float
    implied_vol: float | None = None


@dataclass(frozen=True, slots=True)
class Collateral:
    """Collateral posted on one chain, and the reserve available for top-ups (USD)."""

    chain: str
    balance: float
    reserve: float
