"""Enumerations shared by the domain and the wire (values equal the Avro enum symbols)."""

from __future__ import annotations

from enum import Enum


class InstrumentKind(str, Enum):
    """What kind of instrument a position holds."""

    SPOT = "SPOT"
    PERP = "PERP"
    FUTURE = "FUTURE"
    OPTION = "OPTION"


class OptionType(str, Enum):
    """Call or put."""

    CALL = "CALL"
    PUT = "PUT"


class PricingModel(str, Enum):
    """Black-Scholes-Merton on spot, or Black-76 on a forward/perp price."""

    BSM = "BSM"
    BLACK76 = "BLACK76"


class OracleSource(str, Enum):
    """Oracle family an observation comes from."""

    CHAINLINK = "CHAINLINK"
    PYTH = "PYTH"


class PriceStatus(str, Enum):
    """How far a consensus price can be trusted."""

    OK = "OK"
    DEGRADED = "DEGRADED"
    HALTED = "HALTED"


class CommandReason(str, Enum):
    """Why a scaling command was issued (ordered by priority class)."""

    MARGIN_TOP_UP = "MARGIN_TOP_UP"
    MARGIN_REDUCE = "MARGIN_REDUCE"
    DELTA_REBALANCE = "DELTA_REBALANCE"
    VOL_SCALE = "VOL_SCALE"
    GAMMA_BOUND = "GAMMA_BOUND"


class CommandAction(str, Enum):
    """What the executor is asked to do."""

    TRADE = "TRADE"
    TOP_UP = "TOP_UP"


class Side(str, Enum):
    """Trade direction."""

    BUY = "BUY"
    SELL = "SELL"


class ExecutionStatus(str, Enum):
    """Outcome of a command at the venue."""

    FILLED = "FILLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class LadderAction(str, Enum):
    """Step of the margin ladder."""

    TOP_UP = "TOP_UP"
    REDUCE = "REDUCE"
