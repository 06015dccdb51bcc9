"""Enumerations shared by the domain and the wire (values equal the Avro enum symbols)."""

from __future__ import annotations

from enum import StrEnum


class InstrumentKind(StrEnum):
    """What kind of instrument a position holds."""

    SPOT = "SPOT"
    PERP = "PERP"
    FUTURE = "FUTURE"
    OPTION = "OPTION"


class OptionType(StrEnum):
    """Call or put."""

    CALL = "CALL"
    PUT = "PUT"


class PricingModel(StrEnum):
    """Black-Scholes-Merton on spot, or Black-76 on a forward/perp price."""

    BSM = "BSM"
    BLACK76 = "BLACK76"


class OracleSource(StrEnum):
    """Oracle family an observation comes from."""

    CHAINLINK = "CHAINLINK"
    PYTH = "PYTH"


class PriceStatus(StrEnum):
    """How far a consensus price can be trusted."""

    OK = "OK"
    DEGRADED = "DEGRADED"
    HALTED = "HALTED"


class CommandReason(StrEnum):
    """Why a scaling command was issued (ordered by priority class)."""

    MARGIN_TOP_UP = "MARGIN_TOP_UP"
    MARGIN_REDUCE = "MARGIN_REDUCE"
    DELTA_REBALANCE = "DELTA_REBALANCE"
    VOL_SCALE = "VOL_SCALE"
    GAMMA_BOUND = "GAMMA_BOUND"


class CommandAction(StrEnum):
    """What the executor is asked to do."""

    TRADE = "TRADE"
    TOP_UP = "TOP_UP"


class Side(StrEnum):
    """Trade direction."""

    BUY = "BUY"
    SELL = "SELL"


class ExecutionStatus(StrEnum):
    """Outcome of a command at the venue."""

    FILLED = "FILLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class LadderAction(StrEnum):
    """Step of the margin ladder."""

    TOP_UP = "TOP_UP"
    REDUCE = "REDUCE"
